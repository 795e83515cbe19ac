"""Region caches under data/, and the one read / cache / deadline flow every region read uses.

- RegionCache: the flow WorldCover regions (roi.load_roi) and Sentinel-2 regions
  (sentinel2.load_s2_roi) share: read the cache file when it is there and sound; move a damaged
  or foreign one aside (<name>.corrupt) and read the region again; read from the source under a
  deadline (deadline.with_deadline) with progress; save the result atomically; and meet every
  disk fault (read-only folder, full disk, a damaged cache file, one that can't be moved aside)
  with the same plain words (disk_fault) and the same outcome: the region is kept in memory and
  `cache_error` says why it was not cached.
- WorldCover's cache files: one .npz per window and source, holding the native codes, their
  provenance, the window/tile/source they were written for and a sha256 over all of it
  (cache_binding, cache_digest), written with bharateo.files.atomic_write_bytes.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from bharateo.data.deadline import read_timeout_s, with_deadline
from bharateo.data.grid import GlobalWindow
from bharateo.data.worldcover import DataSource, redact_text
from bharateo.errors import BharatEOError, RegionError
from bharateo.files import atomic_write_bytes

log = logging.getLogger(__name__)
T = TypeVar("T")


# --- WorldCover's cache files ----------------------------------------------------------------
def data_dir() -> Path:
    """The folder of cached regions and overviews: BHARATEO_DATA_DIR, else data/ in the checkout
    (bharateo/config/environment.py)."""
    from bharateo.config import environment

    return environment.DATA_DIR.get()


def cache_path(window: GlobalWindow, source: DataSource, root: Path | None = None) -> Path:
    """data/worldcover_2021_v200_<NW tile>_r<row>_c<col>_s<size>_<source key>.npz: the cache
    file of WorldCover window `window` read from `source` (under `root`, default data_dir())."""
    root = root or data_dir()
    tile = window.tiles()[0][0]  # the tile holding the window's north-west corner
    return root / (f"worldcover_2021_v200_{tile}_r{window.row}_c{window.col}_s{window.size}"
                   f"_{source.cache_key}.npz")


def cache_binding(window: GlobalWindow, source: DataSource) -> dict:
    """What a cache file must hold: its window, the tile of its NW corner and its source's key.
    Each file's checksum covers these keys with the pixels (cache_digest), so a file copied or
    renamed onto another region's name is caught."""
    return {"global_window": [window.row, window.col, window.size], "tile": window.tiles()[0][0],
            "source": source.cache_key}


def binding_from_cache_name(path: Path) -> dict | None:
    """The binding a cache file's name promises (cache_path's pattern), None for another name; for
    readers that list data/ (the map's overviews) rather than ask for one region."""
    m = re.fullmatch(r"worldcover_2021_v200_([NS]\d{2}[EW]\d{3})_r(\d+)_c(\d+)_s(\d+)_(.+)\.npz",
                     Path(path).name)
    if not m:
        return None
    return {"global_window": [int(m.group(2)), int(m.group(3)), int(m.group(4))],
            "tile": m.group(1), "source": m.group(5)}


def cache_digest(native: np.ndarray, binding: dict) -> str:
    """sha256 over the binding's keys (sorted JSON), a NUL byte, then the array's bytes."""
    h = hashlib.sha256(json.dumps(binding, sort_keys=True).encode() + b"\0")
    h.update(native.tobytes())
    return h.hexdigest()


def write_cache(path: Path, native: np.ndarray, provenance: dict, binding: dict) -> None:
    """Write a cache file atomically: pixels, provenance, binding and their bound checksum.
    Raises OSError (read-only or full folder) with nothing half-written left behind."""
    buf = io.BytesIO()
    np.savez_compressed(buf, native=native, provenance=np.array(json.dumps(provenance)),
                        binding=np.array(json.dumps(binding, sort_keys=True)),
                        sha256=np.array(cache_digest(native, binding)))
    atomic_write_bytes(path, buf.getvalue())


def read_cache(path: Path, binding: dict) -> tuple[np.ndarray, dict]:
    """Load and verify a cached ROI written for `binding` (cache_binding) -> (native, provenance).

    Raises ValueError saying what is wrong (another region's file, wrong shape, checksum
    mismatch), or a zip/OS/key error, if the file is damaged or not this region's."""
    size = binding["global_window"][2]
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
        native = z["native"]
        provenance = json.loads(redact_text(z["provenance"]))  # older files may hold secrets
        digest = str(z["sha256"])
        stored = json.loads(str(z["binding"])) if "binding" in z.files else None
    if stored is None:  # a file from before bindings: its provenance must name this window
        if provenance.get("global_window") != binding["global_window"]:
            raise ValueError(f"it holds window {provenance.get('global_window')}, "
                             f"not this region's {binding['global_window']}")
        expected = hashlib.sha256(native.tobytes()).hexdigest()
    else:
        if stored != binding:
            raise ValueError(f"it holds another region (window {stored.get('global_window')} of "
                             f"tile {stored.get('tile')}, source {stored.get('source')}), not "
                             f"this one (window {binding['global_window']} of tile "
                             f"{binding['tile']}, source {binding['source']})")
        expected = cache_digest(native, binding)
    if native.shape != (size, size) or native.dtype != np.uint8:
        raise ValueError(f"cached array has shape {native.shape} {native.dtype}")
    if expected != digest:
        raise ValueError("checksum mismatch: the pixels or their window were changed")
    return native, provenance


# --- the read / cache / deadline flow ---------------------------------------------------------
def disk_fault(exc: OSError, folder: Path) -> str:
    """Plain words for an OSError met writing into `folder`: what is wrong, where, what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"the disk holding {folder} is full; free some space there or set "
                "BHARATEO_DATA_DIR to a folder on another disk")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"the folder {folder} is read-only (no permission to write there); make it "
                "writable or set BHARATEO_DATA_DIR to a writable folder")
    return f"writing in {folder} failed ({exc.strerror or exc}); check the folder and the disk"


class RegionCache:
    """One region read through its cache file `path`: the flow WorldCover and Sentinel-2 share.

    Use: `hit = flow.cached(read)`; on a miss `value = flow.fetch(read_source, what)`, then
    `flow.save(write)`; `flow.notes` collects what the reader is told. Disk faults are met the
    same way for every source: a cache file `read` raises for is moved aside to <name>.corrupt
    (or, where it can't be moved, said why) and the region read again; a region that can't be
    saved (read-only folder, full disk) is kept in memory with `cache_error` saying why
    (disk_fault's words); a read that then fails says a damaged copy was set aside.

    `use_cache` False: no cache file is read or written. `timeout_s`: seconds the whole source
    read may take (default deadline.read_timeout_s(), asked only on a miss). `progress(fraction,
    text)` is called from the caller's thread about 4 times a second during fetch, its text
    '<name>: <stage>, <elapsed> s (gives up after <timeout> s)'; `stage` starts as `first_stage`.
    """

    def __init__(self, path: Path, name: str, use_cache: bool = True,
                 timeout_s: float | None = None, progress=None, first_stage: str = ""):
        self.path, self.name, self.use_cache = Path(path), name, use_cache
        self.timeout_s, self.progress = timeout_s, progress
        self.notes: list[str] = []
        self.damaged = ""  # "" or how the damaged cache file was dealt with
        self.cache_error = ""
        self._stage = {"text": first_stage, "fraction": 0.0}

    def cached(self, read: Callable[[Path], T]) -> T | None:
        """read(path) -> its value when caching is on and the file is there and sound; None on a
        miss. Whatever `read` raises (a truncated zip, a bad checksum, another region's file)
        marks the file damaged: it is moved aside and a note says so (move_aside)."""
        if not (self.use_cache and self.path.exists()):
            return None
        try:
            return read(self.path)
        except Exception as exc:
            self.move_aside(exc)
            return None

    def move_aside(self, exc: BaseException) -> None:
        """Move the damaged cache file to <name>.corrupt (os.replace) and note why it was damaged
        (`exc`) and what became of it: moved, already moved by another reader, or, on a disk
        fault, not moved (disk_fault's words). Logged as a warning too."""
        aside = self.path.with_suffix(".corrupt")
        why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        try:
            os.replace(self.path, aside)
            self.damaged = moved = f"it was moved to {aside.name}"
        except FileNotFoundError:  # another process recovered it first
            self.damaged = moved = "another reader already moved it aside"
        except OSError as err:
            fault = disk_fault(err, self.path.parent)
            self.damaged = moved = f"it could not be moved aside ({fault})"
        self.notes.append(f"The cache file {self.path.name} was damaged "
                          f"({redact_text(why)[:200]}); {moved} and the region read again.")
        log.warning(self.notes[-1])

    def stage(self, text: str, fraction: float) -> None:
        """What the read is doing now and how far it is (0-1), for the progress calls."""
        self._stage.update(text=text, fraction=fraction)

    def fetch(self, read: Callable[[float], T], what: str,
              on_error: Callable[[BharatEOError], BharatEOError] | None = None) -> T:
        """read(deadline) in a worker thread, given up after the timeout (deadline.with_deadline,
        whose message names `what`); `deadline` is its time.monotonic() end, for the reader's own
        per-request limits. A BharatEOError it raises goes through `on_error` (the source's own
        advice, returning the error to raise) and, unless it is a RegionError (the region itself
        can't be used), says that the cached copy was damaged when it was."""
        timeout_s = read_timeout_s() if self.timeout_s is None else self.timeout_s
        deadline = time.monotonic() + timeout_s

        def on_wait(elapsed):
            if self.progress is not None:
                self.progress(self._stage["fraction"],
                              f"{self.name}: {self._stage['text']}, {elapsed:.0f} s "
                              f"(gives up after {timeout_s:.0f} s)")

        try:
            return with_deadline(lambda: read(deadline), timeout_s, what, on_wait)
        except BharatEOError as exc:
            error = on_error(exc) if on_error is not None else exc
            if self.damaged and not isinstance(error, RegionError):  # no way to re-read it
                aside = "" if self.damaged.startswith("it could not") else " and moved aside"
                error.args = (f"The cached copy of this region was damaged{aside}, and the "
                              f"region could not be read again: {error}",)
            if error is exc:
                raise
            raise error from None

    def save(self, write: Callable[[Path], None]) -> str:
        """write(path) when caching is on (an atomic write: OSError leaves nothing behind) -> ''
        or, when it raised OSError (read-only folder, full disk), cache_error: disk_fault's
        words, also said in a note. The region is kept in memory either way."""
        if not self.use_cache:
            return ""
        try:
            write(self.path)
        except OSError as exc:
            self.cache_error = disk_fault(exc, self.path.parent)
            self.notes.append(f"This region was read but not saved to the cache: "
                              f"{self.cache_error}. The lesson goes on with it in memory; it will "
                              "be read from the source again next time.")
            log.warning(self.notes[-1])
        return self.cache_error
