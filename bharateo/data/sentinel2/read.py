"""A region's grid on a scene, choosing the scene, and windowed band reads: 20 m bands on the
10 m grid, SCL no-data, digital numbers to reflectance."""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import numpy as np

from bharateo.errors import BharatEOError, RegionError, SourceUnreachableError, TileFileError
from bharateo.data.gdal import gdal_env
from bharateo.data.roi import RoiSpec
from bharateo.data.sentinel2.bands import (BAND_NODATA_DN, BOA_ADD_OFFSET, OFFSET_BASELINE,
                                      QUANTIFICATION_VALUE, SCL_NODATA_CLASSES)
from bharateo.data.sentinel2.scenes import S2Query, Scene, footprint_contains, in_range
from bharateo.data.worldcover import redact_text


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


def openable(href: str) -> bool:
    """The last gate before GDAL: an http(s) URL (its host was checked when the item was read,
    scenes.href_problem) or an absolute path of a plain local file (a folder's file, resolved
    inside it by scenes.folder_scenes); never a GDAL virtual path, another scheme, inline XML or
    a driver prefix."""
    if not isinstance(href, str) or not href or "\x00" in href:
        return False
    low = href.lower()
    if low.startswith(("http://", "https://")):
        return True
    return href.startswith("/") and not low.startswith("/vsi") and "://" not in href


def open_band(href: str):
    """rasterio.open for GeoTIFF band files only (driver GTiff: a "B02.tif" that is a VRT naming
    other files is not followed). TileFileError for an href openable() refuses."""
    import rasterio

    if not openable(href):
        raise TileFileError("A band file named in a way this lab never opens (a GDAL virtual path or "
                            "another scheme) was refused. Use a folder of scenes or a STAC API.")
    return rasterio.open(href, driver="GTiff")


def _env(deadline: float | None = None) -> dict:
    """gdal.gdal_env: WorldCover's GDAL settings, each request capped to `deadline`."""
    return gdal_env(deadline=deadline)


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


def scene_bounds(scene: Scene) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) in degrees of a scene's data: its footprint's, else its B02
    raster's; None when neither can be had (no footprint, the band file unreadable)."""
    geometry = scene.footprint or {}
    coords = geometry.get("coordinates") or []
    polygons = [coords] if geometry.get("type") == "Polygon" else coords \
        if geometry.get("type") == "MultiPolygon" else []
    points = [p for poly in polygons for ring in poly[:1] for p in ring]
    if points:
        lons, lats = [float(p[0]) for p in points], [float(p[1]) for p in points]
        return min(lons), min(lats), max(lons), max(lats)
    try:
        from rasterio.warp import transform_bounds

        with open_band(scene.hrefs["B02"]) as src:
            return transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    except Exception:  # no such band, or not readable: the scene's place is unknown
        return None


def _holds(scene: Scene, bounds, lon: float, lat: float) -> bool:
    if scene.footprint:
        return footprint_contains(scene.footprint, [(lon, lat)])
    return bounds is None or (bounds[0] <= lon <= bounds[2] and bounds[1] <= lat <= bounds[3])


def place_text(bounds) -> str:
    """(west, south, east, north) degrees -> '11.98°W to 10.87°W, 24.30°N to 25.30°N'."""
    w, s, e, n = bounds

    def lon(x):
        return f"{abs(x):.2f}°{'E' if x >= 0 else 'W'}"

    def lat(y):
        return f"{abs(y):.2f}°{'N' if y >= 0 else 'S'}"
    return f"{lon(w)} to {lon(e)}, {lat(s)} to {lat(n)}"


PLACES_SHOWN = 3  # scenes a "no scene of the folder is here" message places


def folder_elsewhere(spec: RoiSpec, scenes: list[Scene], where: str) -> str:
    """'' when a scene of a local folder holds the region's centre (any date), else the plain
    message: where the folder's scenes are, and to pick a region inside one or use a STAC source
    (a folder can't be widened the way dates or a cloud limit can)."""
    places = []
    for scene in scenes:
        bounds = scene_bounds(scene)
        if _holds(scene, bounds, spec.lon, spec.lat):
            return ""
        if bounds is not None:
            places.append(f"{scene.id} ({place_text(bounds)})")
    shown = "; ".join(places[:PLACES_SHOWN]) + (" ..." if len(places) > PLACES_SHOWN else "")
    return (f"No scene of {where} is at {spec.lon:.4f}E {spec.lat:.4f}N: "
            + (f"the folder's scenes are at {shown}. " if places else "")
            + "Pick a region inside one (each scene is offered as a preset region), or use the "
            "STAC source (unset BHARATEO_S2_DIR), which finds scenes anywhere.")


def choose_scene(spec: RoiSpec, scenes: list[Scene], query: S2Query, where: str,
                 deadline: float | None = None, folder: bool = False) -> tuple[Scene, RegionGrid]:
    """The least cloudy scene in the query's range whose raster and footprint hold the whole
    region -> (scene, the region's grid on it). Ties: the earlier date, then the id.

    RegionError saying what to change when no scene is in range, or none covers the region;
    for a local `folder` whose scenes are all elsewhere, where they are (folder_elsewhere)."""
    import rasterio

    if folder and scenes and (elsewhere := folder_elsewhere(spec, scenes, where)):
        raise RegionError(elsewhere)
    candidates = sorted((s for s in scenes if in_range(s, query)),
                        key=lambda s: (s.cloud_cover if s.cloud_cover is not None else 101,
                                       s.datetime, s.id))
    what = (f"between {query.dates.replace('/', ' and ')} with at most {query.max_cloud:g} % "
            f"cloud at {spec.lon:.4f}E {spec.lat:.4f}N")
    if not candidates:
        raise RegionError(f"No Sentinel-2 L2A scene in {where} {what}. "
                          + _scenes_elsewhere(spec, scenes, query, where))
    tried = []
    for scene in candidates:
        if not footprint_contains(scene.footprint, [(spec.lon, spec.lat)]):  # no need to open it
            tried.append(f"{scene.id} (the centre is outside its data footprint)")
            continue
        if "B02" not in scene.hrefs:
            tried.append(f"{scene.id} ({_why_missing(scene, 'B02')})")
            continue
        try:
            with rasterio.Env(**_env(deadline)), open_band(scene.hrefs["B02"]) as src:
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


NEAREST_SHOWN = 3  # scenes a "no scene in range" message names


def _scenes_elsewhere(spec: RoiSpec, scenes: list[Scene], query: S2Query, where: str) -> str:
    """What to change when no scene is in the query's range: the dates of the source's scenes
    at the region's centre nearest to the range (with their cloud cover when it is over the
    limit), else that its scenes lie elsewhere, else the general advice."""
    first, last = query.days()

    def days_out(day) -> int:  # days between `day` and the query's range
        return (first - day).days if day < first else max(0, (day - last).days)

    def cloudy(scene) -> bool:
        return scene.cloud_cover is not None and scene.cloud_cover > query.max_cloud

    dated = []
    for scene in scenes:
        try:
            dated.append((scene, scene.date))
        except ValueError:  # an item without a readable datetime can't be chosen anyway
            continue
    here = sorted(((s, d) for s, d in dated
                   if footprint_contains(s.footprint, [(spec.lon, spec.lat)])),
                  key=lambda sd: (days_out(sd[1]), sd[0].datetime, sd[0].id))[:NEAREST_SHOWN]
    source = where[0].upper() + where[1:]
    if not here:
        return (f"{source} has {len(dated)} scene(s), none covering this place: move the region "
                "onto one of its scenes." if dated else
                "Widen the dates, raise the cloud limit, or pick a place the source has scenes for.")
    shown = "; ".join(f"{d.isoformat()} ({s.id}"
                      + (f", {s.cloud_cover:.1f} % cloud" if cloudy(s) else "") + ")"
                      for s, d in here)
    scene, day = here[0]
    todo = ([f"set the dates to include it (e.g. {min(first, day)}/{max(last, day)})"]
            if days_out(day) else [])
    if cloudy(scene):
        todo.append(f"raise the cloud limit to at least {math.ceil(scene.cloud_cover)} %")
    return (f"{source} has {'a scene' if len(here) == 1 else 'scenes'} at this place on "
            f"{shown}: {' and '.join(todo)}.")


def _why_missing(scene: Scene, band: str) -> str:
    """Why `scene` has no readable file for `band`: its refusal (scenes.scene_from_item,
    folder_scenes) or that it has none."""
    why = scene.refused.get(band)
    return f"band {band} is {why}" if why else f"no {band} band file"


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
    with open_band(href) as src:
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

    wanted = list(bands) + (["SCL"] if "SCL" in scene.hrefs or "SCL" in scene.refused else [])
    out = np.zeros((len(bands), grid.size, grid.size), np.uint16)
    scl = np.full((grid.size, grid.size), 255, np.uint8)  # 255: no SCL (not a class)
    for i, band in enumerate(wanted):
        if on_band is not None:
            on_band(i, len(wanted), band)
        if deadline is not None and time.monotonic() > deadline:
            raise SourceUnreachableError(f"Reading scene {scene.id} ran out of time at band {band}. "
                                         "Try again later, or prefetch the region while online.")
        if band in scene.refused:
            raise TileFileError(f"Scene {scene.id} can't be read: {_why_missing(scene, band)}. "
                                "Pick another scene (dates) or another source.")
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
