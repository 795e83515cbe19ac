"""Where Sentinel-2 scenes come from (a STAC API through pystac-client, or a local folder of
scenes), what a region asks of them (S2Query), and their footprints."""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bharateo.config import environment
from bharateo.errors import BharatEOError, ConfigError, RegionError, SourceUnreachableError
from bharateo.data.sentinel2.bands import (ASSET_KEYS, DEFAULT_COLLECTION, DEFAULT_DATES,
                                      DEFAULT_MAX_CLOUD, DEFAULT_STAC_URL,
                                      EARTH_SEARCH_ASSET_HOSTS, MAX_ITEM_BYTES,
                                      MAX_SEARCH_ANSWER_BYTES, SEARCH_MAX_ITEMS, SEARCH_TIMEOUT_S)
from bharateo.untrusted import MAX_DEPTH, json_depth, parse_json, read_bytes, typed
from bharateo.data.worldcover import redact_text, redact_url


# --- where scenes come from ----------------------------------------------------------------
@dataclass(frozen=True)
class S2Source:
    """Where Sentinel-2 scenes come from: a STAC API (`kind` "stac", `location` its URL) or a
    local folder of scenes (`kind` "folder")."""

    kind: str  # "stac" | "folder"
    location: str
    collection: str = DEFAULT_COLLECTION
    asset_hosts: tuple[str, ...] = ()  # hosts band files may come from besides the catalogue's

    @property
    def hosts(self) -> tuple[str, ...]:
        """Hosts (lower case) a STAC source's band files may be read from: the catalogue's own
        and `asset_hosts` (its configured mirrors; Earth Search's COG bucket by default)."""
        own = urlsplit(self.location).hostname if self.kind == "stac" else None
        return tuple(sorted({h.strip().lower() for h in (own, *self.asset_hosts) if h and h.strip()}))

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
    (DEFAULT_STAC_URL); BHARATEO_S2_COLLECTION names the collection (default sentinel-2-l2a).
    BHARATEO_S2_ASSET_HOSTS (comma-separated) names the hosts besides the catalogue's own that its
    items' band files may be read from (Earth Search: EARTH_SEARCH_ASSET_HOSTS)."""
    collection = environment.S2_COLLECTION.get()
    if (folder := environment.S2_DIR.get()) is not None:
        return S2Source("folder", str(folder), collection)
    url = environment.S2_STAC_URL.get()
    hosts = environment.S2_ASSET_HOSTS.get()
    if url == DEFAULT_STAC_URL:
        hosts += EARTH_SEARCH_ASSET_HOSTS
    return S2Source("stac", url, collection, hosts)


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
    refused: dict = field(default_factory=dict)  # band id -> why its file is never opened

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


# --- what an item may name -------------------------------------------------------------------
_UNSAFE = re.compile(r"[\s<>\\!\x00-\x1f\x7f]")  # spaces, inline XML, back slashes, archives


def href_problem(href: str, hosts) -> str | None:
    """None when a catalogue item's band `href` may be opened: an http(s) URL without credentials
    on one of `hosts`. Otherwise why not, in words that depend only on the href's kind, never on
    what this server holds (a local file that exists and one that doesn't read the same):
    a local path or file:// URL, a GDAL virtual path (/vsi...), another scheme, credentials, or
    a host the catalogue does not name."""
    text = href.strip()
    if text.lower().startswith("/vsi"):
        return "a GDAL virtual path (never opened)"
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file" or (not scheme and not parts.netloc):
        return "a file on this server (never opened: band files are read only over http(s))"
    if scheme not in ("http", "https"):
        return (f"a {scheme}: address (never opened: band files are read only over http(s))")
    if parts.username or parts.password:
        return "an address with a user name or password (never opened)"
    if _UNSAFE.search(text) or not parts.hostname:
        return "an address with characters a band file's URL never has (never opened)"
    if parts.hostname.lower() not in hosts:
        return (f"on host {parts.hostname}, which the catalogue does not name (its band files are "
                f"read only from {', '.join(hosts) or 'its own host'}; add a trusted host to "
                "BHARATEO_S2_ASSET_HOSTS)")
    return None


# --- a STAC item's typed shape --------------------------------------------------------------
_ITEM = ConfigDict(strict=True, extra="allow", populate_by_name=True)
Point = Annotated[list[float], Field(min_length=2, max_length=4)]


class Polygon(BaseModel):
    model_config = _ITEM
    type: Literal["Polygon"]
    coordinates: list[list[Point]]


class MultiPolygon(BaseModel):
    model_config = _ITEM
    type: Literal["MultiPolygon"]
    coordinates: list[list[list[Point]]]


class Asset(BaseModel):
    model_config = _ITEM
    href: str | None = None


class ItemProperties(BaseModel):
    model_config = _ITEM
    datetime: str | None = None
    cloud_cover: float | None = Field(None, alias="eo:cloud_cover")

    @field_validator("datetime")
    @classmethod
    def _iso(cls, value):
        if value is not None:
            try:
                dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError("is not an ISO 8601 date and time") from None
        return value


class StacItem(BaseModel):
    """The parts of a STAC item a scene is built from, typed: text id and datetime, a number (or
    nothing) for eo:cloud_cover, assets as objects with text hrefs, a Polygon or MultiPolygon
    footprint (or none). Other keys are kept as they are."""

    model_config = _ITEM
    id: str = "?"
    properties: ItemProperties
    assets: dict[str, Asset] = {}
    geometry: Annotated[Polygon | MultiPolygon, Field(discriminator="type")] | None = None


def scene_from_item(item, hosts=(), what: str = "the STAC item",
                    error: type[BharatEOError] = RegionError) -> Scene:
    """A STAC item (a dict) -> Scene, typed first (StacItem; `error` naming `what` and each
    problem). Band hrefs come from the assets named in ASSET_KEYS; one that href_problem refuses
    (a local path, a GDAL virtual path, a host outside `hosts`) is left out of `hrefs` and its
    reason kept in `refused`: nothing the item names is opened unless it is an http(s) URL on one
    of `hosts`."""
    typed(StacItem, item, what, error)
    props, assets = item["properties"], item.get("assets") or {}
    hosts = tuple(hosts)
    hrefs, refused = {}, {}
    for band, keys in ASSET_KEYS.items():
        for key in keys:
            href = (assets.get(key) or {}).get("href")
            if isinstance(href, str) and href:
                problem = href_problem(href, hosts)
                if problem:
                    refused[band] = problem
                else:
                    hrefs[band] = href.strip()
                break
    cloud = props.get("eo:cloud_cover")
    return Scene(id=item.get("id", "?"), datetime=props.get("datetime") or "",
                 cloud_cover=float(cloud) if cloud is not None else None,
                 hrefs=hrefs, footprint=item.get("geometry"), properties=props, refused=refused)


def _inside(root: Path, path: Path) -> Path | None:
    """`path` resolved (links followed) when it stays inside `root` (resolved), else None."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a link loop
        return None
    return real if real == root or root in real.parents else None


def folder_scenes(folder: Path) -> tuple[list[Scene], list[str]]:
    """Scenes of a local folder: each sub-folder holding a STAC item (*.json) and band files named
    B02.tif ... B12.tif, SCL.tif (the layout of the shared crop); band files present in the
    folder are used whatever the item's hrefs say. -> (scenes, notes on folders skipped).
    SourceUnreachableError when the folder is missing or can't be listed."""
    folder = Path(folder).resolve()
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
        if _inside(folder, sub) is None:
            notes.append(f"skipped: {sub.name}: a link to a folder outside {folder.name} (only "
                         "files inside the Sentinel-2 folder are read)")
            continue
        items = sorted(p for p in sub.glob("*.json") if _inside(folder, p))
        if not items:
            notes.append(f"skipped: {sub.name}: {_not_a_scene(sub, folder)}")
            continue
        try:
            data = read_bytes(_inside(folder, items[0]), items[0].name, MAX_ITEM_BYTES, RegionError)
            scene = scene_from_item(parse_json(data, items[0].name, MAX_ITEM_BYTES,
                                               error=RegionError), what=items[0].name)
        except (OSError, RegionError) as exc:
            notes.append(f"skipped: {sub.name}: its STAC item {items[0].name} can't be read "
                         f"({str(exc).rstrip('.')}); copy the scene's item JSON again")
            continue
        local, refused = {}, {}
        for band in ASSET_KEYS:
            if (sub / f"{band}.tif").is_file() or (sub / f"{band}.tif").is_symlink():
                real = _inside(folder, sub / f"{band}.tif")
                if real is None:
                    refused[band] = ("a link to a file outside the Sentinel-2 folder (never "
                                     "opened: copy the file into the folder)")
                else:
                    local[band] = str(real)
        scenes.append(replace(scene, hrefs=local, refused=refused))
    return scenes, notes


SCENE_LAYOUT = "one holds B02.tif ... SCL.tif and the scene's STAC item JSON"


def _not_a_scene(sub: Path, root: Path) -> str:
    """Why a sub-folder without a STAC item is no scene, for a teacher: band files without the
    item (which gives the date, cloud cover and processing baseline), a multi-band composite
    (e.g. the shared monthly 4-band mosaic), or no GeoTIFF at all."""
    tifs = sorted(sub.glob("*.tif"))
    inside = [real for t in tifs if (real := _inside(root, t)) is not None]
    if any(t.stem in ASSET_KEYS for t in tifs):
        return ("band files without a STAC item JSON (its date, cloud cover and processing "
                "baseline are unknown): not usable until the scene's item is copied beside them")
    if inside:
        try:
            import rasterio

            with rasterio.open(inside[0], driver="GTiff") as src:
                what = f"a {src.count}-band composite"
        except Exception:  # unreadable: still no scene; say what it holds
            what = "GeoTIFF files"
        return f"{what} without a STAC item: not an L2A scene folder ({SCENE_LAYOUT}); see docs/sentinel2.md"
    if tifs:
        return (f"GeoTIFF links to files outside the folder, which are never opened: not a scene "
                f"folder ({SCENE_LAYOUT})")
    return f"no band files and no STAC item: not a scene folder ({SCENE_LAYOUT})"


def _capped_session(limit: int = MAX_SEARCH_ANSWER_BYTES):
    """A requests.Session whose every answer is streamed and cut off past `limit` bytes (checked
    against Content-Length first) and refused when its JSON nests deeper than MAX_DEPTH, before
    pystac-client decodes it: a catalogue can't make the server spend more than `limit` bytes on
    one answer, nor raise RecursionError."""
    import requests

    from bharateo.untrusted import read_capped_stream

    class CappedSession(requests.Session):
        def send(self, request, **kwargs):
            kwargs["stream"] = True
            resp = super().send(request, **kwargs)
            try:
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise CatalogueAnswerError(f"its answer is {int(declared) / 2**20:.0f} MB, more "
                                               f"than the {limit / 2**20:g} MB this lab reads")
                body = read_capped_stream(resp.iter_content(64 * 1024), limit, "its answer",
                                          CatalogueAnswerError)
            except requests.RequestException as exc:
                raise CatalogueAnswerError(f"its answer broke off ({exc.__class__.__name__})") from None
            finally:
                resp.close()
            if json_depth(body) > MAX_DEPTH:
                raise CatalogueAnswerError(f"its answer nests deeper than {MAX_DEPTH} levels")
            resp._content, resp._content_consumed = body, True  # what requests' .content holds
            return resp
    return CappedSession()


class CatalogueAnswerError(SourceUnreachableError):
    """A catalogue's answer refused before it is decoded (too big, too deep, cut off)."""


def stac_scenes(source: S2Source, bbox, query: S2Query) -> list[Scene]:
    """Items of `source.collection` intersecting `bbox` (W, S, E, N degrees) in the query's date
    range with eo:cloud_cover <= max_cloud, through pystac-client (STAC API item search), each
    answer at most MAX_SEARCH_ANSWER_BYTES (_capped_session) and each item typed (StacItem);
    band files only on the source's hosts (scene_from_item). SourceUnreachableError when the API
    can't be reached or answers with something else."""
    import pystac
    from pystac_client import Client
    from pystac_client.exceptions import APIError
    from pystac_client.stac_api_io import StacApiIO

    first, last = query.days()

    def failed(why: str) -> SourceUnreachableError:
        return SourceUnreachableError(
            f"The Sentinel-2 search at {source.shown} failed ({why}). Check the network and try "
            "again, or work offline: prefetch the region while online, or set BHARATEO_S2_DIR to "
            "a folder of scenes.")
    try:
        io = StacApiIO(timeout=SEARCH_TIMEOUT_S)
        capped = _capped_session()
        capped.adapters, capped.headers = io.session.adapters, io.session.headers
        io.session = capped
        client = Client.open(source.location, timeout=SEARCH_TIMEOUT_S, stac_io=io)
        search = client.search(collections=[source.collection], bbox=list(bbox),
                               datetime=f"{first.isoformat()}/{last.isoformat()}",
                               query={"eo:cloud_cover": {"lte": query.max_cloud}},
                               max_items=SEARCH_MAX_ITEMS)
        items = []
        for item in search.items_as_dicts():
            items.append(item)
            if len(items) >= SEARCH_MAX_ITEMS:
                break
    except (APIError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            NotImplementedError, RecursionError, pystac.STACError) as exc:
        import requests

        cause = exc.__cause__ or exc.__context__
        why = ("no answer" if isinstance(exc, requests.exceptions.ConnectionError) else
               "it is not a STAC API with item search" if isinstance(exc, NotImplementedError) else
               str(cause) if isinstance(cause, CatalogueAnswerError) else
               "it answered with something that is not a STAC item search answer"
               if isinstance(exc, (KeyError, TypeError, AttributeError, IndexError,
                                   RecursionError, pystac.STACError)) else
               redact_text(str(exc))[:200])
        raise failed(why) from None
    return [scene_from_item(item, source.hosts, f"item {i + 1} of its answer",
                            _answer_error(source)) for i, item in enumerate(items)]


def _answer_error(source: S2Source) -> type[SourceUnreachableError]:
    """An error type whose message says the catalogue's answer held an unusable item."""
    class BadItemError(SourceUnreachableError):
        def __init__(self, text: str):
            super().__init__(f"The Sentinel-2 search at {source.shown} answered with something that "
                             f"is not a usable STAC item ({text}). Check that BHARATEO_S2_STAC_URL "
                             "names a STAC API, or set BHARATEO_S2_DIR to a folder of scenes.")
    return BadItemError


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
