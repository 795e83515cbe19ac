"""The checkpoints folder's safety rules: one change at a time, owners told apart, files kept inside.

- **One change at a time.** Every change to the runs (reserve, save, rename, delete, release,
  a result written beside a run, the clean-up of leftovers) holds `runs_locked(root)`: an
  exclusive fcntl.flock on the checkpoints folder itself (no lock file to leave behind). flock
  excludes other processes and, through separate file descriptions, other threads of this
  process; the lock is re-entrant within one thread. Reading a run takes no lock.
- **Owners told apart by more than a PID.** A reservation and each temporary file or folder
  record their owner as (PID, start time in clock ticks since boot, /proc/PID/stat field 22),
  so a PID reused by an unrelated process is not taken for the owner. Without /proc (not
  Linux) the PID alone is checked, as before.
- **Leftovers cleaned.** Temporary names carry their owner (`.<what>.<pid>-<start>.<random>.tmp`);
  clean_leftovers removes those whose owner is gone, and reservations holding nothing whose
  owner is gone. Hidden temporary names of older versions (no owner) are removed once they are
  STALE_UNOWNED_S old.
- **Files stay inside.** open_run_file opens a file of a run folder with O_NOFOLLOW relative to
  the folder's own descriptor, so a file that is a link (e.g. model.pt -> elsewhere) is refused
  and never read.

This module imports neither torch nor streamlit: the app cleans leftovers at start with it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from bharateo.config import environment

STALE_UNOWNED_S = 3600.0  # an older version's temporary name (no owner recorded) this old is left over
_OWNED_TMP_RE = re.compile(r"\.(\d{1,10})-(\d{1,20})\.[A-Za-z0-9_]+\.tmp$")
_held = threading.local()  # per thread: {folder: depth} of the locks it holds


class RunFileError(OSError):
    """A file of a run folder that is a link or not a plain file (never read)."""


@contextmanager
def runs_locked(root: Path):
    """Hold the exclusive lock of checkpoints folder `root` (created if missing) for the block.

    Blocks until no other process or thread holds it. Re-entrant within one thread. OSError when
    the folder can't be created or opened (the caller words it)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = str(root.resolve())
    depth = getattr(_held, "depth", None)
    if depth is None:
        depth = _held.depth = {}
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        depth[key] = 1
        try:
            yield
        finally:
            depth.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --- owners -----------------------------------------------------------------------------------
def process_start(pid: int) -> int | None:
    """Start time of process `pid` in clock ticks since boot (/proc/PID/stat field 22), or None
    when it can't be read (no such process, or no /proc)."""
    try:
        text = Path(f"/proc/{int(pid)}/stat").read_text()
        return int(text[text.rindex(")") + 2:].split()[19])  # fields after "(comm)" start at 3
    except (OSError, ValueError, IndexError):
        return None


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def owner() -> dict:
    """This process as an owner: {"pid", "started"} (started: None without /proc)."""
    return {"pid": os.getpid(), "started": process_start(os.getpid())}


def owner_tag() -> str:
    """`<pid>-<start ticks>` of this process, for temporary names."""
    me = owner()
    return f"{me['pid']}-{me['started'] or 0}"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def owner_alive(pid, started=None, since: float | None = None) -> bool:
    """Whether the owner that recorded (`pid`, `started` ticks) is still running. A live process
    with that PID but another start time is a reused PID: not the owner. Without a recorded
    start time (an older marker), a process that started after `since` (epoch seconds, the
    record's own time) can't be its owner either."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not _pid_exists(pid):
        return False
    now = process_start(pid)
    if now is None:  # no /proc: the PID is all we can check
        return True
    if isinstance(started, int) and not isinstance(started, bool) and started > 0:
        return now == started
    boot = _boot_time()
    if since is not None and boot is not None:
        ticks = os.sysconf("SC_CLK_TCK")
        return boot + now / ticks <= since + 2.0  # 2 s: btime is rounded to seconds
    return True


def make_temp_dir(folder: Path, what: str) -> Path:
    """A new hidden folder in `folder` named with its owner (this process), for clean_leftovers."""
    return Path(tempfile.mkdtemp(dir=folder, prefix=f".{what}.{owner_tag()}.", suffix=".tmp"))


def _left_over(path: Path, now: float) -> bool:
    """A hidden temporary name whose owner is gone (or an older version's, long unchanged)."""
    name = path.name
    if not name.startswith("."):
        return False
    if m := _OWNED_TMP_RE.search(name):
        return not owner_alive(int(m.group(1)), int(m.group(2)) or None)
    if name.endswith((".tmp", ".old")):
        try:
            return now - path.lstat().st_mtime > STALE_UNOWNED_S
        except OSError:
            return False
    return False


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def clean_leftovers(root: Path, marker: str, marker_reader) -> list[str]:
    """Remove what dead processes left in checkpoints folder `root`: hidden temporary folders and
    files (a save or delete killed part-way), the same inside run folders, and reservations (a
    folder holding only `marker`) whose training is gone. Live owners' files are never touched.
    `marker_reader(folder)` -> the marker dict or None. Returns the names removed. Never raises
    for what it finds; OSError only if the folder can't be locked."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed, now = [], time.time()
    with runs_locked(root):
        for path in sorted(root.iterdir()):
            try:
                if _left_over(path, now):
                    _remove(path)
                    removed.append(path.name)
                    continue
                if path.name.startswith(".") or path.is_symlink() or not path.is_dir():
                    continue
                for inner in path.iterdir():  # a result or marker write killed part-way
                    if _left_over(inner, now):
                        _remove(inner)
                        removed.append(f"{path.name}/{inner.name}")
                found = marker_reader(path)
                if (found is not None and not (path / "config.json").exists()
                        and not reservation_alive(found)
                        and all(p.name == marker for p in path.iterdir())):
                    (path / marker).unlink()
                    path.rmdir()
                    removed.append(path.name)
            except OSError:
                continue
    return removed


def reservation_alive(marker: dict) -> bool:
    """Whether the training that wrote reservation `marker` ({"pid", "started", "reserved_at"})
    is still running."""
    import datetime as dt

    since = None
    try:
        since = dt.datetime.fromisoformat(str(marker.get("reserved_at"))).timestamp()
    except (TypeError, ValueError):
        pass
    return owner_alive(marker.get("pid"), marker.get("started"), since)


# --- files inside a run folder ----------------------------------------------------------------
def open_run_file(folder: Path, filename: str):
    """Binary file object of `folder/filename`, refusing a folder or file that is a link, a file
    that is not plain, or a name with a path in it (RunFileError, an OSError, saying which).
    FileNotFoundError when it is missing."""
    if not filename or "/" in filename or filename in (".", ".."):
        raise RunFileError(errno.EINVAL, f"{filename!r} is not a file name")
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            fd = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RunFileError(errno.ELOOP, f"{filename} is a link, not a file of the run "
                                   "folder (runs never hold links)") from None
            raise
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunFileError(errno.EINVAL, f"{filename} is not a plain file")
    return os.fdopen(fd, "rb")


def read_run_bytes(folder: Path, filename: str) -> bytes:
    """The bytes of `folder/filename` through open_run_file (the same errors)."""
    with open_run_file(folder, filename) as f:
        return f.read()


def linked_files(folder: Path, filenames) -> list[str]:
    """Those of `filenames` in `folder` that are links or not plain files (present ones only)."""
    bad = []
    for name in filenames:
        try:
            mode = (Path(folder) / name).lstat().st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            bad.append(name)
    return bad


# --- the checkpoints folder (torch-free, so a server cleans it without importing torch) ---------
RESERVED = ".reserved"  # marker of a name reserved by a training that has not saved yet


def checkpoint_root() -> Path:
    """BHARATEO_CHECKPOINT_DIR, default checkpoints/ (bharateo/config/environment.py)."""
    return environment.CHECKPOINT_DIR.get()


def read_marker(path: Path) -> dict | None:
    """The reservation marker of run folder `path` (schema.Reservation as a dict); None when
    there is none, {} when it is damaged."""
    from bharateo.errors import RunDamagedError
    from bharateo.config.schema import Reservation
    from bharateo.untrusted import read_json, typed

    try:
        marker = read_json(path / RESERVED, RESERVED, 64 * 2**10, error=RunDamagedError)
        return typed(Reservation, marker, RESERVED, RunDamagedError).model_dump()
    except FileNotFoundError:
        return None
    except RunDamagedError:
        return {}


def clean_checkpoints(root: Path | None = None) -> list[str]:
    """Remove what killed processes left in the checkpoints folder (see runfolder.clean_leftovers):
    temporary save and delete folders, half-written result files, and reservations holding nothing
    whose training is gone -> the names removed. Call once when a server or command starts."""
    try:
        return clean_leftovers(root or checkpoint_root(), RESERVED, read_marker)
    except OSError:
        return []
