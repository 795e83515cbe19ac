"""Sentinel-2 L2A reflectance for a region, with WorldCover labels on the same grid.

The notebook's next step ("the only change to the pipeline is the source of the pixels"): a
region is a square of `size` pixels on a Sentinel-2 scene's own grid (its UTM zone, 10 m), centred
on lon/lat. This module
  1. finds the scene: a STAC API search (pystac-client) for the region, a date range and a cloud
     limit, or the scenes of a local folder (BHARATEO_S2_DIR: <scene>/B02.tif ... SCL.tif plus the
     scene's STAC item JSON); of the scenes that cover the whole region, the least cloudy wins;
  2. reads only the region's window of each band with rasterio (GDAL /vsicurl/ range requests for
     URLs, the same bounded GDAL settings as WorldCover, see roi.GDAL_ENV); the 20 m bands (B05
     B06 B07 B8A B11 B12, SCL) are put on the 10 m grid by repeating each pixel 2 x 2 (nearest:
     measured values are kept, never blended across a cloud edge);
  3. turns digital numbers into reflectance: (DN + offset) / 10000, offset -1000 for processing
     baseline >= 04.00 unless the item says it was applied already (reflectance_rule);
  4. makes no-data: a band's no-data (DN 0) and the Scene Classification Layer's classes in
     SCL_NODATA_CLASSES (no data, saturated/defective, cloud shadow, cloud medium/high
     probability, thin cirrus) are WorldCover code 0 in the region's label map, so the project's
     one no-data rule (bharateo/chips.py) applies unchanged;
  5. reprojects WorldCover (EPSG:4326) onto the region's UTM grid with a class-preserving
     resampling (worldcover_on_grid) for the patch labels;
  6. caches each region under data/ like WorldCover regions: atomic write, checksum bound to the
     region and query, provenance (scene id, date, cloud cover, bands, CRS, MGRS tile).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bharateo.errors import (BharatEOError, ConfigError, RegionError, SourceUnreachableError,
                             TileFileError)
from bharateo.roi import (
    GDAL_ENV,
    MAX_NODATA_FRACTION,
    GlobalWindow,
    Roi,
    RoiSpec,
    _disk_fault,
    _with_deadline,
    atomic_write_bytes,
    data_dir,
    read_timeout_s,
    read_window,
)
from bharateo.sources import PIXEL_SOURCES, S2_BANDS_4, S2_BANDS_10
from bharateo.worldcover import (
    NODATA,
    PIXELS_PER_DEGREE,
    DataSource,
    data_source_from_env,
    redact_text,
    redact_url,
)

log = logging.getLogger(__name__)

# --- bands (ESA Sentinel-2 MSI; names as in the L2A product and its COGs) ----------------------
BANDS_10, BANDS_4 = S2_BANDS_10, S2_BANDS_4  # the bands of sources "s2-10band" and "s2-4band"
BAND_NAMES = {"B02": "blue", "B03": "green", "B04": "red", "B05": "red edge 1",
              "B06": "red edge 2", "B07": "red edge 3", "B08": "near infrared",
              "B8A": "narrow near infrared", "B11": "short-wave infrared 1.6 µm",
              "B12": "short-wave infrared 2.2 µm"}
BAND_RESOLUTION_M = {**dict.fromkeys(("B02", "B03", "B04", "B08"), 10),
                     **dict.fromkeys(("B05", "B06", "B07", "B8A", "B11", "B12", "SCL"), 20)}
# STAC asset keys: Earth Search v1 uses common names, older catalogues (and folders) band ids
ASSET_KEYS = {"B02": ("blue", "B02"), "B03": ("green", "B03"), "B04": ("red", "B04"),
              "B05": ("rededge1", "B05"), "B06": ("rededge2", "B06"), "B07": ("rededge3", "B07"),
              "B08": ("nir", "B08"), "B8A": ("nir08", "B8A"), "B11": ("swir16", "B11"),
              "B12": ("swir22", "B12"), "SCL": ("scl", "SCL")}
S2_SOURCES = {name: PIXEL_SOURCES[name].bands for name in ("s2-4band", "s2-10band")}
TRUE_COLOUR = ("B04", "B03", "B02")  # the notebook: "B4-B3-B2 true color"
FALSE_COLOUR = ("B08", "B04", "B03")  # "B8-B4-B3 false color" (vegetation red)
# Scene Classification Layer classes that are no-data for the model (ESA, Sentinel-2 L2A
# Product Specification / Sen2Cor SCL legend).
SCL_NODATA_CLASSES = {0: "no data", 1: "saturated or defective", 3: "cloud shadow",
                      8: "cloud, medium probability", 9: "cloud, high probability",
                      10: "thin cirrus"}
BAND_NODATA_DN = 0  # L2A band no-data value
QUANTIFICATION_VALUE = 10000  # L2A: reflectance = (DN + BOA_ADD_OFFSET) / 10000
BOA_ADD_OFFSET = -1000  # processing baseline >= 04.00 (products since 25 Jan 2022)
OFFSET_BASELINE = 4.0
DEFAULT_STAC_URL = "https://earth-search.aws.element84.com/v1"  # Element 84 Earth Search
DEFAULT_COLLECTION = "sentinel-2-l2a"
DEFAULT_DATES = "2021-01-01/2021-12-31"  # WorldCover 2021's year
DEFAULT_MAX_CLOUD = 20.0
SEARCH_MAX_ITEMS = 200
SEARCH_TIMEOUT_S = 15.0
S2_LABEL = "Sentinel-2 L2A reflectance"
ATTRIBUTION = "Contains modified Copernicus Sentinel data"


# --- where scenes come from ----------------------------------------------------------------
@dataclass(frozen=True)
class S2Source:
    """Where Sentinel-2 scenes come from: a STAC API (`kind` "stac", `location` its URL) or a
    local folder of scenes (`kind` "folder")."""

    kind: str  # "stac" | "folder"
    location: str
    collection: str = DEFAULT_COLLECTION

    def __repr__(self) -> str:  # never credentials in logs
        return f"S2Source(kind={self.kind!r}, location={self.shown!r})"

    @property
    def shown(self) -> str:
        return self.location if self.kind == "folder" else redact_url(self.location)

    def describe(self) -> str:
        return (f"the Sentinel-2 folder {self.location}" if self.kind == "folder" else
                f"the STAC API at {self.shown} (collection {self.collection})")

    @property
    def cache_key(self) -> str:
        digest = hashlib.sha256(f"{self.kind}:{self.shown}:{self.collection}".encode()).hexdigest()
        return f"{self.kind}-{digest[:10]}"


def s2_source_from_env() -> S2Source:
    """BHARATEO_S2_DIR (a folder of scenes) wins, then BHARATEO_S2_STAC_URL, else Earth Search
    (DEFAULT_STAC_URL); BHARATEO_S2_COLLECTION names the collection (default sentinel-2-l2a)."""
    collection = os.environ.get("BHARATEO_S2_COLLECTION", "").strip() or DEFAULT_COLLECTION
    folder = os.environ.get("BHARATEO_S2_DIR", "").strip()
    if folder:
        return S2Source("folder", str(Path(folder).expanduser().resolve()), collection)
    url = os.environ.get("BHARATEO_S2_STAC_URL", "").strip() or DEFAULT_STAC_URL
    return S2Source("stac", url.rstrip("/"), collection)


@dataclass(frozen=True)
class S2Query:
    """What a region's scene must satisfy: sensed within `dates` ("YYYY-MM-DD/YYYY-MM-DD",
    inclusive) with at most `max_cloud` % cloud over the scene (its eo:cloud_cover)."""

    dates: str = DEFAULT_DATES
    max_cloud: float = DEFAULT_MAX_CLOUD

    def days(self) -> tuple[dt.date, dt.date]:
        """(first, last) day. ConfigError for text that is not two ISO dates in order."""
        m = re.fullmatch(r"\s*(\d{4}-\d{2}-\d{2})\s*/\s*(\d{4}-\d{2}-\d{2})\s*", str(self.dates))
        try:
            first, last = (dt.date.fromisoformat(m.group(i)) for i in (1, 2))
        except (AttributeError, ValueError):
            raise ConfigError(f"Sentinel-2 dates must be a range like 2021-01-01/2021-03-31 (got "
                              f"{self.dates!r}).") from None
        if last < first:
            raise ConfigError(f"The Sentinel-2 date range {self.dates} ends before it starts.")
        return first, last

    def check(self) -> "S2Query":
        self.days()
        if isinstance(self.max_cloud, bool) or not isinstance(self.max_cloud, (int, float)) or \
                not 0 <= self.max_cloud <= 100:
            raise ConfigError(f"The Sentinel-2 cloud limit must be a percentage from 0 to 100 "
                              f"(got {self.max_cloud!r}).")
        return self


@dataclass(frozen=True)
class Scene:
    """One Sentinel-2 L2A scene: its id, sensing time, cloud cover, footprint and band files."""

    id: str
    datetime: str  # ISO 8601, UTC
    cloud_cover: float | None  # % of the scene (eo:cloud_cover)
    hrefs: dict  # band id ("B02", ..., "SCL") -> file path or URL
    footprint: dict | None  # GeoJSON geometry in lon/lat, None if the item has none
    properties: dict = field(default_factory=dict)  # the item's properties (baseline, MGRS, ...)

    @property
    def date(self) -> dt.date:
        return dt.datetime.fromisoformat(self.datetime.replace("Z", "+00:00")).date()

    @property
    def mgrs_tile(self) -> str | None:
        p = self.properties
        if "grid:code" in p:
            return str(p["grid:code"]).removeprefix("MGRS-")
        if all(k in p for k in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square")):
            return f"{p['mgrs:utm_zone']}{p['mgrs:latitude_band']}{p['mgrs:grid_square']}"
        m = re.search(r"_(\d{2}[C-X][A-Z]{2})_", self.id)
        return m.group(1) if m else None


def scene_from_item(item: dict, base: Path | None = None) -> Scene:
    """A STAC item (a dict) -> Scene. Band hrefs come from the assets named in ASSET_KEYS
    (relative hrefs are taken relative to `base`). RegionError naming what is missing."""
    if not isinstance(item, dict) or not isinstance(item.get("properties"), dict):
        raise RegionError("A STAC item without properties can't be used as a Sentinel-2 scene.")
    props, assets = item["properties"], item.get("assets") or {}
    hrefs = {}
    for band, keys in ASSET_KEYS.items():
        for key in keys:
            href = (assets.get(key) or {}).get("href")
            if isinstance(href, str) and href:
                if base is not None and "://" not in href and not Path(href).is_absolute():
                    href = str(base / href)
                hrefs[band] = href
                break
    cloud = props.get("eo:cloud_cover")
    return Scene(id=str(item.get("id", "?")), datetime=str(props.get("datetime", "")),
                 cloud_cover=float(cloud) if isinstance(cloud, (int, float)) else None,
                 hrefs=hrefs, footprint=item.get("geometry"), properties=props)


def folder_scenes(folder: Path) -> tuple[list[Scene], list[str]]:
    """Scenes of a local folder: each sub-folder holding a STAC item (*.json) and band files named
    B02.tif ... B12.tif, SCL.tif (the layout of the shared crop); band files present in the
    folder are used whatever the item's hrefs say. -> (scenes, notes on folders skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceUnreachableError(f"The Sentinel-2 folder {folder} (BHARATEO_S2_DIR) does not "
                                     "exist. Set BHARATEO_S2_DIR to a folder of scene folders.")
    scenes, notes = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        items = sorted(sub.glob("*.json"))
        if not items:
            notes.append(f"{sub.name}: no STAC item JSON, skipped")
            continue
        try:
            item = json.loads(items[0].read_text())
            scene = scene_from_item(item)
        except (OSError, ValueError, RegionError) as exc:
            notes.append(f"{sub.name}: its item {items[0].name} is unreadable ({exc}), skipped")
            continue
        local = {band: str(sub / f"{band}.tif") for band in ASSET_KEYS
                 if (sub / f"{band}.tif").is_file()}
        scenes.append(replace(scene, hrefs=local))
    return scenes, notes


def stac_scenes(source: S2Source, bbox, query: S2Query) -> list[Scene]:
    """Items of `source.collection` intersecting `bbox` (W, S, E, N degrees) in the query's date
    range with eo:cloud_cover <= max_cloud, through pystac-client (STAC API item search).
    SourceUnreachableError when the API can't be reached or answers with something else."""
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    first, last = query.days()
    try:
        client = Client.open(source.location, timeout=SEARCH_TIMEOUT_S)
        search = client.search(collections=[source.collection], bbox=list(bbox),
                               datetime=f"{first.isoformat()}/{last.isoformat()}",
                               query={"eo:cloud_cover": {"lte": query.max_cloud}},
                               max_items=SEARCH_MAX_ITEMS)
        items = [item.to_dict() for item in search.items()]
    except (APIError, OSError, ValueError, KeyError, TypeError, NotImplementedError) as exc:
        import requests

        why = ("no answer" if isinstance(exc, requests.exceptions.ConnectionError) else
               "it is not a STAC API with item search" if isinstance(exc, NotImplementedError) else
               redact_text(str(exc))[:200])
        raise SourceUnreachableError(
            f"The Sentinel-2 search at {source.shown} failed ({why}). Check the network and try "
            "again, or work offline: prefetch the region while online, or set BHARATEO_S2_DIR to "
            "a folder of scenes.") from None
    return [scene_from_item(item) for item in items]


# --- choosing the scene ----------------------------------------------------------------------
def _in_ring(x: float, y: float, ring) -> bool:
    """Even-odd point-in-polygon test for one ring of (lon, lat) points."""
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1]):
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def footprint_contains(geometry: dict | None, points) -> bool:
    """True when every (lon, lat) point lies inside the GeoJSON Polygon/MultiPolygon `geometry`
    (holes respected); True when the item gives no footprint (the raster extent decides then)."""
    if not geometry:
        return True
    kind, coords = geometry.get("type"), geometry.get("coordinates") or []
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else None
    if polygons is None:
        return True
    rings = [[[list(map(float, p[:2])) for p in ring] for ring in poly] for poly in polygons]

    def inside(x, y):
        return any(_in_ring(x, y, poly[0]) and not any(_in_ring(x, y, h) for h in poly[1:])
                   for poly in rings)
    return all(inside(x, y) for x, y in points)


def in_range(scene: Scene, query: S2Query) -> bool:
    """True when the scene was sensed within the query's dates (UTC day) with at most its cloud
    limit (a scene without eo:cloud_cover is let through: the region's own cloud is checked)."""
    first, last = query.days()
    try:
        day = scene.date
    except ValueError:
        return False
    return first <= day <= last and (scene.cloud_cover is None or scene.cloud_cover <= query.max_cloud)


@dataclass(frozen=True)
class RegionGrid:
    """A region's pixel grid on a scene: CRS, affine transform of its north-west pixel, size."""

    crs: str
    transform: tuple  # (a, b, c, d, e, f) of the region's window (10 m grid)
    size: int
    window: tuple[int, int]  # (row, col) of the region in the scene's 10 m band raster
    scene_shape: tuple[int, int]

    @property
    def pixel_m(self) -> float:
        return float(self.transform[0])

    def corners_lonlat(self) -> list[tuple[float, float]]:
        """(lon, lat) of the region's 4 corners and edge midpoints (for footprint checks)."""
        from rasterio.warp import transform as warp

        a, _, c, _, e, f = self.transform
        s = self.size
        xs = [c + a * i for i in (0, s / 2, s) for _ in range(3)]
        ys = [f + e * j for _ in range(3) for j in (0, s / 2, s)]
        lons, lats = warp(self.crs, "EPSG:4326", xs, ys)
        return list(zip(lons, lats))

    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees of everything the region covers."""
        from rasterio.warp import transform_bounds

        a, _, c, _, e, f = self.transform
        return transform_bounds(self.crs, "EPSG:4326", c, f + e * self.size, c + a * self.size, f,
                                densify_pts=21)


def region_grid(spec: RoiSpec, crs, transform, shape) -> RegionGrid | None:
    """The `spec.size` px square centred on spec's lon/lat on a raster of `crs`/`transform`/
    `shape` (the scene's 10 m band), or None when it doesn't fit inside that raster."""
    from rasterio.warp import transform as warp

    xs, ys = warp("EPSG:4326", crs, [spec.lon], [spec.lat])
    col = math.floor((xs[0] - transform.c) / transform.a)
    row = math.floor((ys[0] - transform.f) / transform.e)
    row0, col0 = row - spec.size // 2, col - spec.size // 2
    if row0 < 0 or col0 < 0 or row0 + spec.size > shape[0] or col0 + spec.size > shape[1]:
        return None
    t = transform
    return RegionGrid(str(crs), (t.a, t.b, t.c + col0 * t.a, t.d, t.e, t.f + row0 * t.e),
                      spec.size, (row0, col0), tuple(shape))


def _open(href: str):
    import rasterio

    return rasterio.open(href)


def _env(deadline: float | None = None) -> dict:
    env = dict(GDAL_ENV)
    if deadline is not None:
        cap = max(1, math.ceil(deadline - time.monotonic()))
        for key in ("GDAL_HTTP_TIMEOUT", "GDAL_HTTP_CONNECTTIMEOUT", "GDAL_HTTP_LOW_SPEED_TIME"):
            env[key] = min(GDAL_ENV[key], cap)
    return env


def _band_error(exc: Exception, scene: Scene, band: str) -> BharatEOError:
    href = redact_text(scene.hrefs.get(band, "?"))
    text = redact_text(exc.__cause__ or exc)[:200]
    if re.search(r"HTTP response code: (403|404|410)", text):
        return TileFileError(f"Band {band} of scene {scene.id} is not on the server ({href}: "
                             f"{text}). The catalogue lists a file that isn't there: pick other "
                             "dates, or try again later.")
    if "://" in scene.hrefs.get(band, "") and re.search(r"CURL|HTTP|timed out|Connection", text, re.I):
        return SourceUnreachableError(
            f"Band {band} of scene {scene.id} could not be read from {href} ({text}). Check the "
            "network and try again, or prefetch the region while online.")
    return TileFileError(f"Band {band} of scene {scene.id} ({href}) is missing, damaged or not a "
                         f"GeoTIFF ({text}). Copy the scene again.")


def choose_scene(spec: RoiSpec, scenes: list[Scene], query: S2Query, where: str,
                 deadline: float | None = None) -> tuple[Scene, RegionGrid]:
    """The least cloudy scene in the query's range whose raster and footprint hold the whole
    region -> (scene, the region's grid on it). Ties: the earlier date, then the id.

    RegionError saying what to change when no scene is in range, or none covers the region."""
    import rasterio

    candidates = sorted((s for s in scenes if in_range(s, query)),
                        key=lambda s: (s.cloud_cover if s.cloud_cover is not None else 101,
                                       s.datetime, s.id))
    what = (f"between {query.dates.replace('/', ' and ')} with at most {query.max_cloud:g} % "
            f"cloud at {spec.lon:.4f}E {spec.lat:.4f}N")
    if not candidates:
        raise RegionError(f"No Sentinel-2 L2A scene in {where} {what}. Widen the dates, raise the "
                          "cloud limit, or pick a place the source has scenes for.")
    tried = []
    for scene in candidates:
        if not footprint_contains(scene.footprint, [(spec.lon, spec.lat)]):  # no need to open it
            tried.append(f"{scene.id} (the centre is outside its data footprint)")
            continue
        if "B02" not in scene.hrefs:
            tried.append(f"{scene.id} (no B02 band file)")
            continue
        try:
            with rasterio.Env(**_env(deadline)), _open(scene.hrefs["B02"]) as src:
                grid = region_grid(spec, src.crs, src.transform, src.shape)
        except Exception as exc:
            raise _band_error(exc, scene, "B02") from exc
        if grid is None:
            tried.append(f"{scene.id} (the region runs past its edge)")
        elif not footprint_contains(scene.footprint, grid.corners_lonlat()):
            tried.append(f"{scene.id} (part of the region is outside its data footprint)")
        else:
            return scene, grid
    raise RegionError(
        f"No Sentinel-2 scene {what} covers the whole {spec.size} px region: "
        + "; ".join(tried[:4]) + (" ..." if len(tried) > 4 else "")
        + ". Move the centre further inside the scene, make the region smaller, or widen the dates.")


# --- reading -------------------------------------------------------------------------------
def reflectance_rule(scene: Scene) -> tuple[int, str]:
    """(offset added to every DN before / 10000, the reason, for the provenance).

    Processing baseline 04.00 (25 Jan 2022) added BOA_ADD_OFFSET = -1000 to L2A DNs. Earth
    Search says in `earthsearch:boa_offset_applied` whether its COGs already carry it removed;
    its maintainers call that flag the truth (raster:bands offsets were sometimes wrong:
    Element84/earth-search#9), so: flag true -> 0; else baseline (s2:processing_baseline) >= 04.00
    -> -1000; else 0."""
    p = scene.properties
    baseline = p.get("s2:processing_baseline", p.get("sentinel:processing_baseline"))
    try:
        number = float(baseline)
    except (TypeError, ValueError):
        number = None
    applied = p.get("earthsearch:boa_offset_applied", p.get("sentinel:boa_offset_applied"))
    if applied is True:
        return 0, "reflectance = DN / 10000 (earthsearch:boa_offset_applied: the offset was removed)"
    if number is not None and number >= OFFSET_BASELINE:
        return BOA_ADD_OFFSET, (f"reflectance = (DN - 1000) / 10000 (processing baseline "
                                f"{baseline} >= 04.00 carries BOA_ADD_OFFSET -1000)")
    if number is not None:
        return 0, f"reflectance = DN / 10000 (processing baseline {baseline} < 04.00: no offset)"
    return 0, ("reflectance = DN / 10000 (the item gives no processing baseline; scenes sensed "
               "from 25 Jan 2022 may need an offset of -1000)")


def read_band(href: str, grid: RegionGrid, band: str, scene: Scene) -> np.ndarray:
    """The region's window of one band file on the region's 10 m grid -> size x size array.

    A band of coarser resolution (an integer factor k of the 10 m grid with the same origin, e.g.
    the 20 m bands) is read on its own grid over the covering window and each pixel repeated k x k
    (nearest), so only that band's bytes of the region are fetched. TileFileError for a band not
    on the scene's grid."""
    from rasterio.windows import Window

    row, col = grid.window
    s = grid.size
    a, _, c, _, e, f = grid.transform
    x0, y0 = c - col * a, f - row * e  # the scene's 10 m origin
    with _open(href) as src:
        t = src.transform
        k = t.a / a
        if (round(k) < 1 or abs(k - round(k)) > 1e-6 or abs(t.e / e - k) > 1e-6
                or abs(t.c - x0) > a / 100 or abs(t.f - y0) > a / 100 or str(src.crs) != grid.crs):
            raise TileFileError(
                f"Band {band} of scene {scene.id} is not on the scene's grid (pixel {t.a:g} m, "
                f"origin {t.c:.0f}, {t.f:.0f}, {src.crs}; the 10 m band has {a:g} m, origin "
                f"{x0:.0f}, {y0:.0f}, {grid.crs}). Use the scene's own band files.")
        k = round(k)
        r0, c0 = row // k, col // k
        r1, c1 = -(-(row + s) // k), -(-(col + s) // k)
        block = src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
    if k > 1:
        block = block.repeat(k, axis=0).repeat(k, axis=1)
        block = block[row - r0 * k: row - r0 * k + s, col - c0 * k: col - c0 * k + s]
    return block


def read_scene_window(scene: Scene, grid: RegionGrid, bands, deadline: float | None = None,
                      on_band=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (C x S x S uint16 DNs of `bands`, S x S uint8 SCL, S x S bool valid).

    Valid: every band's DN is not BAND_NODATA_DN and SCL is not in SCL_NODATA_CLASSES. A scene
    without an SCL file is read with only band no-data (a note in the provenance says so)."""
    import rasterio

    wanted = list(bands) + (["SCL"] if "SCL" in scene.hrefs else [])
    out = np.zeros((len(bands), grid.size, grid.size), np.uint16)
    scl = np.full((grid.size, grid.size), 255, np.uint8)  # 255: no SCL (not a class)
    for i, band in enumerate(wanted):
        if on_band is not None:
            on_band(i, len(wanted), band)
        if deadline is not None and time.monotonic() > deadline:
            raise SourceUnreachableError(f"Reading scene {scene.id} ran out of time at band {band}. "
                                         "Try again later, or prefetch the region while online.")
        if band not in scene.hrefs:
            raise TileFileError(f"Scene {scene.id} has no {band} band file, so this source can't "
                                "be read from it. Add the file or pick another scene (dates).")
        try:
            with rasterio.Env(**_env(deadline)):
                block = read_band(scene.hrefs[band], grid, band, scene)
        except BharatEOError:
            raise
        except Exception as exc:
            raise _band_error(exc, scene, band) from exc
        if band == "SCL":
            scl = block.astype(np.uint8)
        else:
            out[i] = block
    valid = (out != BAND_NODATA_DN).all(axis=0) & ~np.isin(scl, list(SCL_NODATA_CLASSES))
    return out, scl, valid


def to_reflectance(dn: np.ndarray, offset: int) -> np.ndarray:
    """C x H x W DNs -> float32 reflectance (DN + offset) / QUANTIFICATION_VALUE (ESA L2A)."""
    return (dn.astype(np.float32) + np.float32(offset)) / np.float32(QUANTIFICATION_VALUE)


# --- WorldCover labels on the region's grid --------------------------------------------------
WC_PIXEL_DEG = 1 / PIXELS_PER_DEGREE
MODE_ABOVE_M = 20.0  # target pixels coarser than this take the most frequent class (mode)


def worldcover_on_grid(grid: RegionGrid, source: DataSource | None = None,
                       deadline: float | None = None) -> tuple[np.ndarray, dict]:
    """WorldCover native codes reprojected onto the region's UTM grid -> (S x S uint8, provenance
    of the WorldCover read: tiles, tags, synthetic, source).

    The WorldCover pixels covering the region (plus a 2 px margin) are read with roi.read_window
    (the same checks, sea tiles and sources as WorldCover regions) and reprojected with
    rasterio.warp.reproject: nearest neighbour on a 10 m grid, mode (the most frequent class)
    on a coarser one; both only ever give codes that occur in the source (class-preserving).
    GDAL's approximate transformer (0.125 px error by default) is turned off (tolerance 0), so
    each pixel takes the WorldCover pixel under its centre exactly."""
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    west, south, east, north = grid.bounds_lonlat()
    col0 = math.floor((west + 180) * PIXELS_PER_DEGREE) - 2
    row0 = math.floor((90 - north) * PIXELS_PER_DEGREE) - 2
    size = max(math.ceil((east + 180) * PIXELS_PER_DEGREE) + 2 - col0,
               math.ceil((90 - south) * PIXELS_PER_DEGREE) + 2 - row0)
    window = GlobalWindow(row0, col0, size)
    native, info = read_window(window, source or data_source_from_env(), deadline)
    src_transform = Affine(WC_PIXEL_DEG, 0, col0 * WC_PIXEL_DEG - 180,
                           0, -WC_PIXEL_DEG, 90 - row0 * WC_PIXEL_DEG)
    out = np.zeros((grid.size, grid.size), np.uint8)
    method = Resampling.mode if grid.pixel_m > MODE_ABOVE_M else Resampling.nearest
    reproject(native, out, src_transform=src_transform, src_crs=CRS.from_epsg(4326),
              src_nodata=NODATA, dst_transform=Affine(*grid.transform), dst_crs=grid.crs,
              dst_nodata=NODATA, resampling=method, tolerance=0)  # exact, not approximated
    info = {**info, "global_window": [row0, col0, size], "resampling": method.name}
    return out, info


# --- the region ------------------------------------------------------------------------------
@dataclass
class S2Roi(Roi):
    """A Sentinel-2 region: its labels (`native`, WorldCover codes on the scene's grid, 0 where
    WorldCover or the scene is no-data or cloud) and its pixels (`pixels`, C x S x S float32
    reflectance of `bands`). Chips are cut from both at the same origins."""

    pixels: np.ndarray = None
    bands: tuple = BANDS_4

    @property
    def data_label(self) -> str:
        """'Sentinel-2 L2A reflectance (scene, date); labels: <WorldCover label>'."""
        p = self.provenance
        return (f"{S2_LABEL} ({p.get('scene_id')}, {p.get('scene_date')}); labels: "
                f"{super().data_label}")

    @property
    def labels_label(self) -> str:
        return super().data_label

    @property
    def valid(self) -> np.ndarray:
        """S x S bool: pixels that are neither cloud, shadow, scene no-data nor WorldCover no-data."""
        return self.native != NODATA


def cache_path(spec: RoiSpec, bands, query: S2Query, source: S2Source, wc: DataSource) -> Path:
    """data/sentinel2/s2_<name>_<digest of cache_binding>.npz: one file per region and query."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.name)[:40] or "region"
    return data_dir() / "sentinel2" / f"s2_{safe}_{_binding_digest(spec, bands, query, source, wc)[:16]}.npz"


def cache_binding(spec: RoiSpec, bands, query: S2Query, source: S2Source, wc: DataSource) -> dict:
    """What a cache file must hold: region centre and size, bands, query and both sources' keys."""
    return {"lon": spec.lon, "lat": spec.lat, "size": spec.size, "bands": list(bands),
            "dates": query.dates, "max_cloud": query.max_cloud, "s2_source": source.cache_key,
            "worldcover_source": wc.cache_key}


def _binding_digest(spec, bands, query, source, wc) -> str:
    return hashlib.sha256(json.dumps(cache_binding(spec, bands, query, source, wc),
                                     sort_keys=True).encode()).hexdigest()


def _digest(dn: np.ndarray, native: np.ndarray, binding: dict) -> str:
    h = hashlib.sha256(json.dumps(binding, sort_keys=True).encode() + b"\0")
    h.update(dn.tobytes())
    h.update(native.tobytes())
    return h.hexdigest()


def write_cache(path: Path, dn: np.ndarray, native: np.ndarray, provenance: dict,
                binding: dict) -> None:
    """Atomically write DNs, labels, provenance and their bound checksum (OSError if it can't)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, dn=dn, native=native, provenance=np.array(json.dumps(provenance)),
                        binding=np.array(json.dumps(binding, sort_keys=True)),
                        sha256=np.array(_digest(dn, native, binding)))
    atomic_write_bytes(path, buf.getvalue())


def read_cache(path: Path, binding: dict, n_bands: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """-> (dn, native, provenance). ValueError (or a zip/OS error) for a damaged or foreign file."""
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
        dn, native = z["dn"], z["native"]
        provenance = json.loads(redact_text(z["provenance"]))
        stored, digest = json.loads(str(z["binding"])), str(z["sha256"])
    size = binding["size"]
    if stored != binding:
        raise ValueError("it holds another region or query")
    if dn.shape != (n_bands, size, size) or dn.dtype != np.uint16 or \
            native.shape != (size, size) or native.dtype != np.uint8:
        raise ValueError(f"its arrays have shapes {dn.shape} {dn.dtype} and {native.shape}")
    if _digest(dn, native, binding) != digest:
        raise ValueError("checksum mismatch: the pixels or their region were changed")
    return dn, native, provenance


def find_scene(spec: RoiSpec, query: S2Query, source: S2Source,
               deadline: float | None = None) -> tuple[Scene, RegionGrid, list[str]]:
    """The scene and grid for `spec` (choose_scene over the source's scenes) and notes."""
    notes = []
    if source.kind == "folder":
        scenes, notes = folder_scenes(Path(source.location))
        where = source.describe()
    else:
        half = spec.size * 10 / 2 / 111_320  # the region's half width in degrees at 10 m pixels
        bbox = (spec.lon - half, spec.lat - half, spec.lon + half, spec.lat + half)
        scenes = stac_scenes(source, bbox, query)
        where = source.describe()
    scene, grid = choose_scene(spec, scenes, query, where, deadline)
    return scene, grid, notes


def load_s2_roi(spec: RoiSpec, bands=BANDS_4, query: S2Query | None = None,
                source: S2Source | None = None, wc_source: DataSource | None = None,
                use_cache: bool = True, timeout_s: float | None = None, progress=None) -> S2Roi:
    """Read one Sentinel-2 region with its WorldCover labels (from the cache when sound) -> S2Roi.

    `bands`: BANDS_4 or BANDS_10 (any subset of BANDS_10). The read takes at most `timeout_s` s
    (default BHARATEO_READ_TIMEOUT_S); `progress(fraction, text)` is called while it runs.
    Raises RegionError (no scene in range, none covering the region, the region more than
    MAX_NODATA_FRACTION cloud / no-data), SourceUnreachableError, TileFileError (a band file
    damaged or off the scene's grid) with messages saying what to do."""
    query = (query or S2Query()).check()
    source = source or s2_source_from_env()
    wc_source = wc_source or data_source_from_env()
    bands = tuple(bands)
    if not bands or any(b not in BANDS_10 for b in bands):
        raise RegionError(f"Sentinel-2 bands must be among {', '.join(BANDS_10)} (got {bands}).")
    from bharateo.roi import check_roi_spec

    check_roi_spec(spec)
    path = cache_path(spec, bands, query, source, wc_source)
    binding = cache_binding(spec, bands, query, source, wc_source)
    notes = []
    if use_cache and path.exists():
        try:
            dn, native, provenance = read_cache(path, binding, len(bands))
            provenance["source"] = f"local cache of {provenance['source']}"
            provenance["name"] = spec.name
            return _make_roi(spec, bands, dn, native, provenance, notes)
        except Exception as exc:
            aside = path.with_suffix(".corrupt")
            try:
                os.replace(path, aside)
            except OSError:
                pass
            notes.append(f"The cache file {path.name} was damaged ({redact_text(exc)[:160]}); it "
                         "was moved aside and the region read again.")
    timeout_s = read_timeout_s() if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    stage = {"text": f"searching {source.describe()}…", "fraction": 0.0}

    def on_band(k, n, band):
        stage.update(text=f"band {band} ({k + 1} of {n})", fraction=k / n)

    def on_wait(elapsed):
        if progress is not None:
            progress(stage["fraction"], f"{spec.name}: {stage['text']}, {elapsed:.0f} s "
                                        f"(gives up after {timeout_s:.0f} s)")

    def read():
        scene, grid, found_notes = find_scene(spec, query, source, deadline)
        dn, scl, valid = read_scene_window(scene, grid, bands, deadline, on_band)
        stage.update(text="WorldCover labels", fraction=0.95)
        labels, wc_info = worldcover_on_grid(grid, wc_source, deadline)
        return scene, grid, found_notes, dn, scl, valid, labels, wc_info

    try:
        scene, grid, found_notes, dn, scl, valid, labels, wc_info = _with_deadline(
            read, timeout_s, f"Reading the Sentinel-2 region '{spec.name}'", on_wait)
    except SourceUnreachableError as exc:
        raise SourceUnreachableError(
            str(exc).replace("BHARATEO_WORLDCOVER_DIR to a folder holding the tiles",
                             "BHARATEO_S2_DIR to a folder of scenes")) from None
    notes += found_notes
    cloud = float(np.mean(np.isin(scl, [3, 8, 9, 10])))
    bad = float(np.mean(~valid))
    if bad > MAX_NODATA_FRACTION:
        raise RegionError(
            f"In scene {scene.id} ({scene.date}, {scene.cloud_cover:g} % cloud over the scene) "
            f"{bad:.0%} of the region is cloud, cloud shadow or no-data ({cloud:.0%} cloud or "
            "shadow): too little ground to learn from. Pick other dates or a lower cloud limit, or "
            "move the region.")
    native = np.where(valid, labels, NODATA).astype(np.uint8)
    nodata = float(np.mean(native == NODATA))
    if nodata > MAX_NODATA_FRACTION:  # the labels' own no-data: sea or outside WorldCover
        raise RegionError(
            f"The region at ({spec.lon:.3f}, {spec.lat:.3f}) is {nodata:.0%} no-data once its "
            "WorldCover labels are added (open sea, or outside WorldCover coverage). Move the "
            "centre onto land or pick a smaller region.")
    offset, rule = reflectance_rule(scene)
    provenance = {
        "name": spec.name, "kind": "sentinel2", "center_lon_lat": [spec.lon, spec.lat],
        "size": spec.size, "bands": list(bands), "scene_id": scene.id,
        "scene_date": scene.date.isoformat(), "scene_datetime": scene.datetime,
        "cloud_cover": scene.cloud_cover, "mgrs_tile": scene.mgrs_tile,
        "processing_baseline": scene.properties.get("s2:processing_baseline"),
        "reflectance_offset": offset, "reflectance_rule": rule,
        "crs": grid.crs, "transform": list(grid.transform), "pixel_m": grid.pixel_m,
        "scene_window": list(grid.window), "bounds": list(grid.bounds_lonlat()),
        "dates": query.dates, "max_cloud": query.max_cloud,
        "cloud_fraction": cloud, "s2_nodata_fraction": bad,
        "nodata_fraction": nodata,
        "band_files": {b: redact_text(scene.hrefs[b]) for b in (*bands, "SCL") if b in scene.hrefs},
        "scl": "SCL" in scene.hrefs,
        "source": source.describe(), "source_kind": source.kind,
        "labels": {k: wc_info.get(k) for k in ("tiles", "source", "synthetic", "resampling",
                                              "global_window")},
        "global_window": wc_info["global_window"], "synthetic": bool(wc_info.get("synthetic")),
        "tiles": wc_info.get("tiles", []),
        "read_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if "SCL" not in scene.hrefs:
        notes.append(f"Scene {scene.id} has no SCL file: clouds are not masked, only band no-data.")
    roi = _make_roi(spec, bands, dn, native, provenance, notes)
    if use_cache:
        try:
            write_cache(path, dn, native, provenance, binding)
        except OSError as exc:
            roi.cache_error = _disk_fault(exc, path.parent)
            roi.notes.append(f"This region was read but not saved to the cache: {roi.cache_error}.")
    return roi


def _make_roi(spec, bands, dn, native, provenance, notes) -> S2Roi:
    pixels = to_reflectance(dn, int(provenance.get("reflectance_offset", 0)))
    extra = []
    if provenance.get("synthetic"):
        extra.append("The labels of this Sentinel-2 region come from a synthetic test fixture, not "
                     "ESA WorldCover; its reflectance is real Sentinel-2 data.")
    return S2Roi(spec, native, provenance, notes + extra, pixels=pixels, bands=tuple(bands))


def folder_presets(source: S2Source | None = None, max_size: int = 256) -> list[RoiSpec]:
    """One region per scene of a local Sentinel-2 folder (BHARATEO_S2_DIR): centred on the
    scene's raster, as big as fits within `max_size` (a multiple of 64 px, at least 64), named
    after its MGRS tile and date. [] for a STAC source or a folder without readable scenes."""
    import rasterio

    source = source or s2_source_from_env()
    if source.kind != "folder":
        return []
    try:
        scenes, _ = folder_scenes(Path(source.location))
    except BharatEOError:
        return []
    out = []
    for scene in scenes:
        try:
            with rasterio.open(scene.hrefs["B02"]) as src:
                t, (h, w), crs = src.transform, src.shape, src.crs
        except Exception:  # a damaged scene: the region read would say so; no preset for it
            continue
        from rasterio.warp import transform as warp

        size = min(max_size, (min(h, w) - 2) // 64 * 64)
        if size < 64:
            continue
        lon, lat = warp(crs, "EPSG:4326", [t.c + t.a * w / 2], [t.f + t.e * h / 2])
        name = re.sub(r"[^A-Za-z0-9_]", "_", f"s2_{scene.mgrs_tile or scene.id}_{scene.date}")
        out.append(RoiSpec(name, round(lon[0], 4), round(lat[0], 4), size))
    return out


def source_of_rois(rois) -> str | None:
    """The pixel source the regions were read from ("worldcover", "s2-4band", "s2-10band"), None
    when they mix sources or there are none."""
    kinds = {next((k for k, bands in S2_SOURCES.items() if tuple(getattr(r, "bands", ())) == bands),
                  None) if getattr(r, "pixels", None) is not None else "worldcover" for r in rois}
    return kinds.pop() if len(kinds) == 1 else None
