"""Rewrite the table in docs/environment.md from bharateo/config/environment.py's declarations:
    python tools/environment_table.py
tests/config/test_environment.py fails while the table and the declarations differ."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bharateo.config.environment import markdown_table  # noqa: E402

DOC = ROOT / "docs" / "environment.md"
BEGIN, END = "<!-- table: tools/environment_table.py -->\n", "<!-- end of table -->\n"


def with_table(text: str) -> str:
    """`text` (docs/environment.md) with the part between BEGIN and END made from the declarations.
    ValueError if either marker is missing."""
    head, _, rest = text.partition(BEGIN)
    _, found, tail = rest.partition(END)
    if not found:
        raise ValueError(f"{DOC} lacks the markers {BEGIN.strip()} ... {END.strip()}")
    return head + BEGIN + markdown_table() + END + tail


if __name__ == "__main__":
    DOC.write_text(with_table(DOC.read_text()))
    print(f"wrote {DOC.relative_to(ROOT)}")
