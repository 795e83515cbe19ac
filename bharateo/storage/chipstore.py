"""Chip store: chips cut once, written as NumPy .npy shards with a manifest, streamed to training.

`python -m bharateo chips build --out DIR` cuts chips exactly as the app does
(chips.iter_chips, what build_chip_sets gathers: the notebook's seeded draws, labels and the
no-data rule, in the same order) and writes each shard as it fills (memory: one shard, not the
chip set):

  DIR/manifest.json               written last: format, chip counts, bands, chip settings, the
                                  regions with their provenance, every file's size and sha256
  DIR/train-00000.labels.npy      K x S x S uint8  collapsed class ids (NODATA_ID for no-data)
  DIR/train-00000.patches.npy     K x G x G int8   patch labels (IGNORE_INDEX -100 fits in int8)
  DIR/train-00000.origins.npy     K x 3 int64      (roi index, row, col) of each chip's corner
  DIR/train-00000.pixels.npy      K x C x S x S float32 reflectance (Sentinel-2 stores only)
  DIR/heldout-00000.*.npy         the held-out chips, when a region is held out

A Sentinel-2 store (`--source s2-4band|s2-10band`) also holds each chip's reflectance, cut at the
chip's origin from its region's C x H x W values exactly as chips.sample_chips cuts them, as
float32: the in-memory ChipSet.pixels' type, so a store's chips, tokens and training are
bit-identical to the in-memory ones (float16 would halve the disk but round reflectance by up to
5e-4, and a run from a store would no longer be the in-memory run). Its manifest records the
bands, each region's scene (id, date, cloud, MGRS tile, CRS, reflectance rule) and the per-band
normalisation (reflectance.band_stats over the training chips' valid pixels, computed at build
time by streaming the written shards back, 64 chips at a time, as build_chip_sets batches it).

into a temporary folder renamed onto DIR at the end, so a store is complete or absent.
Tokens are not stored: `ChipStore.tokens` renders them per batch with chips.labels_to_tokens,
the function ChipSet.tokens uses, so they are bit-identical to the in-memory chips' tokens (and
a chip costs 16 KB on disk instead of 196 KB of float tokens).

Why .npy shards and not WebDataset, LitData or zarr: training needs random access by chip index
(every epoch is a fresh seeded permutation of all chips, and each DDP rank takes its slice of
every global batch, so a run on N ranks sees the batches one process sees); fixed-size rows in a
.npy file give that with one read per chip, np.load opens any shard without this project, and
numpy is already a dependency. Tar-based formats stream sequentially with a shuffle buffer,
which can't reproduce the one-process order; zarr would add a dependency for three arrays.
Rows are read with os.pread, not through np.load(mmap_mode="r"): pages of a memory map count
toward the process's resident memory as they are touched, so a mapped 100k-chip store grows
RSS by up to 1.6 GB over an epoch, while a read keeps only the batch in memory.
"""
from __future__ import annotations

import datetime as dt
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bharateo.data.chips import (ChipConfig, ChipSet, SamplingPlan, SamplingTally, SplitPlan,
                            iter_chips, labels_to_tokens, patch_mode_labels, plan_chips)
from bharateo.storage.paths import new_folder_problem
from bharateo.errors import ChipError, ChipStoreError, ConfigError
from bharateo.data.patches import patchify
from bharateo.files import write_new_file
from bharateo.data.reflectance import BandStats, band_stats, normalise
from bharateo.config.settings import check_settings
from bharateo.data.sources import PIXEL_SOURCES
from bharateo.untrusted import read_json, typed
from bharateo.data.worldcover import NODATA_ID, PALETTE_BANDS

FORMAT, VERSION = "bharateo-chip-store", 1
MANIFEST = "manifest.json"
SPLITS = ("train", "heldout")
KINDS = ("labels", "patches", "origins")  # one .npy file of each per shard
PIXEL_KINDS = KINDS + ("pixels",)  # a store of a source with its own band values (Sentinel-2)
STATS_BATCH = 64  # chips per batch of the band statistics' sums: build_chip_sets' batches
DEFAULT_SHARD_SIZE = 1024  # 16 MB of 128 px chips a shard
MAX_SHARD_SIZE = 65_536
_SHARD_RE = re.compile(r"^(train|heldout)-\d{5}$")


def _shard_file(shard: str, kind: str) -> str:
    return f"{shard}.{kind}.npy"


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


_write_new = write_new_file  # each shard and the manifest: a new file in the store's temp folder


def _kinds(bands) -> tuple[str, ...]:
    """The shard files of a store of `bands`: palette RGB is rendered from labels, any other
    source's values are stored."""
    return KINDS if tuple(bands) == PALETTE_BANDS else PIXEL_KINDS


def _cut_pixels(roi_pixels, roi_index: np.ndarray, origins: np.ndarray, size: int) -> np.ndarray:
    """K x C x S x S float32 values of chips at (roi, row, col), as chips.sample_chips cuts them."""
    out = np.empty((len(origins), roi_pixels[0].shape[0], size, size), np.float32)
    for j, (k, (r, c)) in enumerate(zip(roi_index, origins)):
        out[j] = roi_pixels[k][:, r:r + size, c:c + size]
    return out


def _write_shard(folder: Path, name: str, labels: np.ndarray, roi_index: np.ndarray,
                 origins: np.ndarray, patch_size: int, roi_pixels=None) -> dict:
    """Write one shard's .npy files (patch labels computed here, chips.patch_mode_labels; the
    chips' values cut from `roi_pixels`, each region's C x H x W, when given) -> its manifest
    entry (chip count, each file's size and sha256)."""
    arrays = {"labels": labels.astype(np.uint8, copy=False),
              "patches": patch_mode_labels(labels, patch_size).astype(np.int8),
              "origins": np.column_stack([roi_index, origins]).astype(np.int64)}
    if roi_pixels is not None:
        arrays["pixels"] = _cut_pixels(roi_pixels, roi_index, origins, labels.shape[1])
    files = {}
    for kind, array in arrays.items():
        data = _npy_bytes(array)
        _write_new(folder / _shard_file(name, kind), data)
        files[kind] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return {"name": name, "chips": len(labels), "files": files}


def _stream_split(folder: Path, plan: SamplingPlan, split: SplitPlan, config: ChipConfig,
                  shard_size: int, progress=None) -> dict:
    """Cut one split's chips (chips.iter_chips, the app's draws in the app's order) and write
    each shard as soon as it fills -> the split's manifest entry. Holds at most one shard and
    one sampling batch of chips."""
    tally, shards, pending, held = SamplingTally(), [], [], 0  # pending: unwritten pieces

    def write(final: bool = False) -> None:
        nonlocal pending
        labels, roi_index, origins = (np.concatenate(part) for part in zip(*pending))
        start = 0
        while len(labels) - start >= shard_size or (final and start < len(labels)):
            rows = slice(start, start + shard_size)
            shards.append(_write_shard(folder, f"{split.name}-{len(shards):05d}", labels[rows],
                                       roi_index[rows], origins[rows], config.patch_size,
                                       plan.roi_pixels))
            start += shard_size
        # copies: a view of the rest would keep the whole concatenated batch alive
        pending = [(labels[start:].copy(), roi_index[start:].copy(), origins[start:].copy())]

    per_roi = np.zeros(len(plan.names), np.int64)
    report = progress and (lambda done, _n: progress(split.offset + done, plan.total))
    for roi, chips, origins in iter_chips(plan.natives, split.regions, split.n, config.chip_size,
                                          config.min_classes, split.seed, plan.names, report, tally):
        pending.append((chips, np.full(len(chips), roi, np.int64), origins))
        held += len(chips)
        per_roi[roi] += len(chips)
        if held >= shard_size:
            write()
            held = len(pending[0][0])
    if held:
        write(final=True)
    return {"chips": split.n, "rejected_nodata": tally.rejected_nodata,
            "chips_per_roi": dict(zip(plan.names, per_roi.tolist())), "shards": shards}


S2_PROVENANCE = ("scene_id", "scene_date", "cloud_cover", "mgrs_tile", "bands", "crs",
                 "reflectance_rule", "pixel_m", "dates", "max_cloud")


def _region_entry(roi) -> dict:
    """A region's spec and provenance for the manifest (what the run's config.json records); a
    Sentinel-2 region adds its scene (experiment.provenance_summary's keys, and the query)."""
    p = roi.provenance
    entry = {"spec": asdict(roi.spec), "data_label": roi.data_label, "synthetic": roi.synthetic,
             "source": p.get("source"), "bounds": p.get("bounds"),
             "tiles": [t["tile"] for t in p.get("tiles", [])],
             "nodata_fraction": p.get("nodata_fraction")}
    if p.get("kind") == "sentinel2":
        entry.update({"name": roi.spec.name, **{k: p.get(k) for k in S2_PROVENANCE}})
    return entry


def _train_band_stats(folder: Path, manifest: dict) -> dict:
    """reflectance.band_stats over the written training chips' valid pixels, read back
    STATS_BATCH chips at a time (memory: one batch; the same batches, hence the same float64
    sums bit for bit, as build_chip_sets) -> BandStats.to_dict()."""
    chips = ChipStore(folder, "train", manifest)
    batches = ((chips.pixel_values(idx), chips.labels(idx) != NODATA_ID)
               for idx in (slice(i, i + STATS_BATCH) for i in range(0, len(chips), STATS_BATCH)))
    return band_stats(batches, chips.bands).to_dict()


def build_store(out: Path, rois, config: ChipConfig, shard_size: int = DEFAULT_SHARD_SIZE,
                progress=None) -> Path:
    """Cut chips from `rois` with `config` and write them as a chip store at `out` -> `out`.

    The chips, labels and order are build_chip_sets' (both cut through chips.iter_chips: the
    notebook's seeded draws, labels and no-data rule), but each shard is written as soon as it
    fills, so memory holds one shard and one sampling batch (chips.CHUNK_BYTES), not the chip
    set: about 50 MB at 128 px and 1,024-chip shards, whatever the chip count (docs/scale.md).
    The manifest is written last, into a temporary folder renamed onto `out`: a build that stops
    part-way (an error, Ctrl-C, a killed process) leaves no `out` and nothing that opens as a
    store. Regions of a Sentinel-2 source (sentinel2.load_s2_roi) add each chip's reflectance
    (`pixels` shards, float32) and the manifest's `band_stats`, so memory adds one shard of
    reflectance (4 MB a 1,024-chip shard per band at 128 px) and the regions' values.
    ChipStoreError when `out` exists, the shard size is out of range, the disk is full or
    read-only, or writing fails part-way; ChipError from sampling (also for regions not read
    from `config.source`); ConfigError when no training pixel is valid. `progress(done, total)`
    counts chips over both splits.
    """
    out = Path(out)
    if not 1 <= shard_size <= MAX_SHARD_SIZE:
        raise ChipStoreError(f"Shard size must be 1-{MAX_SHARD_SIZE:,} chips (got {shard_size}); "
                             f"{DEFAULT_SHARD_SIZE} is a good default.")
    if problem := new_folder_problem(out):  # before any chip is cut
        raise ChipStoreError(f"The chip store can't be written at {out}: {problem}. Choose "
                             "another --out folder.")
    plan = plan_chips(rois, config)
    if config.chip_size % config.patch_size:
        raise ChipError(f"Chip size {config.chip_size} is not a multiple of the patch size "
                        f"{config.patch_size}.")
    tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        splits = {split.name: _stream_split(tmp, plan, split, config, shard_size, progress)
                  for split in plan.splits}
        manifest = {"format": FORMAT, "version": VERSION,
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "chip_size": config.chip_size, "patch_size": config.patch_size,
                    "bands": list(plan.bands),
                    "chip_config": config.to_dict(), "roi_names": list(plan.names),
                    "regions": [_region_entry(r) for r in rois], "splits": splits}
        if plan.roi_pixels is not None:  # held-out chips are normalised with these too
            manifest["band_stats"] = _train_band_stats(tmp, manifest)
        _write_new(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())  # last: marks it whole
        os.rename(tmp, out)  # fails if `out` appeared meanwhile: never merged into another store
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        what = ("the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else
                "the folder is read-only" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
                else new_folder_problem(out) or f"{out} appeared meanwhile"
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR)
                else exc.strerror or str(exc))
        raise ChipStoreError(f"The chip store {out} could not be written: {what}. Nothing was "
                             "kept; free some space or choose another --out, then try again.") from exc
    except BaseException:  # our own errors (they say what to do), Ctrl-C, and any bug: clean
        shutil.rmtree(tmp, ignore_errors=True)  # up and let it through with its traceback (a
        raise  # bug reworded as "run it again" would fail the same way and hide where)
    return out


@dataclass(frozen=True)
class _Shard:
    name: str
    start: int  # global index of its first chip
    chips: int
    offsets: dict  # kind -> byte offset of the array data in its file
    files: dict  # kind -> {"bytes", "sha256"} from the manifest


def _identity(info: os.stat_result) -> tuple:
    """What tells a file's contents changed without reading it: device, inode, size, mtime (ns)."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _expected(kind: str, chips: int, chip_size: int, grid: int, channels: int = 3):
    return {"labels": ((chips, chip_size, chip_size), np.dtype(np.uint8)),
            "patches": ((chips, grid, grid), np.dtype(np.int8)),
            "origins": ((chips, 3), np.dtype(np.int64)),
            "pixels": ((chips, channels, chip_size, chip_size), np.dtype(np.float32))}[kind]


class ChipStore:
    """One split ("train" or "heldout") of a chip store, read chip by chip: the interface of
    ChipSet that training and evaluation use (len, tokens, patch_targets, chip_size, patch_size,
    grid_size, channels, bands, band_stats, roi_names, chips_per_roi, rejected_nodata), with
    memory that does not grow with the chip count (`streamed`: train() renders tokens per batch).
    A Sentinel-2 store's tokens are its reflectance normalised with the manifest's band_stats
    (the training chips', for both splits), as ChipSet.tokens normalises in-memory chips.

    Opening checks the manifest and that every shard file is present, of the size recorded and
    holds the array shape and type expected; each file's sha256 is checked the first time this
    process reads from it (verify() checks them all now). Any fault raises ChipStoreError naming
    the store and the file, and saying to rebuild the store.

    What is read is what was opened: each shard file's identity (device, inode, size,
    modification time in ns) is recorded when the store is opened and compared before and after
    every read, so a shard replaced or rewritten during a training is named at its next read
    (one whose bytes still match the manifest's sha256, e.g. restored by a copy, is accepted).
    check_unchanged() re-hashes every file and the manifest before a run is saved as trained on
    this store.
    """

    streamed = True  # never the whole set in memory: pixel_values(index) reads a batch

    def __init__(self, folder, split: str = "train", manifest: dict | None = None):
        """`manifest`: build_store's own, before it is written (otherwise read_manifest's)."""
        self.folder = Path(folder)
        self.split = split
        self._identity: dict[str, tuple] = {}  # file -> (dev, inode, size, mtime_ns) when opened
        self._manifest_sha = None
        if manifest is None:
            manifest = read_manifest(self.folder)
            self._manifest_sha = self._manifest_digest()
        self.manifest = manifest
        m = self.manifest
        if split not in m["splits"]:
            raise ChipStoreError(f"The chip store {self.folder} has no '{split}' chips (it was built "
                                 "without a held-out region).")
        self.chip_size, self.patch_size = m["chip_size"], m["patch_size"]
        self.bands = tuple(m["bands"])
        self.channels = len(self.bands)
        self.kinds = _kinds(self.bands)
        stats = m.get("band_stats")
        self.band_stats = None if stats is None else BandStats.from_dict(stats)
        self.roi_names = list(m["roi_names"])
        entry = m["splits"][split]
        self.rejected_nodata = entry["rejected_nodata"]
        self._per_roi = entry["chips_per_roi"]
        self._shards, start = [], 0
        for shard in entry["shards"]:
            offsets = {kind: self._check_file(shard, kind) for kind in self.kinds}
            self._shards.append(_Shard(shard["name"], start, shard["chips"], offsets, shard["files"]))
            start += shard["chips"]
        self._n = start
        self._starts = np.array([s.start for s in self._shards], dtype=np.int64)
        self._verified: set[str] = set()

    # --- checks -----------------------------------------------------------------------------
    def _fault(self, file: str, what: str) -> ChipStoreError:
        return ChipStoreError(f"Chip store {self.folder}: shard file {file} {what}. Rebuild the "
                              "store (python -m bharateo chips build --out NEW_FOLDER ...).")

    def _check_file(self, shard: dict, kind: str) -> int:
        """Presence, size and .npy header of one shard file -> byte offset of its data."""
        file = _shard_file(shard["name"], kind)
        path = self.folder / file
        shape, dtype = _expected(kind, shard["chips"], self.chip_size, self.grid_size,
                                 self.channels)
        try:
            with open(path, "rb") as f:
                info = os.fstat(f.fileno())
                self._identity[file] = _identity(info)
                size = info.st_size
                if size != shard["files"][kind]["bytes"]:
                    raise self._fault(file, f"is {size:,} bytes, not the {shard['files'][kind]['bytes']:,} "
                                      "the manifest records (truncated or replaced)")
                version = np.lib.format.read_magic(f)
                got_shape, fortran, got_dtype = (np.lib.format.read_array_header_1_0(f)
                                                 if version == (1, 0) else
                                                 np.lib.format.read_array_header_2_0(f))
                offset = f.tell()
        except FileNotFoundError:
            raise self._fault(file, "is missing") from None
        except ChipStoreError:
            raise
        except (OSError, ValueError) as exc:
            raise self._fault(file, f"is not a readable .npy file ({exc})") from None
        if got_shape != shape or got_dtype != dtype or fortran:
            raise self._fault(file, f"holds a {got_dtype} array of shape {got_shape}, not the "
                              f"{dtype} {shape} the manifest implies")
        if offset + int(np.prod(shape)) * dtype.itemsize != size:
            raise self._fault(file, "has the wrong length for its array")
        return offset

    def _changed(self, file: str, how: str) -> ChipStoreError:
        return ChipStoreError(
            f"Chip store {self.folder}: shard file {file} changed while it was in use ({how} after "
            "the store was opened), so chips read from it may not be the ones its manifest "
            "records; nothing is saved as trained on this store. Leave a store unchanged while it "
            "is used, or rebuild it (python -m bharateo chips build --out NEW_FOLDER ...) and "
            "train again.")

    def _digest(self, file: str) -> tuple[str, tuple]:
        """(sha256 hex, identity) of one shard file, read 1 MB at a time (memory stays bounded);
        the identity is the file's as hashed, checked unchanged by the end of the read."""
        digest = hashlib.sha256()
        try:
            with open(self.folder / file, "rb") as f:
                before = _identity(os.fstat(f.fileno()))
                while block := f.read(1 << 20):
                    digest.update(block)
                if _identity(os.fstat(f.fileno())) != before:
                    raise self._changed(file, "rewritten while its checksum was read")
        except FileNotFoundError:
            raise self._changed(file, "removed") from None
        except OSError as exc:
            raise self._fault(file, f"can't be read ({exc.strerror or exc})") from None
        return digest.hexdigest(), before

    def _verify_file(self, shard: _Shard, kind: str, again: bool = False) -> None:
        """The file's sha256 against the manifest (once per file, or `again`); a file whose
        identity is no longer the one opened is named as changed unless its bytes still match."""
        file = _shard_file(shard.name, kind)
        if file in self._verified and not again:
            return
        sha, identity = self._digest(file)
        if sha != shard.files[kind]["sha256"]:
            if identity != self._identity.get(file) or file in self._verified:
                raise self._changed(file, "replaced or rewritten: its sha256 no longer matches "
                                    "the manifest")
            raise self._fault(file, "is damaged (its sha256 checksum doesn't match the manifest)")
        self._identity[file] = identity  # these bytes are the manifest's, whatever the inode
        self._verified.add(file)

    def _manifest_digest(self) -> str:
        try:
            return hashlib.sha256((self.folder / MANIFEST).read_bytes()).hexdigest()
        except OSError as exc:
            raise ChipStoreError(f"Chip store {self.folder}: {MANIFEST} can't be read "
                                 f"({exc.strerror or exc}).") from None

    def check_unchanged(self) -> None:
        """Before a run is saved as trained on this store: re-hash every shard file and the
        manifest, and compare them with the manifest and with what was opened. ChipStoreError
        naming the first file that changed (or is damaged)."""
        if self._manifest_sha is not None and self._manifest_digest() != self._manifest_sha:
            raise ChipStoreError(f"Chip store {self.folder}: {MANIFEST} changed while the store "
                                 "was in use; nothing is saved as trained on this store. Leave a "
                                 "store unchanged while it is used, then train again.")
        for shard in self._shards:
            for kind in self.kinds:
                file = _shard_file(shard.name, kind)
                was_read = file in self._verified
                self._verify_file(shard, kind, again=True)
                if not was_read:
                    self._verified.discard(file)

    def verify(self) -> None:
        """Check every shard file's sha256 now (ChipStoreError naming the first bad file)."""
        for shard in self._shards:
            for kind in self.kinds:
                self._verify_file(shard, kind)

    # --- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def grid_size(self) -> int:
        return self.chip_size // self.patch_size

    def _indices(self, index) -> np.ndarray:
        if isinstance(index, slice):
            return np.arange(self._n)[index]
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self._n):
            raise IndexError(f"chip index out of range for a store of {self._n} chips")
        return idx

    def _read(self, kind: str, index) -> np.ndarray:
        """Rows `index` of every shard's `kind` array, in the order asked. Consecutive chips of
        one shard are read with one pread."""
        idx = self._indices(index)
        shape, dtype = _expected(kind, len(idx), self.chip_size, self.grid_size, self.channels)
        out = np.empty(shape, dtype)
        row_bytes = out[0].nbytes if len(idx) else 0
        which = np.searchsorted(self._starts, idx, side="right") - 1
        i = 0
        while i < len(idx):
            shard = self._shards[which[i]]
            j = i + 1  # extend a run of consecutive chips in the same shard
            while j < len(idx) and which[j] == which[i] and idx[j] == idx[j - 1] + 1:
                j += 1
            self._verify_file(shard, kind)
            file = _shard_file(shard.name, kind)
            offset = shard.offsets[kind] + int(idx[i] - shard.start) * row_bytes
            want = (j - i) * row_bytes
            try:
                with open(self.folder / file, "rb") as f:
                    if _identity(os.fstat(f.fileno())) != self._identity[file]:
                        self._verify_file(shard, kind, again=True)  # raises unless still the same bytes
                    data = os.pread(f.fileno(), want, offset)
                    if _identity(os.fstat(f.fileno())) != self._identity[file]:
                        raise self._changed(file, "rewritten while it was read")
            except FileNotFoundError:
                raise self._changed(file, "removed") from None
            except OSError as exc:
                raise self._fault(file, f"can't be read ({exc.strerror or exc})") from None
            if len(data) != want:
                raise self._fault(file, "ended early (truncated after the store was opened)")
            out[i:j] = np.frombuffer(data, dtype).reshape((j - i,) + shape[1:])
            i = j
        return out

    def labels(self, index=slice(None)) -> np.ndarray:
        """B x S x S uint8 collapsed class ids of chips `index` (a slice or an index array)."""
        return self._read("labels", index)

    def patch_labels(self, index=slice(None)) -> np.ndarray:
        """B x G x G int64 patch labels (IGNORE_INDEX for a mostly no-data patch)."""
        return self._read("patches", index).astype(np.int64)

    def origins(self, index=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """(B roi indices, B x 2 (row, col) corners) of chips `index` in their regions."""
        rows = self._read("origins", index)
        return rows[:, 0], rows[:, 1:]

    def pixel_values(self, index=slice(None)) -> np.ndarray:
        """B x C x S x S float32 reflectance of chips `index` (a Sentinel-2 store; ChipStoreError
        for a palette-RGB store, whose values are rendered from labels)."""
        if "pixels" not in self.kinds:
            raise ChipStoreError(f"The chip store {self.folder} holds palette-RGB chips: their "
                                 "values are rendered from the labels, none are stored.")
        return self._read("pixels", index)

    def tokens(self, index=slice(None), stats: BandStats | None = None) -> torch.Tensor:
        """Chips `index` as B x N x (C*p*p) float32 tokens, exactly as ChipSet.tokens renders them:
        palette RGB from the labels, or reflectance normalised per band with `stats` (default:
        the manifest's band_stats), no-data pixels 0. ChipStoreError for `stats` on a palette
        store (palette RGB is never normalised)."""
        if "pixels" not in self.kinds:
            if stats is not None:
                raise ChipStoreError("A palette-RGB chip store has no per-band normalisation.")
            return labels_to_tokens(self.labels(index), self.patch_size)
        pixels, stats = self.pixel_values(index), stats or self.band_stats
        if stats is not None:
            pixels = normalise(pixels, self.labels(index) != NODATA_ID, stats)
        return patchify(torch.from_numpy(pixels), self.patch_size).contiguous()

    def patch_targets(self, index=slice(None)) -> torch.Tensor:
        """B x N int64 patch labels in token order."""
        return torch.from_numpy(self.patch_labels(index).reshape(-1, self.grid_size ** 2))

    def chips_per_roi(self) -> dict[str, int]:
        return dict(self._per_roi)

    def chip_config(self) -> ChipConfig:
        """The chip settings the store was built with."""
        return ChipConfig(**self.manifest["chip_config"])

    def chip_set(self, index=slice(None)) -> ChipSet:
        """Chips `index` loaded into memory as a ChipSet (for evaluation or browsing a few)."""
        roi_index, origins = self.origins(index)
        return ChipSet(labels=self.labels(index), patch_labels=self.patch_labels(index),
                       roi_index=roi_index, origins=origins, roi_names=self.roi_names,
                       chip_size=self.chip_size, patch_size=self.patch_size,
                       rejected_nodata=self.rejected_nodata, bands=self.bands,
                       pixels=self.pixel_values(index) if "pixels" in self.kinds else None,
                       band_stats=self.band_stats)

    def describe(self) -> dict:
        """What config.json records about the store a run trained on."""
        return {"folder": str(self.folder.resolve()), "split": self.split, "chips": self._n,
                "shards": len(self._shards), "created": self.manifest["created"],
                "manifest_sha256": self._manifest_sha or self._manifest_digest()}


MAX_MANIFEST_BYTES = 16 * 2**20  # a store of 10^6 chips in 4096-chip shards: ~60 KB


class _ManifestShardFile(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    bytes: Annotated[int, Field(ge=1, le=2**40)]


class _ManifestShard(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    name: Annotated[str, StringConstraints(pattern=_SHARD_RE.pattern)]
    chips: Annotated[int, Field(ge=1, le=MAX_SHARD_SIZE)]
    files: dict[str, _ManifestShardFile]


class _ManifestSplit(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    shards: list[_ManifestShard]
    chips: Annotated[int, Field(ge=0, le=10**9)]
    rejected_nodata: Annotated[int, Field(ge=0, le=10**12)]
    chips_per_roi: dict[str, Annotated[int, Field(ge=0)]]


class _ManifestRegion(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    spec: dict


class Manifest(BaseModel):
    """manifest.json's fields and types; read_manifest checks how they fit together."""

    model_config = ConfigDict(strict=True, extra="allow")
    format: Literal[FORMAT]
    version: Literal[VERSION]
    created: str = ""
    chip_size: Annotated[int, Field(ge=1, le=1024)]
    patch_size: Annotated[int, Field(ge=1, le=64)]
    bands: list[str]
    chip_config: dict
    roi_names: Annotated[list[str], Field(min_length=1)]
    regions: list[_ManifestRegion]
    splits: dict[Literal[SPLITS], _ManifestSplit]
    band_stats: dict | None = None


def read_manifest(folder: Path) -> dict:
    """The checked manifest of the chip store in `folder`: read bounded (MAX_MANIFEST_BYTES,
    depth; untrusted.read_json), typed (Manifest), then how its parts fit (chip and patch size,
    the pixel source's bands and band statistics, shard names per split, chip totals).
    ChipStoreError saying what is wrong: no store there, unreadable JSON, a field of the wrong
    type, counts that don't add up."""
    folder = Path(folder)
    path = folder / MANIFEST
    hint = "Rebuild the store (python -m bharateo chips build --out NEW_FOLDER ...)."

    def bad(what: str) -> ChipStoreError:
        return ChipStoreError(f"{path} is not a usable chip store manifest: {what}. {hint}")

    try:
        m = read_json(path, "it", MAX_MANIFEST_BYTES, error=ChipStoreError)
        typed(Manifest, m, "", ChipStoreError)
    except FileNotFoundError:
        raise ChipStoreError(f"{folder} is not a chip store (no {MANIFEST} in it). Build one with "
                             f"python -m bharateo chips build --out {folder}.") from None
    except ChipStoreError as exc:
        raise bad(str(exc)) from None
    if m["chip_size"] % m["patch_size"]:
        raise bad("chip_size is not a multiple of patch_size")
    try:
        chips = ChipConfig(**m["chip_config"])
        check_settings(chips, "chips", "chip_config: ")
    except TypeError as exc:
        raise bad(f"chip_config has unexpected fields ({exc})") from None
    except ConfigError as exc:
        raise bad(str(exc).rstrip(".")) from None
    source = PIXEL_SOURCES.get(chips.source)
    if source is None or tuple(m["bands"]) != source.bands:
        raise bad(f"bands {m['bands']!r:.80} are not those of its chips' pixel source "
                  f"({chips.source!r})")
    kinds = _kinds(source.bands)
    if kinds is PIXEL_KINDS:
        try:
            stats = BandStats.from_dict(m.get("band_stats"))
        except (ConfigError, AttributeError):
            raise bad("a Sentinel-2 store needs its band statistics ('band_stats': bands, mean, "
                      "std)") from None
        if stats.bands != source.bands:
            raise bad(f"band_stats cover {stats.bands}, not the store's bands {source.bands}")
    if "train" not in m["splits"]:
        raise bad("splits must hold 'train' (and optionally 'heldout')")
    for split, entry in m["splits"].items():
        for shard in entry["shards"]:
            if not shard["name"].startswith(split + "-"):
                raise bad(f"a shard of '{split}' has a bad name {shard['name']!r}")
            for kind in kinds:
                if kind not in shard["files"]:
                    raise bad(f"{shard['name']} has no sha256 for its {kind}")
        total = sum(shard["chips"] for shard in entry["shards"])
        if total != entry["chips"]:
            raise bad(f"the '{split}' shards hold {total} chips, not the {entry['chips']} recorded")
    return m


def roi_specs(manifest: dict):
    """The RoiSpecs the store's chips were cut from (for the run's config.json). ChipStoreError
    for a spec with unexpected fields (types are checked by RunConfig.validate)."""
    from bharateo.data.roi import RoiSpec

    try:
        return tuple(RoiSpec(**r["spec"]) for r in manifest["regions"])
    except TypeError as exc:
        raise ChipStoreError(f"The chip store's manifest has a region spec with unexpected fields "
                             f"({exc}). Rebuild the store.") from None

