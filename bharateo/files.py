"""Writing files so that nothing saved is ever half-written: the lab's one atomic writer.

- atomic_write_bytes: a temp file in the target's own folder, written and fsync'ed, then
  os.replace'd over the target (a rename within one file system is atomic: a reader sees the
  old file or the new one, never a part). The temp file is removed if anything fails.
- write_new_file: a file that must not exist yet (O_EXCL), written and fsync'ed; for files
  assembled inside a hidden temporary folder that is itself renamed into place.

Neither follows a link at the target: mkstemp and open(..., "xb") create with O_EXCL (a link
there is refused), and os.replace replaces a link itself, never what it points to. Reading a
run folder's files safely (O_NOFOLLOW relative to the folder's descriptor) is
bharateo/storage/runfolder.py's open_run_file.

A base module: it imports nothing from the lab (bharateo.data and bharateo.storage use it).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, payload: bytes, *, make_folder: bool = True,
                       owner: str = "") -> None:
    """Replace `path` by `payload` atomically: temp file in the same folder, fsync, os.replace.

    `make_folder`: create the folder first (False: FileNotFoundError when it is gone, e.g. a run
    folder deleted meanwhile). `owner`: a tag put in the temp file's hidden name,
    `.<name>.<owner>.<random>.tmp` (runfolder.owner_tag, so clean_leftovers can tell whose it
    is); without one `.<name>.<random>.tmp`. Raises OSError (read-only folder, full disk) with
    the old file, if any, unchanged and no temp file left behind."""
    path = Path(path)
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}." + (f"{owner}." if owner else "")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_new_file(path: Path, payload: bytes) -> None:
    """Write `payload` to `path`, which must not exist (FileExistsError otherwise; a link there
    is refused too), and fsync it. OSError on a full or read-only disk."""
    with open(path, "xb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
