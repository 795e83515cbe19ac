"""Read a square region of interest (ROI) of WorldCover pixels, with rasterio windows.

Only the bytes of the window are fetched (GDAL range requests for URLs). A window that crosses a
tile edge is mosaicked from the neighbouring tiles. Every ROI read is cached under `data/` with its
provenance, written atomically, and checked on load; a corrupt cache file is moved aside and the
ROI read again.
"""
from __future__ import annotations

import datetime as dt
import errno
import hashlib
import io
import json
import logging
import math
import numbers
import re
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bharateo.errors import (
    BharatEOError,
    LandTileMissingError,
    MissingTileError,
    RegionError,
    SourceUnreachableError,
    TileFileError,
)
from bharateo.data.worldcover import (
    COVERAGE_LAT,
    NODATA,
    PIXELS_PER_DEGREE,
    TILE_DEGREES,
    TILE_PIXELS,
    SAMPLE_TILES,
    DataSource,
    bundled_tile_path,
    data_source_from_env,
    redact_text,
    tile_filename,
    tile_global_offset,
    tile_id_from_origin,
    tile_url,
    tile_origin,
    open_url,
    url_and_auth,
)

log = logging.getLogger(__name__)

ROI_SIZE_RANGE = (64, 4096)
MAX_NODATA_FRACTION = 0.5
SYNTHETIC_TAG = "BHARATEO_SYNTHETIC_FIXTURE"  # set by test fixtures; never on real WorldCover
# Every remote read is bounded (GDAL's documented /vsicurl/ options): a request fails if it can't
# connect in CONNECTTIMEOUT s, moves under LOW_SPEED_LIMIT bytes/s for LOW_SPEED_TIME s (a stalled
# Wi-Fi or server), or runs over TIMEOUT s; GDAL retries HTTP 429/5xx MAX_RETRY times RETRY_DELAY s
# apart. A 2048 px read is a few range requests per tile, so a dead source fails in seconds.
GDAL_ENV = dict(
    GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
    CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tif",
    GDAL_HTTP_TIMEOUT=60,
    GDAL_HTTP_CONNECTTIMEOUT=8,
    GDAL_HTTP_LOW_SPEED_TIME=15,
    GDAL_HTTP_LOW_SPEED_LIMIT=1024,
    GDAL_HTTP_MAX_RETRY=2,
    GDAL_HTTP_RETRY_DELAY=1,
    VSI_CACHE=True,
)
# ...and a whole region read is bounded too: GDAL's limits are per request and its retries add up
# (a server that accepts and never answers took 53-150 s), so the read runs in a worker thread and
# is given up after BHARATEO_READ_TIMEOUT_S seconds in all (connect, requests, retries; default
# 30 s, bharateo/config/environment.py).
# provenance status of a tile the source has no file for and whose 3-degree cell holds no land in
# the GLOBE 1 km land mask (bharateo/data/landmask.py): ESA publishes no tile there (open sea)
NOT_PUBLISHED = "not published (sea)"
WORLDCOVER_LABEL = "ESA WorldCover 10 m 2021 v200"
FIXTURE_LABEL = "synthetic test fixture"
UNVERIFIED_LABEL = "not verified as ESA WorldCover"
PROVENANCE_TAGS = ("product_tile", "product_version", "copyright", "license", "time_start",
                   "time_end")  # the tags ESA writes into every WorldCover v200 COG


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


def tags_say_worldcover(tags: dict, tile: str) -> bool:
    """True when a file's own tags say it is ESA WorldCover 2021 v200 tile `tile`.

    ESA writes product_tile, product_version 'V2.0.0' and time_start '2021-01-01...' into each COG;
    a file carrying SYNTHETIC_TAG (this project's test fixtures) is never WorldCover."""
    return (SYNTHETIC_TAG not in tags and tags.get("product_tile") == tile
            and str(tags.get("product_version", "")).upper() in ("V2.0.0", "V200")
            and str(tags.get("time_start", "")).startswith("2021"))


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


def _forget_remote_failures(source: DataSource) -> None:
    """Drop GDAL's /vsicurl/ cache for `source` so the next read asks the server again.

    GDAL remembers a failed URL for the whole process ("does not exist in the file system") and
    would never retry it; after a failure we call its public VSICurlPartialClearCache(prefix) (C
    API, GDAL >= 2.4) on the libgdal rasterio loaded. If that library can't be found, later reads
    of this source run with CPL_VSIL_CURL_NON_CACHED set (GDAL's config option for the same)."""
    if source.kind == "folder":
        return
    prefix = "/vsicurl/" + source.location.rstrip("/") + "/"
    try:
        import ctypes

        with open("/proc/self/maps") as f:
            lib = next(line.split()[-1] for line in f if "libgdal" in line.rsplit("/", 1)[-1])
        clear = ctypes.CDLL(lib).VSICurlPartialClearCache
        clear.argtypes, clear.restype = [ctypes.c_char_p], None
        clear(prefix.encode())
    except Exception:  # not Linux, or a GDAL linked some other way
        _UNCACHED_SOURCES.add(prefix)


_UNCACHED_SOURCES: set[str] = set()


def _gdal_env(source: DataSource, **overrides) -> dict:
    env = {**GDAL_ENV, **overrides}
    prefix = "/vsicurl/" + source.location.rstrip("/") + "/"
    if prefix in _UNCACHED_SOURCES:
        env["CPL_VSIL_CURL_NON_CACHED"] = prefix
    return env


def read_timeout_s() -> float:
    """Seconds a whole region read may take: BHARATEO_READ_TIMEOUT_S (default 30 s).
    Raises ConfigError for a value that is not a number of seconds from 1 to 3,600."""
    from bharateo.config import environment

    return environment.READ_TIMEOUT_S.get()


def _is_remote(path: str) -> bool:
    return "://" in path


def _what_came_back(url: str, timeout: float = 5.0) -> str | None:
    """What a server sends for `url` (first bytes of a bounded GET): 'HTTP 200, content type
    text/html, starting "<!DOCTYPE html>..."'; None if it could not be asked. Never raises."""
    import urllib.error
    import urllib.request

    plain, headers = url_and_auth(url)
    request = urllib.request.Request(plain, headers={**headers, "Range": "bytes=0-255"})
    try:
        with open_url(request, timeout) as reply:
            status, ctype, head = reply.status, reply.headers.get("Content-Type"), reply.read(256)
    except urllib.error.HTTPError as exc:
        status, ctype, head = exc.code, exc.headers.get("Content-Type"), b""
    except Exception:
        return None
    text = head[:60].decode("utf-8", "replace").replace("\n", " ").strip()
    return (f"HTTP {status}, content type {ctype or 'not given'}"
            + (f", starting {text!r}" if text else ""))


def _classify_open_error(exc: Exception, tile: str, path: str, source: DataSource) -> Exception:
    """MissingTileError when the source has no file for `tile` (folder: no such file; URL: HTTP
    403/404/410); TileFileError when a file is there but is not a readable GeoTIFF (a damaged file,
    or a server that answers with something else, e.g. an HTML page: the message says what came
    back); SourceUnreachableError for the rest (network, timeout, 5xx). Messages name the tile and
    never hold credentials."""
    text = redact_text(exc)
    shown = redact_text(path)
    if not _is_remote(path):
        if source.kind == "folder" and not Path(source.location).is_dir():
            return SourceUnreachableError(
                f"The WorldCover folder {source.location} (BHARATEO_WORLDCOVER_DIR) does not exist.")
        if not Path(path).exists():
            return MissingTileError(tile, source.describe())
        return TileFileError(
            f"The tile file {shown} is damaged or not a GeoTIFF, so tile {tile} can't be read "
            f"({text[:160]}). Trying again won't help: copy the file again from the WorldCover "
            "bucket (or delete it so the region is read elsewhere).")
    status = re.search(r"HTTP response code: (\d{3})", text)
    if status and status.group(1) in ("403", "404", "410"):  # S3 answers 403 for a missing key
        return MissingTileError(tile, source.describe())
    curl = re.search(r"CURL error: ([^)]*)", text)  # GDAL's later tries say only "does not exist"
    if not curl and not status and "not recognized" in text:  # it answered, with no GeoTIFF
        came = _what_came_back(path)
        if came:
            return TileFileError(
                f"{source.describe()} answered for tile {tile} ({shown}), but not with a GeoTIFF: "
                f"{came}. The URL probably leads to a login, error or index page: check "
                "BHARATEO_WORLDCOVER_URL (it must be the folder that holds the .tif files).")
    reason = curl.group(1).strip() if curl else (f"HTTP {status.group(1)}" if status else "")
    if any(w in reason.lower() for w in ("too slow", "timed out", "timeout")):
        reason = f"the server stopped answering and the request timed out: {reason}"
    return SourceUnreachableError(
        f"Could not reach {source.describe()} for tile {tile}" + (f" ({reason})" if reason else "")
        + ". Check the network and try again, or work offline: run `python -m bharateo prefetch` "
        "while online, or set BHARATEO_WORLDCOVER_DIR to a folder holding the tiles.")


def _tile_tags(src, tile: str) -> dict:
    """The file's own provenance tags (PROVENANCE_TAGS present in it) and whether they say
    ESA WorldCover 2021 v200 for `tile`."""
    tags = src.tags()
    return {"tags": {k: tags[k] for k in PROVENANCE_TAGS if k in tags},
            "verified": tags_say_worldcover(tags, tile)}


def _tile_source(tile: str, source: DataSource) -> tuple[str, str]:
    """(path, description) to read `tile` from: the bundled official COG (no network needed) for
    remote sources and for folders without that file, else the source's own file."""
    bundled = bundled_tile_path(tile)
    own = source.tile_path(tile)
    if bundled is None or (source.kind == "folder" and Path(own).exists()):
        return own, source.describe()
    return str(bundled), f"bundled sample (data/sample/{bundled.name})"


def check_tile_grid(src, tile: str, lon0: int, lat0: int, shown: str) -> None:
    """TileFileError unless the open file `src` lies on WorldCover tile `tile`'s grid: CRS
    EPSG:4326, 1/12000-degree square pixels, north-west corner at (lon0, lat0 + 3), 36000 x 36000
    pixels of uint8 in band 1. The message names the file (`shown`) and each mismatch."""
    wrong = []
    epsg = src.crs.to_epsg() if src.crs else None
    if epsg != 4326:
        wrong.append(f"its CRS is {src.crs or 'missing'}, not EPSG:4326 (longitude/latitude)")
    else:
        t, px = src.transform, 1 / PIXELS_PER_DEGREE
        if not (math.isclose(t.a, px, rel_tol=1e-6) and math.isclose(-t.e, px, rel_tol=1e-6)
                and t.b == 0 and t.d == 0):
            wrong.append(f"its pixels are {t.a:.4g} x {abs(t.e):.4g} degrees (about "
                         f"{t.a * 111_320:.0f} m), not 1/12000 degree (10 m)")
        elif abs(t.c - lon0) > px / 100 or abs(t.f - (lat0 + TILE_DEGREES)) > px / 100:
            wrong.append(f"its north-west corner is at ({t.c:.6f}, {t.f:.6f}), not at the tile's "
                         f"({lon0}, {lat0 + TILE_DEGREES})")
    if (src.height, src.width) != (TILE_PIXELS, TILE_PIXELS):
        wrong.append(f"it is {src.width} x {src.height} pixels, not {TILE_PIXELS} x {TILE_PIXELS}")
    if src.count < 1 or src.dtypes[0] != "uint8":
        wrong.append(f"its data type is {src.dtypes[0] if src.count else 'missing'}, not uint8")
    if wrong:
        raise TileFileError(
            f"The file {shown} has the name of WorldCover tile {tile} but is not on the WorldCover "
            f"grid: {'; '.join(wrong)}. Replace it with the official file "
            "(ESA_WorldCover_10m_2021_v200_<TILE>_Map.tif, unchanged).")


def _part_way_error(exc: Exception, tile: str, path: str, where: str) -> BharatEOError:
    """A read that failed after the file opened: the network (SourceUnreachableError, worth
    another try), a local file itself (TileFileError: damaged or truncated, named), or, for a
    remote file GDAL gives no reason for, SourceUnreachableError naming both possibilities."""
    text = redact_text(exc.__cause__ or exc)[:160]  # rasterio: "Read failed. See previous..."
    if re.search(r"CURL error|HTTP response code|timed out|Connection", text, re.I):
        return SourceUnreachableError(
            f"Reading tile {tile} from {where} failed part-way ({text}): the connection broke. "
            "Try again; nothing was cached.")
    if _is_remote(path):  # GDAL says no more than "read failed" for a stalled range request too
        return SourceUnreachableError(
            f"Reading tile {tile} from {where} failed part-way ({text}): either the connection "
            "broke (then trying again helps) or the file on the mirror is damaged (then it must "
            f"be copied there again: {redact_text(path)}). Nothing was cached.")
    return TileFileError(
        f"The tile file {redact_text(path)} (tile {tile}, from {where}) is damaged: its header "
        f"opens but its pixels can't be read ({text}); it is probably truncated or corrupt. "
        "Trying again won't help: copy the file again from the WorldCover bucket.")


def tile_extent(lon0: int, lat0: int) -> str:
    """'78-81E, 27-30N': the extent of the 3-degree tile with south-west corner (lon0, lat0)."""
    def span(a: int, pos: str, neg: str) -> str:
        b = a + TILE_DEGREES
        if a >= 0:
            return f"{a}-{b}{pos}"
        if b <= 0:
            return f"{-b}-{-a}{neg}"
        return f"{-a}{neg}-{b}{pos}"
    return f"{span(lon0, 'E', 'W')}, {span(lat0, 'N', 'S')}"


def check_missing_tile_is_sea(tile: str, lon0: int, lat0: int, source: DataSource) -> None:
    """Raise LandTileMissingError when `source` has no file for `tile` but the tile's 3 x 3-degree
    cell holds land in the GLOBE 1 km land mask (bharateo.data.landmask.tile_has_land, every 1/120-
    degree cell of the tile looked at): only a tile with no land is open sea that ESA does not
    publish. Outside WorldCover's coverage (COVERAGE_LAT) ESA publishes nothing, so nothing is
    raised there. A land mask that can't be read is treated as land (never guess sea)."""
    from bharateo.data.landmask import LandMaskUnavailable, tile_has_land

    if lat0 + TILE_DEGREES <= COVERAGE_LAT[0] or lat0 >= COVERAGE_LAT[1]:
        return
    try:
        if not tile_has_land(lon0, lat0):
            return
        why = "holds land (GLOBE 1 km land mask)"
    except LandMaskUnavailable as exc:
        why = f"may hold land ({exc})"
    url = tile_url(tile)
    if source.kind == "folder":
        how = (f"download {url} while online and put it, named {tile_filename(tile)}, in the "
               f"folder BHARATEO_WORLDCOVER_DIR names ({source.location})")
    elif source.kind == "url":
        how = (f"copy {url} to that mirror, or put the file in a folder and set "
               "BHARATEO_WORLDCOVER_DIR to it")
    else:
        how = (f"check that {url} can be downloaded, or put the file in a folder and set "
               "BHARATEO_WORLDCOVER_DIR to it")
    raise LandTileMissingError(tile, (
        f"Tile {tile} ({tile_extent(lon0, lat0)}) {why}, but {source.describe()} has no file for "
        f"it, so its part of this region can't be read (it is not open sea, so it is not read as "
        f"no-data). To get it: {how}. Once read, `python -m bharateo prefetch` with this region "
        "keeps it cached for offline use."))


def land_read_as_sea(provenance: dict) -> list[str]:
    """Tiles a cached region's provenance lists as NOT_PUBLISHED (read as no-data) although they
    hold land (check_missing_tile_is_sea): caches written before land was checked. A cache
    listing any must be read again, never shown."""
    out = []
    for part in provenance.get("tiles", []):
        m = re.fullmatch(r"([NS])(\d{2})([EW])(\d{3})", str(part.get("tile", "")))
        if part.get("status") != NOT_PUBLISHED or not m:
            continue
        lat0 = int(m.group(2)) * (1 if m.group(1) == "N" else -1)
        lon0 = int(m.group(4)) * (1 if m.group(3) == "E" else -1)
        try:
            check_missing_tile_is_sea(m.group(0), lon0, lat0, DataSource("public", ""))
        except LandTileMissingError:
            out.append(m.group(0))
    return out


def read_window(window: GlobalWindow, source: DataSource, deadline: float | None = None,
                on_tile=None) -> tuple[np.ndarray, dict]:
    """Read `window` from every tile it touches -> (size x size uint8 native codes, provenance).

    A tile the source has no file for (folder: file absent; URL: HTTP 403/404/410) whose 3 x 3-
    degree cell holds no land in the GLOBE 1 km land mask is a tile ESA does not publish (open
    sea): its part reads as no-data (0) and is listed with status NOT_PUBLISHED, provided at least
    one tile of the window was read. A missing tile that holds land raises LandTileMissingError
    naming it and how to get it (check_missing_tile_is_sea). Raises MissingTileError (a
    RegionError) when no tile of the window exists, TileFileError when a file is
    there but damaged, not a GeoTIFF or not on the WorldCover grid, SourceUnreachableError when a
    tile can't be reached (network down, timeout, HTTP 5xx), each naming the tile. `deadline`
    (time.monotonic() seconds) caps every HTTP request's time limits and is checked between tiles;
    `on_tile(k, n, tile)` is called before tile k of n is read. Paths in the provenance and in
    messages have their credentials redacted.
    """
    import rasterio
    from rasterio.windows import Window

    out = np.zeros((window.size, window.size), dtype=np.uint8)
    parts, missing, synthetic, crs, used = [], [], False, None, []
    tiles = window.tiles()
    for k, (tile, lon0, lat0) in enumerate(tiles):
        if on_tile is not None:
            on_tile(k, len(tiles), tile)
        limits = {}
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SourceUnreachableError(f"Reading tile {tile} from {source.describe()} ran "
                                             "out of time. Try again later.")
            cap = max(1, math.ceil(left))
            limits = {key: min(GDAL_ENV[key], cap) for key in
                      ("GDAL_HTTP_TIMEOUT", "GDAL_HTTP_CONNECTTIMEOUT", "GDAL_HTTP_LOW_SPEED_TIME")}
        t_row, t_col = tile_global_offset(lon0, lat0)
        r0, c0 = max(window.row, t_row), max(window.col, t_col)
        r1 = min(window.row + window.size, t_row + TILE_PIXELS)
        c1 = min(window.col + window.size, t_col + TILE_PIXELS)
        tile_window = Window(c0 - t_col, r0 - t_row, c1 - c0, r1 - r0)
        box = [int(tile_window.col_off), int(tile_window.row_off), int(tile_window.width),
               int(tile_window.height)]
        path, where = _tile_source(tile, source)
        try:
            with rasterio.Env(**_gdal_env(source, **limits)):
                try:
                    src = rasterio.open(path)
                except Exception as exc:  # rasterio raises RasterioIOError / CPLE_* variants
                    raise _classify_open_error(exc, tile, path, source) from exc
                with src:
                    if src.crs is None and _is_remote(path):  # GDAL gave up inside the header
                        raise SourceUnreachableError(
                            f"Tile {tile} from {where} came without its georeferencing: the "
                            "connection most likely broke while its header was read. Try again; "
                            "if it keeps happening, check that file on the mirror.")
                    check_tile_grid(src, tile, lon0, lat0, redact_text(path))
                    try:
                        block = src.read(1, window=tile_window)
                    except Exception as exc:
                        raise _part_way_error(exc, tile, path, where) from exc
                    info = _tile_tags(src, tile)
                    synthetic |= SYNTHETIC_TAG in src.tags()
                    crs = str(src.crs)
        except MissingTileError:
            try:
                check_missing_tile_is_sea(tile, lon0, lat0, source)
            except LandTileMissingError:
                _forget_remote_failures(source)  # the mirror may get the file later
                raise
            missing.append(tile)
            parts.append({"tile": tile, "status": NOT_PUBLISHED, "path": redact_text(path),
                          "window": box})
            continue
        except SourceUnreachableError as exc:
            _forget_remote_failures(source)
            bundled = [t for t, _, _ in tiles if t != tile and bundled_tile_path(t) is not None]
            if bundled:  # offline past the bundled tile: say how to stay inside it
                try:
                    check_missing_tile_is_sea(tile, lon0, lat0, source)
                    what = "which can't be checked without the network"
                except LandTileMissingError:
                    what = "which holds land (GLOBE 1 km land mask) and can't be read offline"
                raise SourceUnreachableError(
                    f"{exc} This region reaches past the bundled sample tile {bundled[0]} into "
                    f"{tile}, {what}. Move the centre so the region stays inside "
                    f"{bundled[0]}, or make the region smaller.") from exc
            raise
        except TileFileError:
            _forget_remote_failures(source)
            raise
        out[r0 - window.row:r1 - window.row, c0 - window.col:c1 - window.col] = block
        used.append(where)
        parts.append({"tile": tile, "status": "read", "path": redact_text(path), "source": where,
                      "window": box, **info})
    if missing:
        _forget_remote_failures(source)  # GDAL caches a 404 too; a mirror may add the tile later
    if not used:
        raise MissingTileError(missing[0], source.describe())
    return out, {"tiles": parts, "crs": crs, "synthetic": synthetic,
                 "source": " and ".join(dict.fromkeys(used))}


def tile_notes(provenance: dict) -> list[str]:
    """One sentence per tile of the region read as no-data because the source has no file."""
    return [f"Tile {t['tile']} has no file at {t['path']} and holds no land in the GLOBE 1 km "
            "land mask: it is open sea, which ESA does not publish, so that part of the region is "
            "no-data."
            for t in provenance.get("tiles", []) if t.get("status") == NOT_PUBLISHED]


_HAS_TILE: dict[tuple[DataSource, str], tuple[bool, float]] = {}
NEGATIVE_TTL_S = 60.0  # a "no" for a remote source is asked again after this long


def source_has_tile(tile: str, source: DataSource, timeout: float = 3.0) -> bool:
    """True when `tile` can be read from `source` or from the bundled sample; never raises.

    Folder sources: the file exists. Remote sources: the file opens within about `timeout` s
    (one bounded HEAD/range request, no retries); answers are cached per process, a "no" only for
    NEGATIVE_TTL_S so a network that comes back is noticed."""
    if bundled_tile_path(tile) is not None:
        return True
    if source.kind == "folder":
        return Path(source.tile_path(tile)).is_file()
    known = _HAS_TILE.get((source, tile))
    if known and (known[0] or time.monotonic() - known[1] < NEGATIVE_TTL_S):
        return known[0]
    answer = {}

    def probe():
        import rasterio

        env = _gdal_env(source, GDAL_HTTP_TIMEOUT=max(1, math.ceil(timeout)),
                        GDAL_HTTP_CONNECTTIMEOUT=max(1, math.ceil(timeout)),
                        GDAL_HTTP_LOW_SPEED_TIME=max(1, math.ceil(timeout)), GDAL_HTTP_MAX_RETRY=0)
        try:
            with rasterio.Env(**env), rasterio.open(source.tile_path(tile)):
                answer["ok"] = True
        except Exception:
            _forget_remote_failures(source)

    thread = threading.Thread(target=probe, daemon=True, name=f"probe-{tile}")
    thread.start()
    thread.join(timeout + 1)  # GDAL's own timeouts end the request; this bounds DNS too
    ok = bool(answer.get("ok"))
    _HAS_TILE[(source, tile)] = (ok, time.monotonic())
    return ok


def default_presets(source: DataSource | None = None) -> list[RoiSpec]:
    """The notebook's three ROIs when their tile N27E075 is reachable or any of them is cached
    for `source`, else SAMPLE_ROIS (the bundled Sao Tome / Principe tile, readable offline)."""
    source = source or data_source_from_env()
    if any(cache_path(roi_window(s), source).exists() for s in NOTEBOOK_ROIS):
        return list(NOTEBOOK_ROIS)
    return list(NOTEBOOK_ROIS) if source_has_tile(NOTEBOOK_TILE, source) else list(SAMPLE_ROIS)


# --- cache -----------------------------------------------------------------------------------
def data_dir() -> Path:
    """BHARATEO_DATA_DIR, default data/ (bharateo/config/environment.py)."""
    from bharateo.config import environment

    return environment.DATA_DIR.get()


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


def _disk_fault(exc: OSError, folder: Path) -> str:
    """Plain words for an OSError met writing into `folder`: what is wrong, where, what to do."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"the disk holding {folder} is full; free some space there or set "
                "BHARATEO_DATA_DIR to a folder on another disk")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"the folder {folder} is read-only (no permission to write there); make it "
                "writable or set BHARATEO_DATA_DIR to a writable folder")
    return f"writing in {folder} failed ({exc.strerror or exc}); check the folder and the disk"


def _with_deadline(fn, timeout_s: float, what: str, on_wait=None):
    """fn() in a worker thread, given up after `timeout_s` s in all -> its result or exception.

    The caller's thread waits in 0.25 s steps, calling on_wait(elapsed_s) each step (progress; a
    page stays drawn). On timeout raises SourceUnreachableError naming `what`; the thread is a
    daemon and ends when GDAL's own per-request limits (capped to the deadline) end its request."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="roi-read")
    start = time.monotonic()
    thread.start()
    while thread.is_alive():
        elapsed = time.monotonic() - start
        if elapsed >= timeout_s:
            raise SourceUnreachableError(
                f"{what} got no complete answer within {timeout_s:.0f} s (the server accepts the "
                "connection but stalls, or the network is too slow), so the read was given up. "
                "Try again later, or work offline: run `python -m bharateo prefetch` while online, "
                "or set BHARATEO_WORLDCOVER_DIR to a folder holding the tiles. "
                "BHARATEO_READ_TIMEOUT_S sets this limit.")
        if on_wait is not None:
            on_wait(elapsed)
        thread.join(min(0.25, timeout_s - elapsed))
    if "error" in result:
        raise result["error"]
    return result["value"]


def tile_extent_text(tile: str) -> str:
    """'N00E006' -> 'lon 6–9 E, lat 0–3 N' (a tile is TILE_DEGREES square from its SW corner)."""
    lat0 = int(tile[1:3]) * (1 if tile[0] == "N" else -1)
    lon0 = int(tile[4:7]) * (1 if tile[3] == "E" else -1)
    lon1, lat1 = lon0 + TILE_DEGREES, lat0 + TILE_DEGREES
    return (f"lon {abs(lon0)}–{abs(lon1)} {'E' if lon1 > 0 else 'W'}, "
            f"lat {abs(lat0)}–{abs(lat1)} {'N' if lat1 > 0 else 'S'}")


def offline_advice(window: GlobalWindow, said: str = "") -> str:
    """What to add to `said`, a message saying `window` couldn't be read for lack of network: the
    tiles it needs, where the bundled tiles are (for a window touching none of them; read_window
    advises a window that runs past one) and, unless `said` says it, how to get more tiles.
    '' when no tile is bundled or the window touches one."""
    bundled = [t for t in SAMPLE_TILES if bundled_tile_path(t) is not None]
    needed = [t for t, _, _ in window.tiles()]
    if not bundled or any(t in bundled for t in needed):
        return ""
    at_hand = "; ".join(f"tile {t} ({tile_extent_text(t)})" for t in bundled)
    more = ("" if "BHARATEO_WORLDCOVER_DIR" in said else
            " For other places, set BHARATEO_WORLDCOVER_DIR to a folder of tiles, or run "
            "`python -m bharateo prefetch` while online.")
    return (f" This region needs tile{'s' if len(needed) > 1 else ''} {', '.join(needed)}; the "
            f"WorldCover pixels at hand offline are the bundled sample's, {at_hand}: a region "
            f"inside it works now.{more}")


def load_roi(spec: RoiSpec, source: DataSource | None = None, use_cache: bool = True,
             progress=None, timeout_s: float | None = None) -> Roi:
    """Read one ROI (from the cache when it is there and sound) -> Roi.

    A read from the source takes at most `timeout_s` seconds in all (default read_timeout_s(),
    BHARATEO_READ_TIMEOUT_S); `progress(fraction, text)` is called from the caller's thread about
    4 times a second while it runs. A cache file that is damaged or holds another region is moved
    aside (a note says so) and the region read again. A region that can't be cached (read-only or
    full data/) is returned all the same, with `cache_error` and a note saying why.
    Raises RegionError for a region that is mostly sea / outside coverage, MissingTileError for a
    tile the source lacks, TileFileError for a damaged or wrong tile file, SourceUnreachableError
    when the source can't be reached in time (saying so when a damaged cache was moved aside).
    """
    source = source or data_source_from_env()
    window = roi_window(spec)
    path = cache_path(window, source)
    binding = cache_binding(window, source)
    notes = []
    if use_cache and path.exists():
        try:
            native, provenance = read_cache(path, binding)
            provenance["source"] = f"local cache of {provenance['source']}"
            provenance.update(name=spec.name, center_lon_lat=[spec.lon, spec.lat])
            land = land_read_as_sea(provenance)
            if not land:
                return Roi(spec, native, provenance, notes + tile_notes(provenance))
            notes.append(f"The cached copy of this region read tile {', '.join(land)} as open sea "
                         "(no-data), but it holds land: the region is read again.")
        except Exception as exc:  # truncated zip, bad checksum, another region's file, ...
            aside = path.with_suffix(".corrupt")
            why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            try:
                os.replace(path, aside)
                moved = f"it was moved to {aside.name}"
            except FileNotFoundError:  # another process recovered it first
                moved = "another reader already moved it aside"
            except OSError as err:
                moved = f"it could not be moved aside ({_disk_fault(err, path.parent)})"
            notes.append(f"The cache file {path.name} was damaged ({redact_text(why)[:200]}); "
                         f"{moved} and the region read again.")
            log.warning(notes[-1])

    timeout_s = read_timeout_s() if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    stage = {"text": f"asking {source.describe()}…", "fraction": 0.0}

    def on_tile(k, n, tile):
        stage.update(text=f"tile {tile} ({k + 1} of {n}) from {source.describe()}",
                     fraction=k / n)

    def on_wait(elapsed):
        if progress is not None:
            progress(stage["fraction"], f"{spec.name}: {stage['text']}, {elapsed:.0f} s "
                                        f"(gives up after {timeout_s:.0f} s)")

    try:
        native, read_info = _with_deadline(lambda: read_window(window, source, deadline, on_tile),
                                           timeout_s, f"Reading the {spec.size} px region at "
                                           f"{spec.lon:.4f}E {spec.lat:.4f}N from "
                                           f"{source.describe()}", on_wait)
    except BharatEOError as exc:
        if isinstance(exc, SourceUnreachableError) and source.kind != "folder":  # the network
            exc.args = (f"{exc}{offline_advice(window, str(exc))}",)
        if notes and not isinstance(exc, RegionError):  # a damaged cache, and no way to re-read
            exc.args = (f"The cached copy of this region was damaged and moved aside, and the "
                        f"region could not be read again: {exc}",)
        raise
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
    cache_error = ""
    if use_cache:
        try:
            write_cache(path, native, provenance, binding)
        except OSError as exc:  # read-only or full data/: keep the region, say so
            cache_error = _disk_fault(exc, path.parent)
            notes.append(f"This region was read but not saved to the cache: {cache_error}. "
                         "The lesson goes on with it in memory; it will be read from the source "
                         "again next time.")
            log.warning(notes[-1])
    return Roi(spec, native, provenance, notes + tile_notes(provenance), cache_error)


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
