"""Where land is, per WorldCover tile: is a tile the source has no file for open sea, or land?

ESA publishes a WorldCover tile for every 3 x 3-degree cell that holds land and none over open
sea, so a tile missing from a folder or mirror is only "not published" when its cell holds no
land. The land comes from the GLOBE 1 km land mask (NOAA NGDC's GLOBE digital elevation model,
30 arc-second = 1/120-degree cells, a cell is sea where GLOBE has no elevation; most lakes are
land), as shipped by the PyPI package `global-land-mask` 1.0.0 (MIT licence, Todd Karin;
2.5 MB installed: one compressed 21600 x 43200 boolean array, True = ocean, rows from 90N
southwards, columns from 180W eastwards).

The package's own `global_land_mask.globe` unpacks the whole array (933 MB) at import, too much
for a teacher's laptop serving the app, so `land_tiles()` reads the same file row band by row
band (3 degrees = 360 mask rows at a time, about 16 MB) and keeps one bit per tile. Every 1 km
cell of a tile is looked at, so an island of one GLOBE cell makes its tile land. Within
WorldCover's coverage (60S..84N) GLOBE finds land in 2659 tiles; ESA publishes about 2650
(Zanaga et al. 2022), so the two agree to a handful of coastal tiles.
"""
from __future__ import annotations

import functools
import importlib.util
import zipfile
from pathlib import Path

import numpy as np

from bharateo.data.worldcover import TILE_DEGREES

MASK_PACKAGE = "global-land-mask"  # PyPI name, pinned in requirements.txt
MASK_FILE = "globe_combined_mask_compressed.npz"  # inside the package: mask, lat, lon arrays
MASK_CELLS_PER_DEGREE = 120  # GLOBE: 30 arc-second cells (about 1 km)
MASK_SHAPE = (180 * MASK_CELLS_PER_DEGREE, 360 * MASK_CELLS_PER_DEGREE)  # (21600, 43200)
TILE_ROWS, TILE_COLS = 180 // TILE_DEGREES, 360 // TILE_DEGREES  # 60 x 120 tiles on the globe


class LandMaskUnavailable(RuntimeError):
    """The land mask package is not installed or its file is not the expected array."""


def _mask_path() -> Path:
    spec = importlib.util.find_spec("global_land_mask")  # finds it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise LandMaskUnavailable(
            f"The land mask package {MASK_PACKAGE} is not installed: pip install -r requirements.txt")
    return Path(list(spec.submodule_search_locations)[0]) / MASK_FILE


@functools.lru_cache(maxsize=1)
def land_tiles() -> np.ndarray:
    """TILE_ROWS x TILE_COLS (60 x 120) bool: True where the 3 x 3-degree tile holds at least one
    GLOBE land cell. Row 0 is the tile band 87N..90N, column 0 the band 180W..177W (the tile with
    south-west corner (lon0, lat0) is [(90 - lat0) // 3 - 1, (lon0 + 180) // 3]).

    About 1 CPU-second and 80 MB peak, once per process. Raises LandMaskUnavailable when the
    package is missing or its array is not 21600 x 43200 bool."""
    path = _mask_path()
    table = np.zeros((TILE_ROWS, TILE_COLS), dtype=bool)
    band_rows = TILE_DEGREES * MASK_CELLS_PER_DEGREE  # 360
    try:
        with zipfile.ZipFile(path) as archive, archive.open("mask.npy") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            if tuple(shape) != MASK_SHAPE or fortran or dtype != np.dtype(bool):
                raise LandMaskUnavailable(f"{path} holds a {shape} {dtype} array, not the "
                                          f"{MASK_SHAPE} bool GLOBE mask")
            for band in range(TILE_ROWS):
                raw = fh.read(band_rows * MASK_SHAPE[1])
                ocean = np.frombuffer(raw, dtype=bool).reshape(band_rows, MASK_SHAPE[1])
                per_tile = ocean.reshape(band_rows, TILE_COLS, MASK_SHAPE[1] // TILE_COLS)
                table[band] = ~per_tile.all(axis=(0, 2))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise LandMaskUnavailable(f"The land mask {path} can't be read ({exc}): reinstall "
                                  f"{MASK_PACKAGE}") from exc
    return table


def tile_has_land(lon0: int, lat0: int) -> bool:
    """True when the WorldCover tile with south-west corner (lon0, lat0) degrees (multiples of 3)
    holds any land in the GLOBE 1 km mask. Raises LandMaskUnavailable (see land_tiles)."""
    row = (90 - lat0) // TILE_DEGREES - 1
    col = (lon0 + 180) // TILE_DEGREES
    if not (0 <= row < TILE_ROWS and 0 <= col < TILE_COLS):
        raise ValueError(f"({lon0}, {lat0}) is not the south-west corner of a 3-degree tile")
    return bool(land_tiles()[row, col])
