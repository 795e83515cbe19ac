"""A Sentinel-2 region: scene, pixels, labels, provenance, its cache, and the presets of a
local folder."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bharateo.errors import BharatEOError, RegionError, SourceUnreachableError
from bharateo.data.cache import RegionCache, data_dir
from bharateo.data.geodesy import METRES_PER_DEGREE_EQUATOR
from bharateo.data.roi import MAX_NODATA_FRACTION, Roi, RoiSpec, check_roi_spec
from bharateo.files import atomic_write_bytes
from bharateo.data.sentinel2.bands import BANDS_4, BANDS_10, S2_LABEL, S2_SOURCES, SCL_CLOUD_CLASSES
from bharateo.data.sentinel2.labels import worldcover_on_grid
from bharateo.data.sentinel2.read import (RegionGrid, choose_scene, folder_elsewhere, open_band, place_text,
                                     read_scene_window,
                                     reflectance_rule, scene_bounds, to_reflectance)
from bharateo.data.sentinel2.scenes import (S2Query, S2Source, Scene, folder_scenes, in_range,
                                       s2_source_from_env, stac_scenes)
from bharateo.untrusted import parse_json
from bharateo.data.worldcover import NODATA, DataSource, data_source_from_env, redact_text


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
        provenance = parse_json(redact_text(z["provenance"]), "its provenance", 2**20,
                                error=ValueError)
        stored = parse_json(str(z["binding"]), "its binding", 2**16, error=ValueError)
        digest = str(z["sha256"])
    if not isinstance(provenance, dict) or not isinstance(stored, dict):
        raise ValueError("its provenance or binding is not an object")
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
        half = spec.size * 10 / 2 / METRES_PER_DEGREE_EQUATOR  # half width, degrees, 10 m pixels
        bbox = (spec.lon - half, spec.lat - half, spec.lon + half, spec.lat + half)
        scenes = stac_scenes(source, bbox, query)
        where = source.describe()
        if not any(in_range(s, query) for s in scenes):  # so the message can name other dates
            scenes += _other_scenes(source, bbox, query, deadline)
    scene, grid = choose_scene(spec, scenes, query, where, deadline, source.kind == "folder")
    return scene, grid, notes


SENTINEL2_FIRST_DAY = dt.date(2015, 6, 23)  # Sentinel-2A's launch: no L2A scene before it


HINT_WINDOW = dt.timedelta(days=366)  # how far past the query's dates a hint looks


def _other_scenes(source: S2Source, bbox, query: S2Query,
                  deadline: float | None = None) -> list[Scene]:
    """Scenes of a STAC source over `bbox` that the query left out, for a "no scene in range"
    message: first its own dates at any cloud cover (the usual cause: every scene there is
    cloudier than the limit, and the hint then says to raise it), else a year either side of
    them (HINT_WINDOW, within Sentinel-2's life), at most SEARCH_MAX_ITEMS each. [] when both are
    empty, a search fails or `deadline` (time.monotonic()) has passed: the message then gives
    the general advice."""
    first, last = query.days()
    wider = (f"{max(SENTINEL2_FIRST_DAY, first - HINT_WINDOW).isoformat()}/"
             f"{min(dt.date.today(), last + HINT_WINDOW).isoformat()}")
    for other in ([S2Query(query.dates, 100.0)] if query.max_cloud < 100 else []) + \
            [S2Query(wider, 100.0)]:
        if deadline is not None and time.monotonic() > deadline:
            return []
        try:
            if found := stac_scenes(source, bbox, other):
                return found
        except BharatEOError:
            return []
    return []


def load_s2_roi(spec: RoiSpec, bands=BANDS_4, query: S2Query | None = None,
                source: S2Source | None = None, wc_source: DataSource | None = None,
                use_cache: bool = True, timeout_s: float | None = None, progress=None) -> S2Roi:
    """Read one Sentinel-2 region with its WorldCover labels (from the cache when sound) -> S2Roi.

    `bands`: BANDS_4 or BANDS_10 (any subset of BANDS_10). The read takes at most `timeout_s` s
    (default BHARATEO_READ_TIMEOUT_S); `progress(fraction, text)` is called while it runs.
    Raises RegionError (no scene in range, none covering the region, the region more than
    MAX_NODATA_FRACTION cloud / no-data), SourceUnreachableError, TileFileError (a band file
    damaged or off the scene's grid) with messages saying what to do. The cache flow and its
    disk faults are WorldCover's (cache.RegionCache): a damaged cache file is moved aside and the
    region read again; a region that can't be cached (read-only or full data/) is returned with
    `cache_error` and a note saying why."""
    query = (query or S2Query()).check()
    source = source or s2_source_from_env()
    wc_source = wc_source or data_source_from_env()
    bands = tuple(bands)
    if not bands or any(b not in BANDS_10 for b in bands):
        raise RegionError(f"Sentinel-2 bands must be among {', '.join(BANDS_10)} (got {bands}).")
    check_roi_spec(spec)
    binding = cache_binding(spec, bands, query, source, wc_source)
    flow = RegionCache(cache_path(spec, bands, query, source, wc_source), spec.name, use_cache,
                       timeout_s, progress, f"searching {source.describe()}…")
    hit = flow.cached(lambda path: read_cache(path, binding, len(bands)))
    if hit is not None:
        dn, native, provenance = hit
        provenance["source"] = f"local cache of {provenance['source']}"
        provenance["name"] = spec.name
        return _make_roi(spec, bands, dn, native, provenance, flow.notes)
    labels_read = []

    def on_band(k, n, band):
        flow.stage(f"band {band} ({k + 1} of {n})", k / n)

    def read(deadline):
        scene, grid, found_notes = find_scene(spec, query, source, deadline)
        dn, scl, valid = read_scene_window(scene, grid, bands, deadline, on_band)
        flow.stage("WorldCover labels", 0.95)
        labels_read.append(True)
        labels, wc_info = worldcover_on_grid(grid, wc_source, deadline)
        return scene, grid, found_notes, dn, scl, valid, labels, wc_info

    def advise(exc):
        if not isinstance(exc, SourceUnreachableError) or labels_read:
            return exc  # the labels' read: its advice is about WorldCover, and right
        return SourceUnreachableError(
            str(exc).replace("BHARATEO_WORLDCOVER_DIR to a folder holding the tiles",
                             "BHARATEO_S2_DIR to a folder of scenes"))

    scene, grid, found_notes, dn, scl, valid, labels, wc_info = flow.fetch(
        read, f"Reading the Sentinel-2 region '{spec.name}'", advise)
    notes = flow.notes
    notes += found_notes
    cloud = float(np.mean(np.isin(scl, SCL_CLOUD_CLASSES)))
    bad = float(np.mean(~valid))
    if bad > MAX_NODATA_FRACTION:
        raise RegionError(
            f"In scene {scene.id} ({scene.date}, "
            + ("cloud cover not given" if scene.cloud_cover is None else
               f"{scene.cloud_cover:.1f} % cloud over the scene") + ") "
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
    cache_error = flow.save(lambda path: write_cache(path, dn, native, provenance, binding))
    roi = _make_roi(spec, bands, dn, native, provenance, notes)
    roi.cache_error = cache_error
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
            with open_band(scene.hrefs["B02"]) as src:
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


def folder_places(source: S2Source | None = None) -> list[str]:
    """Where a local Sentinel-2 folder's scenes are, one 'id (W to E, S to N)' each (degrees,
    read.scene_bounds), e.g. 'S2A_29RKH_20200219_0_L2A (11.98°W to 10.87°W, 24.30°N to
    25.30°N)'. [] for a STAC source or a folder without readable scenes."""
    source = source or s2_source_from_env()
    if source.kind != "folder":
        return []
    try:
        scenes, _ = folder_scenes(Path(source.location))
    except (BharatEOError, OSError):  # an unreadable folder: reading a region says why
        return []
    return [f"{scene.id} ({place_text(bounds)})" for scene in scenes
            if (bounds := scene_bounds(scene)) is not None]


def _folder(source: S2Source | None):
    """(scenes, notes) of `source` (default: the environment's) when it is a readable local
    folder, else ([], []): an unreadable folder is said when a region is read."""
    source = source or s2_source_from_env()
    if source.kind != "folder":
        return [], []
    try:
        return folder_scenes(Path(source.location))
    except (BharatEOError, OSError):
        return [], []


def folder_footprints(source: S2Source | None = None) -> list[tuple[str, tuple]]:
    """(scene id, (west, south, east, north) degrees, read.scene_bounds) of each scene of a local
    Sentinel-2 folder whose place is known, for the Regions map. [] for a STAC source."""
    return [(scene.id, tuple(bounds)) for scene in _folder(source)[0]
            if (bounds := scene_bounds(scene)) is not None]


S2_PIXEL_M = 10.0  # metres: the grid of Sentinel-2's 10 m bands (B02 B03 B04 B08), a region's grid


def folder_pixel_metres(source: S2Source | None = None) -> list[float]:
    """Sorted distinct pixel sizes in metres of the 10 m band (B02) rasters of a local Sentinel-2
    folder's scenes: a region's pixels on that scene (e.g. [100.0] for the shared scene,
    downsampled 10x by its publisher). [S2_PIXEL_M] for a STAC source (full-resolution scenes);
    [] for a folder whose scenes can't be opened. Never raises."""
    import rasterio

    source = source or s2_source_from_env()
    if source.kind != "folder":
        return [S2_PIXEL_M]
    sizes = set()
    for scene in _folder(source)[0]:
        try:
            with rasterio.open(scene.hrefs["B02"]) as src:
                sizes.add(round(abs(float(src.transform.a)), 3))
        except Exception:  # a damaged scene: reading a region from it says so
            continue
    return sorted(sizes)


def folder_notes(source: S2Source | None = None) -> list[str]:
    """The local folder's sub-folders that are no scene, one 'skipped: <folder>: <why>' each
    (scenes.folder_scenes). [] for a STAC source or an unreadable folder."""
    return _folder(source)[1]


def folder_outside(spec: RoiSpec, source: S2Source | None = None) -> str:
    """'' unless `spec`'s centre is outside every scene of a local Sentinel-2 folder; then where
    the scenes are and what to do (read.folder_elsewhere, the message reading it would give)."""
    source = source or s2_source_from_env()
    scenes = _folder(source)[0]
    return folder_elsewhere(spec, scenes, source.describe()) if scenes else ""


def folder_dates(source: S2Source | None = None) -> str | None:
    """A date range ("YYYY-MM-DD/YYYY-MM-DD") covering every scene of a local Sentinel-2 folder
    (BHARATEO_S2_DIR): whole calendar years from the first scene's to the last's, e.g.
    "2020-01-01/2020-12-31" for the shared 2020-02-19 scene; the Regions page's default dates for
    such a folder. None for a STAC source or a folder without readable dated scenes."""
    source = source or s2_source_from_env()
    if source.kind != "folder":
        return None
    try:
        scenes, _ = folder_scenes(Path(source.location))
    except (BharatEOError, OSError):  # an unreadable folder: the stock dates; reading says why
        return None
    days = []
    for scene in scenes:
        try:
            days.append(scene.date)
        except ValueError:  # no readable datetime: never chosen, so nothing to cover
            continue
    return f"{min(days).year}-01-01/{max(days).year}-12-31" if days else None


def source_of_rois(rois) -> str | None:
    """The pixel source the regions were read from ("worldcover", "s2-4band", "s2-10band"), None
    when they mix sources or there are none."""
    kinds = {next((k for k, bands in S2_SOURCES.items() if tuple(getattr(r, "bands", ())) == bands),
                  None) if getattr(r, "pixels", None) is not None else "worldcover" for r in rois}
    return kinds.pop() if len(kinds) == 1 else None
