"""The one way to read untrusted JSON: a run's files, stored results, chip-store manifests,
Sentinel-2 item files and STAC catalogue answers.

Every read is bounded before memory is spent: at most `max_bytes` are read (a file's size, or a
stream cut off one byte past the limit), the bracket depth is scanned before json.loads can
recurse (a file of nested arrays made it raise RecursionError), and the parsed value is checked
against a typed pydantic model whose problems are listed one plain sentence each. Every fault
raises the caller's BharatEOError subclass (DataFileError by default), never a traceback.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError

from bharateo.errors import BharatEOError, DataFileError

MAX_DEPTH = 32  # brackets: the deepest file the lab writes (an embedding map) nests 3 deep
MAX_PROBLEMS = 3  # validation problems a message lists ("... and N more")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)

T = TypeVar("T")


def json_shape(data: bytes) -> tuple[int, int]:
    """(deepest nesting of [ and {, number of values) of JSON text `data`, brackets and commas
    inside strings not counted, found without recursion in O(len(data)) time (strings cut out,
    then a running sum). Values: commas plus opening brackets plus one, an upper bound on the
    objects json.loads would build, so memory can be bounded before it is spent."""
    bare = np.frombuffer(_STRING.sub(b"", data), np.uint8)
    opens = (bare == ord("[")) | (bare == ord("{"))
    step = opens.astype(np.int32) - ((bare == ord("]")) | (bare == ord("}"))).astype(np.int32)
    depth = int(step.cumsum().max()) if step.size else 0
    return max(depth, 0), int(opens.sum() + (bare == ord(",")).sum()) + 1


def json_depth(data: bytes) -> int:
    """The deepest nesting of [ and { in JSON text `data` (json_shape)."""
    return json_shape(data)[0]


def parse_json(data: bytes | str, what: str, max_bytes: int, max_depth: int = MAX_DEPTH,
               error: type[Exception] = DataFileError, max_values: int | None = None) -> Any:
    """JSON text -> Python value, refused with `error` ("<what> is not valid JSON", "... is
    larger than N MB", "... nests deeper than D levels", "... holds more than V values") before
    any parser recursion or allocation. `max_values` (default max_bytes // 4: every value of a
    file the lab writes takes 4 bytes or more with its separator) bounds the objects built."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise error(f"{what} is larger than {_size_words(max_bytes)}")
    depth, count = json_shape(data)
    if depth > max_depth:
        raise error(f"{what} nests deeper than {max_depth} levels, so it is not a file this lab "
                    "wrote")
    limit = max_bytes // 4 if max_values is None else max_values
    if count > limit:
        raise error(f"{what} holds more than {limit:,} values, so it is not a file this lab wrote")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise error(f"{what} is not valid JSON") from None


def read_bytes(path: Path, what: str, max_bytes: int,
               error: type[BharatEOError] = DataFileError) -> bytes:
    """At most `max_bytes` of file `path` (never a link: O_NOFOLLOW, never a device or folder).
    FileNotFoundError passes through (callers say "missing" their own way); other faults raise
    `error` naming only the file and the kind of fault."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        why = "is a link" if os.path.islink(path) else f"can't be read ({exc.__class__.__name__})"
        raise error(f"{what} {why}") from None
    with os.fdopen(fd, "rb") as f:
        import stat

        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} is not a plain file")
        if info.st_size > max_bytes:
            raise error(f"{what} is larger than {_size_words(max_bytes)}")
        try:
            data = f.read(max_bytes + 1)
        except OSError as exc:
            raise error(f"{what} can't be read ({exc.__class__.__name__})") from None
    if len(data) > max_bytes:  # it grew meanwhile
        raise error(f"{what} is larger than {_size_words(max_bytes)}")
    return data


def read_json(path: Path, what: str, max_bytes: int, max_depth: int = MAX_DEPTH,
              error: type[BharatEOError] = DataFileError, max_values: int | None = None) -> Any:
    """read_bytes then parse_json. FileNotFoundError passes through."""
    return parse_json(read_bytes(path, what, max_bytes, error), what, max_bytes, max_depth, error,
                      max_values)


def typed(kind: type[T] | Any, value: Any, what: str,
          error: type[BharatEOError] = DataFileError) -> T:
    """`value` checked against `kind` (a pydantic model or any type pydantic validates) -> the
    typed value. `error` listing the first MAX_PROBLEMS problems, one plain sentence each:
    "history.json: [3].loss should be a valid number (got 'x')"."""
    try:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind.model_validate(value)
        return _adapter(kind).validate_python(value)
    except ValidationError as exc:
        text = problems_text(exc)
        raise error(text if not what else f"{what} {text}" if text.startswith("holds") else
                    f"{what}: {text}") from None
    except RecursionError:  # never for a depth-checked value; a safety net for others
        raise error(f"{what} nests too deeply") from None


_KIND_WORDS = {"dict_type": "an object", "model_type": "an object", "model_attributes_type":
               "an object", "list_type": "a list", "int_type": "a whole number", "float_type":
               "a number", "string_type": "text", "bool_type": "true or false"}


def problems_text(exc: ValidationError, what: str = "") -> str:
    """A ValidationError in words, one problem each (first MAX_PROBLEMS, '; '-separated):
    "'train' is missing", "holds a JSON list, not an object", "'[3].loss' = 'x' is not a
    number", or pydantic's own sentence for a rule (a range, a shape)."""
    out = []
    for e in exc.errors(include_url=False)[:MAX_PROBLEMS]:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        got = e.get("input")
        if e["type"] == "missing":
            out.append(f"'{where}' is missing")
        elif e["type"] in _KIND_WORDS:
            kind = _KIND_WORDS[e["type"]]
            out.append(f"'{where}' = {_short(got)} is not {kind}" if where and
                       not isinstance(got, (dict, list)) else
                       f"{f'{where!r} ' if where else ''}holds a JSON {type(got).__name__}, not {kind}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            msg = msg[0].lower() + msg[1:]
            out.append(f"{f'{where!r}: ' if where else ''}{msg}" + (
                "" if isinstance(got, (dict, list)) or not where else f" (got {_short(got)})"))
    more = exc.error_count() - len(out)
    return "; ".join(out) + (f"; and {more} more" if more > 0 else "")


_ADAPTERS: dict = {}


def _adapter(kind) -> TypeAdapter:
    key = repr(kind)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(kind)
    return _ADAPTERS[key]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _size_words(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n / 2**10:g} KB"


def read_capped_stream(chunks, limit: int, what: str,
                       error: type[BharatEOError] = DataFileError) -> bytes:
    """Join an iterator of byte chunks (e.g. requests' iter_content), refusing with `error` as
    soon as more than `limit` bytes arrived: memory stays within limit + one chunk."""
    out, n = [], 0
    for chunk in chunks:
        n += len(chunk)
        if n > limit:
            raise error(f"{what} is larger than {_size_words(limit)}")
        out.append(chunk)
    return b"".join(out)
