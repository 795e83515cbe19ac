"""Regions of interest (ROIs): a named square of WorldCover pixels, its window on the global grid,
the presets, and load_roi, which reads one.

The parts live by concern beside this module: the global grid and tile checks (grid.py), GDAL's
settings (gdal.py), tile reads and their advice (reads.py), the cache and the read / cache /
deadline flow shared with Sentinel-2 (cache.py), and the whole-read deadline (deadline.py).
"""
from __future__ import annotations

import datetime as dt
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from bharateo.data.cache import RegionCache, cache_binding, cache_path, read_cache, write_cache
from bharateo.data.grid import GlobalWindow
from bharateo.data.reads import (land_read_as_sea, offline_advice, read_window, source_has_tile,
                                 tile_notes)
from bharateo.data.worldcover import (COVERAGE_LAT, NODATA, PIXELS_PER_DEGREE, TILE_DEGREES,
                                      DataSource, data_source_from_env, tile_global_offset,
                                      tile_origin)
from bharateo.errors import RegionError, SourceUnreachableError

ROI_SIZE_RANGE = (64, 4096)
MAX_NODATA_FRACTION = 0.5
WORLDCOVER_LABEL = "ESA WorldCover 10 m 2021 v200"
FIXTURE_LABEL = "synthetic test fixture"
UNVERIFIED_LABEL = "not verified as ESA WorldCover"


@dataclass(frozen=True)
class RoiSpec:
    """A named square of `size` x `size` pixels centred on lon/lat."""

    name: str
    lon: float
    lat: float
    size: int = 2048


def default_roi_name(lon: float, lat: float) -> str:
    """The one rule (app and CLI) naming a region from its centre in degrees, 4 decimals (about
    11 m) with the hemisphere: (77.23, 28.61) -> 'roi_77.2300E_28.6100N', (-11.5, -24.8) ->
    'roi_11.5000W_24.8000S'. Only letters, digits, '.' and '_', so it is also a cache and run
    name. The hemisphere is read after rounding, so -0.00001 is 'E' like 0.0000."""
    lon, lat = round(float(lon), 4) + 0.0, round(float(lat), 4) + 0.0  # + 0.0: -0.0 -> 0.0
    return (f"roi_{abs(lon):.4f}{'E' if lon >= 0 else 'W'}"
            f"_{abs(lat):.4f}{'N' if lat >= 0 else 'S'}")


NOTEBOOK_ROIS = [
    RoiSpec("delhi_ncr", 77.23, 28.61, 2048),
    RoiSpec("shekhawati", 75.80, 28.50, 2048),
    RoiSpec("mathura_belt", 77.50, 27.30, 2048),
]
NOTEBOOK_TILE = "N27E075"  # holds all three notebook ROIs
# On the bundled tile N00E006, checked on its pixels: no no-data in either window; sao_tome is
# 97 % tree cover with grass, bare and built-up, principe 38 % tree and 62 % water (coast).
SAMPLE_ROIS = [
    RoiSpec("sao_tome", 6.60, 0.25, 2048),
    RoiSpec("principe", 7.40, 1.62, 2048),
]


@dataclass
class Roi:
    """Native WorldCover codes of one ROI plus where they came from."""

    spec: RoiSpec
    native: np.ndarray  # size x size uint8 native codes
    provenance: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. "cache file was corrupt, re-read"
    cache_error: str = ""  # why the region could not be cached (kept in memory only), else ""

    @property
    def window(self) -> GlobalWindow:
        return GlobalWindow(*self.provenance["global_window"])

    @property
    def synthetic(self) -> bool:
        return bool(self.provenance.get("synthetic"))

    @property
    def verified(self) -> bool:
        """True only when every tile read says, in its own tags, it is ESA WorldCover 2021 v200."""
        read = [t for t in self.provenance.get("tiles", []) if t.get("status", "read") == "read"]
        return bool(read) and not self.synthetic and all(t.get("verified") for t in read)

    @property
    def data_label(self) -> str:
        """What these pixels are, for every place they are shown: one of WORLDCOVER_LABEL,
        FIXTURE_LABEL ("synthetic test fixture") or UNVERIFIED_LABEL."""
        if self.synthetic:
            return FIXTURE_LABEL
        return WORLDCOVER_LABEL if self.verified else UNVERIFIED_LABEL


def check_roi_spec(spec: RoiSpec) -> None:
    """RegionError unless `spec` is a region: a whole size in ROI_SIZE_RANGE pixels, a centre
    that is a longitude/latitude, the whole square inside WorldCover's latitudes (COVERAGE_LAT)."""
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


def load_roi(spec: RoiSpec, source: DataSource | None = None, use_cache: bool = True,
             progress=None, timeout_s: float | None = None) -> Roi:
    """Read one ROI (from the cache when it is there and sound) -> Roi.

    The flow is cache.RegionCache's, shared with Sentinel-2 regions. A read from the source
    takes at most `timeout_s` seconds in all (default read_timeout_s(), BHARATEO_READ_TIMEOUT_S);
    `progress(fraction, text)` is called from the caller's thread about 4 times a second while it
    runs. A cache file that is damaged or holds another region is moved aside (a note says so)
    and the region read again. A region that can't be cached (read-only or full data/) is
    returned all the same, with `cache_error` and a note saying why.
    Raises RegionError for a region that is mostly sea / outside coverage, MissingTileError for a
    tile the source lacks, TileFileError for a damaged or wrong tile file, SourceUnreachableError
    when the source can't be reached in time (saying so when a damaged cache was moved aside).
    """
    source = source or data_source_from_env()
    window = roi_window(spec)
    binding = cache_binding(window, source)
    flow = RegionCache(cache_path(window, source), spec.name, use_cache, timeout_s, progress,
                       f"asking {source.describe()}…")
    hit = flow.cached(lambda path: read_cache(path, binding))
    if hit is not None:
        native, provenance = hit
        provenance["source"] = f"local cache of {provenance['source']}"
        provenance.update(name=spec.name, center_lon_lat=[spec.lon, spec.lat])
        land = land_read_as_sea(provenance)
        if not land:
            return Roi(spec, native, provenance, flow.notes + tile_notes(provenance))
        flow.notes.append(f"The cached copy of this region read tile {', '.join(land)} as open "
                          "sea (no-data), but it holds land: the region is read again.")

    def on_tile(k, n, tile):
        flow.stage(f"tile {tile} ({k + 1} of {n}) from {source.describe()}", k / n)

    def advise(exc):
        if isinstance(exc, SourceUnreachableError) and source.kind != "folder":  # the network
            exc.args = (f"{exc}{offline_advice(window, str(exc))}",)
        return exc

    native, read_info = flow.fetch(
        lambda deadline: read_window(window, source, deadline, on_tile),
        f"Reading the {spec.size} px region at {spec.lon:.4f}E {spec.lat:.4f}N from "
        f"{source.describe()}", advise)
    nodata = float(np.mean(native == NODATA))
    if nodata > MAX_NODATA_FRACTION:
        raise RegionError(
            f"The region at ({spec.lon:.3f}, {spec.lat:.3f}) is {nodata:.0%} no-data: open sea or "
            "outside WorldCover coverage. Move the centre onto land or pick a smaller region.")
    provenance = {
        "name": spec.name,
        "source_kind": source.kind,
        "center_lon_lat": [spec.lon, spec.lat],
        "size": spec.size,
        "global_window": [window.row, window.col, window.size],
        "bounds": list(window.bounds),
        "nodata_fraction": nodata,
        "read_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **read_info,
    }
    cache_error = flow.save(lambda path: write_cache(path, native, provenance, binding))
    return Roi(spec, native, provenance, flow.notes + tile_notes(provenance), cache_error)


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


def default_presets(source: DataSource | None = None) -> list[RoiSpec]:
    """The notebook's three ROIs when their tile N27E075 is reachable or any of them is cached
    for `source`, else SAMPLE_ROIS (the bundled Sao Tome / Principe tile, readable offline)."""
    source = source or data_source_from_env()
    if any(cache_path(roi_window(s), source).exists() for s in NOTEBOOK_ROIS):
        return list(NOTEBOOK_ROIS)
    return list(NOTEBOOK_ROIS) if source_has_tile(NOTEBOOK_TILE, source) else list(SAMPLE_ROIS)
