"""Where Sentinel-2 scenes come from (a STAC API through pystac-client, or a local folder of
scenes), what a region asks of them (S2Query), and their footprints."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from bharateo.errors import ConfigError, RegionError, SourceUnreachableError
from bharateo.sentinel2.bands import (ASSET_KEYS, DEFAULT_COLLECTION, DEFAULT_DATES,
                                      DEFAULT_MAX_CLOUD, DEFAULT_STAC_URL, SEARCH_MAX_ITEMS,
                                      SEARCH_TIMEOUT_S)
from bharateo.worldcover import redact_text, redact_url


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
    folder are used whatever the item's hrefs say. -> (scenes, notes on folders skipped).
    SourceUnreachableError when the folder is missing or can't be listed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceUnreachableError(f"The Sentinel-2 folder {folder} (BHARATEO_S2_DIR) does not "
                                     "exist. Set BHARATEO_S2_DIR to a folder of scene folders.")
    try:
        subs = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError as exc:  # e.g. no read permission for the server's user
        raise SourceUnreachableError(
            f"The Sentinel-2 folder {folder} (BHARATEO_S2_DIR) can't be read ({exc.strerror or exc})."
            " Give the lab's user read access to it, or set BHARATEO_S2_DIR to another folder.") from None
    scenes, notes = [], []
    for sub in subs:
        items = sorted(sub.glob("*.json"))
        if not items:
            notes.append(f"skipped: {sub.name}: {_not_a_scene(sub)}")
            continue
        try:
            item = json.loads(items[0].read_text())
            scene = scene_from_item(item)
        except (OSError, ValueError, RegionError) as exc:
            notes.append(f"skipped: {sub.name}: its STAC item {items[0].name} can't be read "
                         f"({exc}); copy the scene's item JSON again")
            continue
        local = {band: str(sub / f"{band}.tif") for band in ASSET_KEYS
                 if (sub / f"{band}.tif").is_file()}
        scenes.append(replace(scene, hrefs=local))
    return scenes, notes


SCENE_LAYOUT = "one holds B02.tif ... SCL.tif and the scene's STAC item JSON"


def _not_a_scene(sub: Path) -> str:
    """Why a sub-folder without a STAC item is no scene, for a teacher: band files without the
    item (which gives the date, cloud cover and processing baseline), a multi-band composite
    (e.g. the shared monthly 4-band mosaic), or no GeoTIFF at all."""
    tifs = sorted(sub.glob("*.tif"))
    if any(t.stem in ASSET_KEYS for t in tifs):
        return ("band files without a STAC item JSON (its date, cloud cover and processing "
                "baseline are unknown): not usable until the scene's item is copied beside them")
    if tifs:
        try:
            import rasterio

            with rasterio.open(tifs[0]) as src:
                what = f"a {src.count}-band composite"
        except Exception:  # unreadable: still no scene; say what it holds
            what = "GeoTIFF files"
        return f"{what} without a STAC item: not an L2A scene folder ({SCENE_LAYOUT}); see docs/sentinel2.md"
    return f"no band files and no STAC item: not a scene folder ({SCENE_LAYOUT})"


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
