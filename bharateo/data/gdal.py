"""GDAL settings for every remote read (WorldCover tiles, Sentinel-2 bands), and forgetting a
source's failures in GDAL's /vsicurl/ cache (a ctypes call into the libgdal rasterio loaded)."""
from __future__ import annotations

import math
import time

from bharateo.data.worldcover import DataSource

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
DEADLINE_KEYS = ("GDAL_HTTP_TIMEOUT", "GDAL_HTTP_CONNECTTIMEOUT", "GDAL_HTTP_LOW_SPEED_TIME")
_UNCACHED_SOURCES: set[str] = set()


def gdal_env(source: DataSource | None = None, deadline: float | None = None,
             **overrides) -> dict:
    """rasterio.Env settings for a read: GDAL_ENV with `overrides`; with `deadline`
    (time.monotonic() seconds) each request's time limits (DEADLINE_KEYS) capped to the whole
    seconds left (at least 1); for a `source` whose failures GDAL could not be made to forget
    (forget_remote_failures), its URLs read uncached."""
    env = {**GDAL_ENV, **overrides}
    if deadline is not None:
        cap = max(1, math.ceil(deadline - time.monotonic()))
        env.update({key: min(GDAL_ENV[key], cap) for key in DEADLINE_KEYS})
    if source is None:
        return env
    prefix = "/vsicurl/" + source.location.rstrip("/") + "/"
    if prefix in _UNCACHED_SOURCES:
        env["CPL_VSIL_CURL_NON_CACHED"] = prefix
    return env


def forget_remote_failures(source: DataSource) -> None:
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


def is_remote(path: str) -> bool:
    """True for a URL (GDAL reads it through /vsicurl/), False for a local path."""
    return "://" in path
