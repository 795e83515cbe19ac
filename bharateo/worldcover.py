"""ESA WorldCover 10 m 2021 v200: class tables, palette, tile grid and where tiles live.

The tables are the BharatEO-v0 notebook's: 11 native codes collapse into 8 classes, and each
class has one palette colour, which is how a label map becomes the model's 3-channel input.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
NODATA = 0  # sea and areas outside coverage

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
NATIVE_TO_COLLAPSED_ID = np.full(256, CLASS_TO_ID["rare_other"], dtype=np.uint8)
for _code, _name in NATIVE_TO_COLLAPSED_NAME.items():
    NATIVE_TO_COLLAPSED_ID[_code] = CLASS_TO_ID[_name]

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


def collapse_worldcover(native_map: np.ndarray) -> np.ndarray:
    """Native WorldCover codes (any shape, uint8) -> collapsed class ids 0..7 (uint8).

    np.take, not fancy indexing: the same lookup, ~40 % faster on chip-sized uint8 arrays."""
    return np.take(NATIVE_TO_COLLAPSED_ID, native_map)


def labels_to_rgb(labels: np.ndarray) -> np.ndarray:
    """Class ids (... x H x W) -> palette colours (... x H x W x 3) float32 in [0, 1]."""
    return CLASS_COLORS[labels]


def labels_to_rgb_input(labels: np.ndarray) -> np.ndarray:
    """H x W class ids -> 3 x H x W float32 palette RGB, the model's input layout."""
    return np.ascontiguousarray(CLASS_COLORS[labels].transpose(2, 0, 1))


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


def tile_global_offset(lon0: int, lat0: int) -> tuple[int, int]:
    """(row, col) of a tile's north-west pixel on the global 1/12000-degree grid."""
    return (90 - (lat0 + TILE_DEGREES)) * PIXELS_PER_DEGREE, (lon0 + 180) * PIXELS_PER_DEGREE


# --- where tiles are read from ---------------------------------------------------------------
@dataclass(frozen=True)
class DataSource:
    """Where WorldCover tiles come from: the public bucket, another base URL, or a local folder."""

    kind: str  # "public" | "url" | "folder"
    location: str

    def tile_path(self, tile: str) -> str:
        if self.kind == "folder":
            return str(Path(self.location) / tile_filename(tile))
        return tile_url(tile, self.location)

    def describe(self) -> str:
        return {
            "public": "the public ESA WorldCover bucket",
            "url": f"the WorldCover mirror at {self.location}",
            "folder": f"the local folder {self.location}",
        }[self.kind]

    @property
    def cache_key(self) -> str:
        """Short id so cached ROIs from different sources never mix."""
        if self.kind == "public":
            return "public"
        import hashlib
        digest = hashlib.sha256(f"{self.kind}:{self.location}".encode()).hexdigest()[:10]
        return f"{self.kind}-{digest}"


# stand-in until the source branch merges
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
SAMPLE_TILES = ("N00E006",)


def bundled_tile_path(tile: str) -> Path | None:  # stand-in until the source branch merges
    path = SAMPLE_DIR / tile_filename(tile)
    return path if tile in SAMPLE_TILES and path.is_file() else None


def data_source_from_env() -> DataSource:
    """BHARATEO_WORLDCOVER_DIR (a folder) wins, then BHARATEO_WORLDCOVER_URL, else the bucket."""
    folder = os.environ.get("BHARATEO_WORLDCOVER_DIR", "").strip()
    if folder:
        return DataSource("folder", str(Path(folder).expanduser().resolve()))
    url = os.environ.get("BHARATEO_WORLDCOVER_URL", "").strip()
    if url:
        return DataSource("url", url.rstrip("/"))
    return DataSource("public", PUBLIC_BASE_URL)
