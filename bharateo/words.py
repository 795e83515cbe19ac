"""Counted words for the lab's text: '1 epoch', '2 epochs', 'every 2nd pixel'."""
from __future__ import annotations


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 epoch', '3 epochs', '1,024 chips' (`words`: an irregular plural, e.g. 'classes')."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def ordinal(n: int) -> str:
    """1 -> '1st', 2 -> '2nd', 3 -> '3rd', 4 -> '4th', 11-13 -> '11th'..'13th', 22 -> '22nd'."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
