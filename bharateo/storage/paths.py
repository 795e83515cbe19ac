"""What is wrong with a folder path given from outside (a CLI flag), in words, before any work
is done: `chips build --out /etc/passwd/x` used to cut every chip and then say the output
"appeared meanwhile". Each function returns None when the path is fine, else a sentence naming
the path and the problem (it exists, its parent is a file, a folder on the way is not writable or
can't be entered)."""
from __future__ import annotations

import os
from pathlib import Path


def _nearest_existing(path: Path) -> Path:
    """`path`'s nearest ancestor that exists (lstat succeeds), `path` itself if it exists."""
    for candidate in (path, *path.parents):
        try:
            candidate.lstat()
            return candidate
        except FileNotFoundError:
            continue
        except NotADirectoryError:  # a file on the way: keep climbing to it
            continue
    return Path(path.anchor or ".")


def new_folder_problem(path: str | os.PathLike) -> str | None:
    """None if a new folder can be made at `path` (it doesn't exist, and its nearest existing
    ancestor is a folder this process may write into); else what is wrong."""
    path = Path(os.path.abspath(path))
    try:
        if path.exists() or path.is_symlink():
            return f"{path} already exists: choose a new folder"
    except OSError as exc:
        return f"{path} can't be looked at ({exc.strerror or exc})"
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        return f"{base} is a file, not a folder, so {path} can't be made inside it"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"the folder {base} is not writable by this user, so {path} can't be made in it"
    return None


def folder_problem(path: str | os.PathLike) -> str | None:
    """None if `path` is an existing folder this process may read; else what is wrong."""
    path = Path(os.path.abspath(path))
    try:
        if not path.exists():
            base = _nearest_existing(path.parent)
            if not base.is_dir():
                return f"{base} is a file, not a folder, so there is no {path}"
            return f"there is no folder {path}"
        if not path.is_dir():
            return f"{path} is a file, not a folder"
    except OSError as exc:
        return f"{path} can't be looked at ({exc.strerror or exc})"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"the folder {path} is not readable by this user"
    return None
