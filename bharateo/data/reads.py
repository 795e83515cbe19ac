"""Reading WorldCover tiles: a window of the global grid from every tile it touches, with
rasterio windows (only the window's bytes are fetched: GDAL range requests for URLs).

A window that crosses a tile edge is mosaicked from the neighbouring tiles; a tile ESA does not
publish (open sea, checked against the GLOBE 1 km land mask) reads as no-data. Failures become
the lab's errors with plain advice: a tile the source lacks, a damaged or wrong file, a source
that can't be reached (offline_advice says what works offline). Whether a source has a tile is
asked once and remembered (source_has_tile).
"""
from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path

import numpy as np

from bharateo.data.gdal import forget_remote_failures, gdal_env, is_remote
from bharateo.data.grid import GlobalWindow, check_tile_grid, tile_extent, tile_extent_text
from bharateo.data.worldcover import (COVERAGE_LAT, SAMPLE_TILES, TILE_DEGREES, TILE_PIXELS,
                                      DataSource, bundled_tile_path, open_url, redact_text,
                                      tile_filename, tile_global_offset, tile_url, url_and_auth)
from bharateo.errors import (BharatEOError, LandTileMissingError, MissingTileError,
                             SourceUnreachableError, TileFileError)


SYNTHETIC_TAG = "BHARATEO_SYNTHETIC_FIXTURE"  # set by test fixtures; never on real WorldCover
# provenance status of a tile the source has no file for and whose 3-degree cell holds no land in
# the GLOBE 1 km land mask (bharateo/data/landmask.py): ESA publishes no tile there (open sea)
NOT_PUBLISHED = "not published (sea)"
PROVENANCE_TAGS = ("product_tile", "product_version", "copyright", "license", "time_start",
                   "time_end")  # the tags ESA writes into every WorldCover v200 COG


def tags_say_worldcover(tags: dict, tile: str) -> bool:
    """True when a file's own tags say it is ESA WorldCover 2021 v200 tile `tile`.

    ESA writes product_tile, product_version 'V2.0.0' and time_start '2021-01-01...' into each COG;
    a file carrying SYNTHETIC_TAG (this project's test fixtures) is never WorldCover."""
    return (SYNTHETIC_TAG not in tags and tags.get("product_tile") == tile
            and str(tags.get("product_version", "")).upper() in ("V2.0.0", "V200")
            and str(tags.get("time_start", "")).startswith("2021"))


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
    if not is_remote(path):
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


def _part_way_error(exc: Exception, tile: str, path: str, where: str) -> BharatEOError:
    """A read that failed after the file opened: the network (SourceUnreachableError, worth
    another try), a local file itself (TileFileError: damaged or truncated, named), or, for a
    remote file GDAL gives no reason for, SourceUnreachableError naming both possibilities."""
    text = redact_text(exc.__cause__ or exc)[:160]  # rasterio: "Read failed. See previous..."
    if re.search(r"CURL error|HTTP response code|timed out|Connection", text, re.I):
        return SourceUnreachableError(
            f"Reading tile {tile} from {where} failed part-way ({text}): the connection broke. "
            "Try again; nothing was cached.")
    if is_remote(path):  # GDAL says no more than "read failed" for a stalled range request too
        return SourceUnreachableError(
            f"Reading tile {tile} from {where} failed part-way ({text}): either the connection "
            "broke (then trying again helps) or the file on the mirror is damaged (then it must "
            f"be copied there again: {redact_text(path)}). Nothing was cached.")
    return TileFileError(
        f"The tile file {redact_text(path)} (tile {tile}, from {where}) is damaged: its header "
        f"opens but its pixels can't be read ({text}); it is probably truncated or corrupt. "
        "Trying again won't help: copy the file again from the WorldCover bucket.")


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
        if deadline is not None and deadline - time.monotonic() <= 0:
            raise SourceUnreachableError(f"Reading tile {tile} from {source.describe()} ran "
                                         "out of time. Try again later.")
        t_row, t_col = tile_global_offset(lon0, lat0)
        r0, c0 = max(window.row, t_row), max(window.col, t_col)
        r1 = min(window.row + window.size, t_row + TILE_PIXELS)
        c1 = min(window.col + window.size, t_col + TILE_PIXELS)
        tile_window = Window(c0 - t_col, r0 - t_row, c1 - c0, r1 - r0)
        box = [int(tile_window.col_off), int(tile_window.row_off), int(tile_window.width),
               int(tile_window.height)]
        path, where = _tile_source(tile, source)
        try:
            with rasterio.Env(**gdal_env(source, deadline)):
                try:
                    src = rasterio.open(path)
                except Exception as exc:  # rasterio raises RasterioIOError / CPLE_* variants
                    raise _classify_open_error(exc, tile, path, source) from exc
                with src:
                    if src.crs is None and is_remote(path):  # GDAL gave up inside the header
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
                forget_remote_failures(source)  # the mirror may get the file later
                raise
            missing.append(tile)
            parts.append({"tile": tile, "status": NOT_PUBLISHED, "path": redact_text(path),
                          "window": box})
            continue
        except SourceUnreachableError as exc:
            forget_remote_failures(source)
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
            forget_remote_failures(source)
            raise
        out[r0 - window.row:r1 - window.row, c0 - window.col:c1 - window.col] = block
        used.append(where)
        parts.append({"tile": tile, "status": "read", "path": redact_text(path), "source": where,
                      "window": box, **info})
    if missing:
        forget_remote_failures(source)  # GDAL caches a 404 too; a mirror may add the tile later
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

        env = gdal_env(source, GDAL_HTTP_TIMEOUT=max(1, math.ceil(timeout)),
                        GDAL_HTTP_CONNECTTIMEOUT=max(1, math.ceil(timeout)),
                        GDAL_HTTP_LOW_SPEED_TIME=max(1, math.ceil(timeout)), GDAL_HTTP_MAX_RETRY=0)
        try:
            with rasterio.Env(**env), rasterio.open(source.tile_path(tile)):
                answer["ok"] = True
        except Exception:
            forget_remote_failures(source)

    thread = threading.Thread(target=probe, daemon=True, name=f"probe-{tile}")
    thread.start()
    thread.join(timeout + 1)  # GDAL's own timeouts end the request; this bounds DNS too
    ok = bool(answer.get("ok"))
    _HAS_TILE[(source, tile)] = (ok, time.monotonic())
    return ok
