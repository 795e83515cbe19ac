"""ESA WorldCover 10 m 2021 v200: class tables, palette, tile grid and where tiles live.

The tables are the BharatEO-v0 notebook's: 11 native codes collapse into 8 classes, and each
class has one palette colour, which is how a label map becomes the model's 3-channel input.

No-data (native code 0: open sea, outside coverage) is not a land-cover class: it collapses to
NODATA_ID (255), outside the class ids 0..7, is painted NODATA_COLOR_255 (black), and a patch
that is mostly no-data gets the label IGNORE_INDEX. The rule for chips and patch labels lives in
one place: the docstring of bharateo/data/chips.py.
"""
from __future__ import annotations

import math
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bharateo.config import environment

NATIVE_WORLDCOVER_CLASSES = {
    10: "Tree cover",
    20: "Shrubland",
    30: "Grassland",
    40: "Cropland",
    50: "Built-up",
    60: "Bare / sparse vegetation",
    70: "Snow and ice",
    80: "Permanent water bodies",
    90: "Herbaceous wetland",
    95: "Mangroves",
    100: "Moss and lichen",
}
NODATA = 0  # native code: sea and areas outside coverage

CLASS_NAMES = [
    "tree",
    "cropland",
    "grass_shrub",
    "built_up",
    "bare_sparse",
    "water",
    "wetland_mangrove",
    "rare_other",
]
NUM_CLASSES = len(CLASS_NAMES)
CLASS_TO_ID = {name: i for i, name in enumerate(CLASS_NAMES)}

NATIVE_TO_COLLAPSED_NAME = {
    10: "tree",
    20: "grass_shrub",
    30: "grass_shrub",
    40: "cropland",
    50: "built_up",
    60: "bare_sparse",
    70: "rare_other",
    80: "water",
    90: "wetland_mangrove",
    95: "wetland_mangrove",
    100: "rare_other",
}
NODATA_ID = 255  # collapsed id of a no-data pixel; not a class (class ids are 0..NUM_CLASSES-1)
NODATA_NAME = "no data"
NODATA_HELP = "left out of losses and metrics"  # what the lab does with no-data pixels
# Patch label of a mostly no-data patch: PyTorch's CrossEntropyLoss default ignore_index.
IGNORE_INDEX = -100
# Codes WorldCover doesn't define (none occur in v200) stay rare_other, as in the notebook.
NATIVE_TO_COLLAPSED_ID = np.full(256, CLASS_TO_ID["rare_other"], dtype=np.uint8)
for _code, _name in NATIVE_TO_COLLAPSED_NAME.items():
    NATIVE_TO_COLLAPSED_ID[_code] = CLASS_TO_ID[_name]
NATIVE_TO_COLLAPSED_ID[NODATA] = NODATA_ID

CLASS_COLORS_255 = np.array([
    [35, 132, 67],     # tree
    [188, 189, 34],    # cropland
    [127, 191, 123],   # grass/shrub
    [215, 48, 39],     # built-up
    [217, 164, 65],    # bare/sparse
    [49, 130, 189],    # water
    [44, 162, 95],     # wetland/mangrove
    [189, 189, 189],   # rare/other
], dtype=np.uint8)
CLASS_COLORS = CLASS_COLORS_255.astype(np.float32) / 255.0
CLASS_COLORS_HEX = ["#%02x%02x%02x" % tuple(c) for c in CLASS_COLORS_255]
NODATA_COLOR_255 = (0, 0, 0)  # no-data in every picture and in the model's palette input
NODATA_COLOR_HEX = "#000000"
# Palette indexed by any collapsed id 0..255: the class colours, then black (NODATA_ID's colour).
PALETTE_255 = np.zeros((256, 3), dtype=np.uint8)
PALETTE_255[:NUM_CLASSES] = CLASS_COLORS_255
PALETTE_255[NODATA_ID] = NODATA_COLOR_255
PALETTE = PALETTE_255.astype(np.float32) / 255.0  # rows 0..7 equal CLASS_COLORS bit for bit
# The bands of the palette-RGB input the notebook's model reads: one per PALETTE column.
PALETTE_BANDS = ("red", "green", "blue")


def collapse_worldcover(native_map: np.ndarray) -> np.ndarray:
    """Native WorldCover codes (any shape, uint8) -> collapsed ids (uint8): classes 0..7, and
    NODATA_ID (255) for native code 0.

    np.take, not fancy indexing: the same lookup, ~40 % faster on chip-sized uint8 arrays."""
    return np.take(NATIVE_TO_COLLAPSED_ID, native_map)


def class_name(class_id: int) -> str:
    """Name of a collapsed id: a class name, or 'no data' for NODATA_ID / IGNORE_INDEX."""
    return CLASS_NAMES[class_id] if 0 <= class_id < NUM_CLASSES else NODATA_NAME


def labels_to_rgb(labels: np.ndarray) -> np.ndarray:
    """Collapsed ids (... x H x W, uint8 0..7 or NODATA_ID) -> palette colours (... x H x W x 3)
    float32 in [0, 1]; no-data is black."""
    return PALETTE[labels]


def labels_to_rgb_input(labels: np.ndarray) -> np.ndarray:
    """H x W collapsed ids -> 3 x H x W float32 palette RGB, the model's input layout."""
    return np.ascontiguousarray(PALETTE[labels].transpose(2, 0, 1))


# --- the 3-degree tile grid -------------------------------------------------------------------
TILE_DEGREES = 3
PIXELS_PER_DEGREE = 12000
TILE_PIXELS = TILE_DEGREES * PIXELS_PER_DEGREE  # 36000
COVERAGE_LAT = (-60.0, 84.0)  # WorldCover tiles span 60S..84N
PUBLIC_BASE_URL = "https://esa-worldcover.s3.eu-central-1.amazonaws.com/v200/2021/map"
ATTRIBUTION = (
    "ESA WorldCover project / Contains modified Copernicus Sentinel data (2021) "
    "processed by ESA WorldCover consortium"
)
CITATION = (
    "Zanaga et al. 2022, ESA WorldCover 10 m 2021 v200, https://doi.org/10.5281/zenodo.7254221"
)


def tile_origin(lon: float, lat: float) -> tuple[int, int]:
    """(lon0, lat0) of the south-west corner of the 3-degree tile holding lon/lat."""
    return (int(math.floor(lon / TILE_DEGREES)) * TILE_DEGREES,
            int(math.floor(lat / TILE_DEGREES)) * TILE_DEGREES)


def tile_id_from_origin(lon0: int, lat0: int) -> str:
    """(75, 27) -> 'N27E075'."""
    ns = "N" if lat0 >= 0 else "S"
    ew = "E" if lon0 >= 0 else "W"
    return f"{ns}{abs(lat0):02d}{ew}{abs(lon0):03d}"


def tile_id(lon: float, lat: float) -> str:
    """Tile id for a point: 77.23E 28.61N -> 'N27E075'."""
    return tile_id_from_origin(*tile_origin(lon, lat))


def tile_filename(tile: str) -> str:
    return f"ESA_WorldCover_10m_2021_v200_{tile}_Map.tif"


def tile_url(tile: str, base_url: str = PUBLIC_BASE_URL) -> str:
    return f"{base_url.rstrip('/')}/{tile_filename(tile)}"


# --- the bundled sample: one whole official tile shipped with the project (data/sample/README.md)
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "data" / "sample"
SAMPLE_TILES = ("N00E006",)  # Sao Tome and Principe, 6-9E 0-3N, the official v200 COG unchanged


def bundled_tile_path(tile: str) -> Path | None:
    """Path of the bundled official COG for `tile` (e.g. 'N00E006'), or None if not shipped.

    The bundle is read whenever the configured source lacks the tile, and before any network read
    (it is the same file ESA publishes), so a fresh offline machine can still load SAMPLE_ROIS."""
    path = SAMPLE_DIR / tile_filename(tile)
    return path if tile in SAMPLE_TILES and path.is_file() else None


def tile_global_offset(lon0: int, lat0: int) -> tuple[int, int]:
    """(row, col) of a tile's north-west pixel on the global 1/12000-degree grid."""
    return (90 - (lat0 + TILE_DEGREES)) * PIXELS_PER_DEGREE, (lon0 + 180) * PIXELS_PER_DEGREE


# --- where tiles are read from ---------------------------------------------------------------
REDACTED = "***"
# query parameters that carry a secret: tokens, keys, passwords, signed-URL parts (S3 X-Amz-*,
# Azure sig, GCS X-Goog-*)
_SECRET_PARAM = re.compile(r"(?i)^(x-amz-.*|x-goog-.*|.*token.*|.*key.*|.*secret.*|.*passw.*|"
                           r"sig|signature|.*credential.*|auth.*|sv|se|sp|st|spr|srt|ss)$")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")


def redact_url(url: str) -> str:
    """`url` with credentials replaced by '***': the user:password of its authority and the values
    of secret query parameters (token, key, signature, X-Amz-*, ...). Never raises; a URL without
    secrets comes back unchanged. 'http://u:t@h/x?token=a&b=1' -> 'http://***@h/x?token=***&b=1'."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/@\s]*@", f"//{REDACTED}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        query = "&".join(
            f"{k}={REDACTED}" if sep and _SECRET_PARAM.match(urllib.parse.unquote(k)) else f"{k}{sep}{v}"
            for k, sep, v in (item.partition("=") for item in query.split("&")))
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    """Any text (an error message, a GDAL log line) with every URL in it passed through
    redact_url, so no credential of a mirror URL is shown or stored."""
    # user:password first, whatever characters it holds (a URL allows ( ) ' in it, which end
    # _URL_IN_TEXT's match before the '@'), then each URL's secret query values
    text = re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]*@", rf"\1{REDACTED}@", str(text))
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def url_and_auth(url: str) -> tuple[str, dict]:
    """(url without user:password, HTTP headers carrying them as Basic auth) for urllib, which
    can't take credentials inside the URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    import base64

    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    netloc = parts.netloc.rsplit("@", 1)[1]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


class _SameOriginAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follows redirects, carrying an Authorization header only to the same scheme and host:
    urllib copies every header to wherever a server redirects (a CDN, another host, plain http)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        old, nxt = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if new is not None and (old.scheme, old.netloc) != (nxt.scheme, nxt.netloc):
            new.remove_header("Authorization")
        return new


def open_url(request: urllib.request.Request, timeout: float):
    """urllib's urlopen for our own small requests (HEAD probes, a look at what a server sent),
    except that credentials never follow a redirect to another host. Raises as urlopen does."""
    return urllib.request.build_opener(_SameOriginAuthRedirect).open(request, timeout=timeout)


@dataclass(frozen=True)
class DataSource:
    """Where WorldCover tiles come from: the public bucket, another base URL, or a local folder."""

    kind: str  # "public" | "url" | "folder"
    location: str  # may hold credentials (a mirror URL): show only `shown`, never this

    def __repr__(self) -> str:  # repr lands in logs and tracebacks: never the credentials
        return f"DataSource(kind={self.kind!r}, location={self.shown!r})"

    @property
    def shown(self) -> str:
        """The location as it may be shown or stored: credentials redacted (redact_url)."""
        return self.location if self.kind == "folder" else redact_url(self.location)

    def tile_path(self, tile: str) -> str:
        if self.kind == "folder":
            return str(Path(self.location) / tile_filename(tile))
        return tile_url(tile, self.location)

    def shown_tile_path(self, tile: str) -> str:
        """tile_path(tile) with credentials redacted, for messages and provenance."""
        return self.tile_path(tile) if self.kind == "folder" else redact_url(self.tile_path(tile))

    def describe(self) -> str:
        """'the WorldCover mirror at http://***@host/path', credentials redacted."""
        return {
            "public": "the public ESA WorldCover bucket",
            "url": f"the WorldCover mirror at {self.shown}",
            "folder": f"the local folder {self.location}",
        }[self.kind]

    @property
    def cache_key(self) -> str:
        """Short id so cached ROIs from different sources never mix. A URL's credentials are left
        out: a mirror whose token changes keeps its cache."""
        if self.kind == "public":
            return "public"
        import hashlib
        digest = hashlib.sha256(f"{self.kind}:{self.shown}".encode()).hexdigest()[:10]
        return f"{self.kind}-{digest}"


def data_source_from_env() -> DataSource:
    """BHARATEO_WORLDCOVER_DIR (a folder) wins, then BHARATEO_WORLDCOVER_URL, else the bucket."""
    if (folder := environment.WORLDCOVER_DIR.get()) is not None:
        return DataSource("folder", str(folder))
    if (url := environment.WORLDCOVER_URL.get()) is not None:
        return DataSource("url", url)
    return DataSource("public", PUBLIC_BASE_URL)
