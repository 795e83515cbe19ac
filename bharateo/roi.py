"""Read a square region of interest (ROI) of WorldCover pixels, with rasterio windows.

Only the bytes of the window are fetched (GDAL range requests for URLs). A window that crosses a
tile edge is mosaicked from the neighbouring tiles. Every ROI read is cached under `data/` with its
provenance, written atomically, and checked on load; a corrupt cache file is moved aside and the
ROI read again.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import math
import numbers
import re
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bharateo.errors import MissingTileError, RegionError, SourceUnreachableError
from bharateo.worldcover import (
    COVERAGE_LAT,
    NODATA,
    PIXELS_PER_DEGREE,
    TILE_DEGREES,
    TILE_PIXELS,
    DataSource,
    data_source_from_env,
    tile_global_offset,
    tile_id_from_origin,
    tile_origin,
)

log = logging.getLogger(__name__)

ROI_SIZE_RANGE = (64, 4096)
MAX_NODATA_FRACTION = 0.5
SYNTHETIC_TAG = "BHARATEO_SYNTHETIC_FIXTURE"  # set by test fixtures; never on real WorldCover
GDAL_ENV = dict(
    GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
    CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tif",
    GDAL_HTTP_TIMEOUT=20,
    GDAL_HTTP_CONNECTTIMEOUT=8,
    GDAL_HTTP_MAX_RETRY=1,
    VSI_CACHE=True,
)


@dataclass(frozen=True)
class RoiSpec:
    """A named square of `size` x `size` pixels centred on lon/lat."""

    name: str
    lon: float
    lat: float
    size: int = 2048


NOTEBOOK_ROIS = [
    RoiSpec("delhi_ncr", 77.23, 28.61, 2048),
    RoiSpec("shekhawati", 75.80, 28.50, 2048),
    RoiSpec("mathura_belt", 77.50, 27.30, 2048),
]


SAMPLE_ROIS = [  # stand-in until the source branch merges
    RoiSpec("sao_tome", 6.60, 0.25, 2048),
    RoiSpec("principe", 7.40, 1.61, 2048),
]


def source_has_tile(tile: str, source: DataSource, timeout: float = 3.0) -> bool:
    """Stand-in until the source branch merges (asks no network: False for a URL source)."""
    from bharateo.worldcover import bundled_tile_path
    if bundled_tile_path(tile) is not None:
        return True
    return source.kind == "folder" and Path(source.tile_path(tile)).is_file()


def default_presets(source: DataSource) -> list[RoiSpec]:  # stand-in until the source branch merges
    if source_has_tile("N27E075", source) or any(
            cache_path(roi_window(s), source).exists() for s in NOTEBOOK_ROIS):
        return list(NOTEBOOK_ROIS)
    return list(SAMPLE_ROIS)


@dataclass(frozen=True)
class GlobalWindow:
    """A pixel window on the global 1/12000-degree grid (row 0 = 90N, col 0 = 180W)."""

    row: int
    col: int
    size: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        west = self.col / PIXELS_PER_DEGREE - 180
        north = 90 - self.row / PIXELS_PER_DEGREE
        return (west, north - self.size / PIXELS_PER_DEGREE,
                west + self.size / PIXELS_PER_DEGREE, north)

    def overlaps(self, other: "GlobalWindow") -> bool:
        return (self.row < other.row + other.size and other.row < self.row + self.size
                and self.col < other.col + other.size and other.col < self.col + self.size)

    def tiles(self) -> list[tuple[str, int, int]]:
        """[(tile id, lon0, lat0)] of every tile the window touches."""
        out = []
        r_tiles = range(self.row // TILE_PIXELS, (self.row + self.size - 1) // TILE_PIXELS + 1)
        c_tiles = range(self.col // TILE_PIXELS, (self.col + self.size - 1) // TILE_PIXELS + 1)
        for tr in r_tiles:
            for tc in c_tiles:
                lat0 = 90 - (tr + 1) * TILE_DEGREES
                lon0 = tc * TILE_DEGREES - 180
                out.append((tile_id_from_origin(lon0, lat0), lon0, lat0))
        return out


@dataclass
class Roi:
    """Native WorldCover codes of one ROI plus where they came from."""

    spec: RoiSpec
    native: np.ndarray  # size x size uint8 native codes
    provenance: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. "cache file was corrupt, re-read"

    @property
    def window(self) -> GlobalWindow:
        return GlobalWindow(*self.provenance["global_window"])

    @property
    def synthetic(self) -> bool:
        return bool(self.provenance.get("synthetic"))

    @property
    def data_label(self) -> str:  # stand-in until the source branch merges
        return "synthetic test fixture" if self.synthetic else "ESA WorldCover 10 m 2021 v200"

    @property
    def verified(self) -> bool:  # stand-in until the source branch merges
        return self.data_label == "ESA WorldCover 10 m 2021 v200"


def check_roi_spec(spec: RoiSpec) -> None:
    lo, hi = ROI_SIZE_RANGE
    if isinstance(spec.size, bool) or not isinstance(spec.size, numbers.Integral):
        raise RegionError(f"ROI size must be a whole number of pixels (got {spec.size!r}).")
    if not (lo <= spec.size <= hi):
        raise RegionError(f"ROI size must be between {lo} and {hi} pixels (got {spec.size}).")
    if not (-180 <= spec.lon < 180) or not (-90 < spec.lat < 90):
        raise RegionError(f"({spec.lon}, {spec.lat}) is not a longitude/latitude. "
                          "Longitude goes from -180 to 180, latitude from -90 to 90.")
    half = spec.size / 2 / PIXELS_PER_DEGREE
    if not (COVERAGE_LAT[0] + half <= spec.lat <= COVERAGE_LAT[1] - half):
        raise RegionError(f"Latitude {spec.lat} is outside WorldCover coverage "
                          f"({-COVERAGE_LAT[0]:.0f}S to {COVERAGE_LAT[1]:.0f}N). Pick a point on land.")


def roi_window(spec: RoiSpec) -> GlobalWindow:
    """The notebook's window: the centre pixel in the tile holding lon/lat, minus size // 2.

    The centre is floor((lon - west) * 12000), floor((north - lat) * 12000) in plain floats, which
    is what the notebook's `src.index` returned (its printed bounds for all three ROIs agree).
    rasterio 1.4's `rowcol` snaps near-integers instead and would move shekhawati and
    mathura_belt by one pixel, changing their class counts.
    """
    check_roi_spec(spec)
    lon0, lat0 = tile_origin(spec.lon, spec.lat)
    col = math.floor((spec.lon - lon0) * PIXELS_PER_DEGREE)
    row = math.floor((lat0 + TILE_DEGREES - spec.lat) * PIXELS_PER_DEGREE)
    tile_row, tile_col = tile_global_offset(lon0, lat0)
    window = GlobalWindow(tile_row + row - spec.size // 2, tile_col + col - spec.size // 2, spec.size)
    if window.col < 0 or window.col + window.size > 360 * PIXELS_PER_DEGREE:
        raise RegionError("The region crosses the 180° meridian; move it east or west.")
    return window


def _classify_open_error(exc: Exception, tile: str, path: str, source: DataSource) -> Exception:
    text = str(exc)
    if source.kind == "folder":
        if not Path(source.location).is_dir():
            return SourceUnreachableError(
                f"The WorldCover folder {source.location} (BHARATEO_WORLDCOVER_DIR) does not exist.")
        if not Path(path).exists():
            return MissingTileError(tile, source.describe())
        return SourceUnreachableError(f"Could not read {path}: {text}")
    status = re.search(r"HTTP response code: (\d{3})", text)
    if status and status.group(1) in ("403", "404", "410"):  # S3 answers 403 for a missing key
        return MissingTileError(tile, source.describe())
    curl = re.search(r"CURL error: ([^)]*)", text)  # GDAL's later tries say only "does not exist"
    reason = f" ({curl.group(1).strip()})" if curl else ""
    return SourceUnreachableError(
        f"Could not reach {source.describe()} for tile {tile}{reason}. "
        "Check the network, or work offline: run `python -m bharateo prefetch` while online, "
        "or set BHARATEO_WORLDCOVER_DIR to a folder holding the tiles.")


def read_window(window: GlobalWindow, source: DataSource) -> tuple[np.ndarray, dict]:
    """Read `window` from every tile it touches -> (size x size uint8, provenance)."""
    import rasterio
    from rasterio.windows import Window

    out = np.zeros((window.size, window.size), dtype=np.uint8)
    parts, synthetic, crs = [], False, None
    with rasterio.Env(**GDAL_ENV):
        for tile, lon0, lat0 in window.tiles():
            path = source.tile_path(tile)
            t_row, t_col = tile_global_offset(lon0, lat0)
            r0, c0 = max(window.row, t_row), max(window.col, t_col)
            r1 = min(window.row + window.size, t_row + TILE_PIXELS)
            c1 = min(window.col + window.size, t_col + TILE_PIXELS)
            try:
                src = rasterio.open(path)
            except Exception as exc:  # rasterio raises RasterioIOError / CPLE_* variants
                raise _classify_open_error(exc, tile, path, source) from exc
            with src:
                tile_window = Window(c0 - t_col, r0 - t_row, c1 - c0, r1 - r0)
                try:
                    block = src.read(1, window=tile_window)
                except Exception as exc:
                    raise SourceUnreachableError(
                        f"Reading tile {tile} from {source.describe()} failed part-way "
                        f"({str(exc)[:160]}). Try again; nothing was cached.") from exc
                out[r0 - window.row:r1 - window.row, c0 - window.col:c1 - window.col] = block
                synthetic |= SYNTHETIC_TAG in src.tags()
                crs = str(src.crs)
                parts.append({"tile": tile, "path": path,
                              "window": [int(tile_window.col_off), int(tile_window.row_off),
                                         int(tile_window.width), int(tile_window.height)]})
    return out, {"tiles": parts, "crs": crs, "synthetic": synthetic}


# --- cache -----------------------------------------------------------------------------------
def data_dir() -> Path:
    default = Path(__file__).resolve().parents[1] / "data"
    return Path(os.environ.get("BHARATEO_DATA_DIR", default))


def cache_path(window: GlobalWindow, source: DataSource, root: Path | None = None) -> Path:
    root = root or data_dir()
    tile = window.tiles()[0][0]  # the tile holding the window's north-west corner
    return root / (f"worldcover_2021_v200_{tile}_r{window.row}_c{window.col}_s{window.size}"
                   f"_{source.cache_key}.npz")


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_cache(path: Path, native: np.ndarray, provenance: dict) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, native=native, provenance=np.array(json.dumps(provenance)),
                        sha256=np.array(hashlib.sha256(native.tobytes()).hexdigest()))
    atomic_write_bytes(path, buf.getvalue())


def read_cache(path: Path, size: int) -> tuple[np.ndarray, dict]:
    """Load and verify a cached ROI; raises ValueError (or a zip/OS error) if it is damaged."""
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
        native = z["native"]
        provenance = json.loads(str(z["provenance"]))
        digest = str(z["sha256"])
    if native.shape != (size, size) or native.dtype != np.uint8:
        raise ValueError(f"cached array has shape {native.shape} {native.dtype}")
    if hashlib.sha256(native.tobytes()).hexdigest() != digest:
        raise ValueError("checksum mismatch")
    return native, provenance


def load_roi(spec: RoiSpec, source: DataSource | None = None, use_cache: bool = True) -> Roi:
    """Read one ROI (from the cache when it is there and sound) -> Roi.

    Raises RegionError for a region that is mostly sea / outside coverage, MissingTileError for a
    tile the source lacks, SourceUnreachableError when the source can't be reached.
    """
    source = source or data_source_from_env()
    window = roi_window(spec)
    path = cache_path(window, source)
    notes = []
    if use_cache and path.exists():
        try:
            native, provenance = read_cache(path, spec.size)
            provenance["source"] = f"local cache of {provenance['source']}"
            provenance.update(name=spec.name, center_lon_lat=[spec.lon, spec.lat])
            return Roi(spec, native, provenance, notes)
        except Exception as exc:  # truncated zip, bad checksum, missing key, wrong shape...
            aside = path.with_suffix(".corrupt")
            try:
                os.replace(path, aside)
            except FileNotFoundError:  # another process recovered it first
                pass
            notes.append(f"The cache file {path.name} was damaged ({type(exc).__name__}); "
                         f"it was moved to {aside.name} and the region read again.")
            log.warning(notes[-1])

    native, read_info = read_window(window, source)
    nodata = float(np.mean(native == NODATA))
    if nodata > MAX_NODATA_FRACTION:
        raise RegionError(
            f"The region at ({spec.lon:.3f}, {spec.lat:.3f}) is {nodata:.0%} sea or outside "
            "WorldCover coverage. Move the centre onto land or pick a smaller region.")
    provenance = {
        "name": spec.name,
        "source": source.describe(),
        "source_kind": source.kind,
        "center_lon_lat": [spec.lon, spec.lat],
        "size": spec.size,
        "global_window": [window.row, window.col, window.size],
        "bounds": list(window.bounds),
        "nodata_fraction": nodata,
        "read_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **read_info,
    }
    if use_cache:
        write_cache(path, native, provenance)
    return Roi(spec, native, provenance, notes)


def check_no_overlap(spec: RoiSpec, others: list[Roi]) -> None:
    """RegionError if `spec` would share pixels with an ROI already chosen."""
    window = roi_window(spec)
    for other in others:
        if other.spec.name == spec.name:
            raise RegionError(f"There is already a region called '{spec.name}'. Pick another name.")
        if window.overlaps(other.window):
            raise RegionError(
                f"'{spec.name}' overlaps '{other.spec.name}'. Overlapping regions would let the "
                "same pixels appear in training and held-out chips; move it or make it smaller.")


def native_class_counts(native: np.ndarray) -> dict[int, int]:
    codes, counts = np.unique(native, return_counts=True)
    return dict(zip(codes.tolist(), counts.tolist()))
