"""WorldCover labels on a Sentinel-2 region's UTM grid (class-preserving reprojection)."""
from __future__ import annotations

import math
import re

import numpy as np

from bharateo.errors import (
    BharatEOError,
    LandTileMissingError,
    MissingTileError,
    RegionError,
    SourceUnreachableError,
)
from bharateo.data.grid import GlobalWindow
from bharateo.data.reads import read_window
from bharateo.data.sentinel2.read import RegionGrid
from bharateo.data.worldcover import NODATA, PIXELS_PER_DEGREE, DataSource, data_source_from_env


# --- WorldCover labels on the region's grid --------------------------------------------------
WC_PIXEL_DEG = 1 / PIXELS_PER_DEGREE
MODE_ABOVE_M = 20.0  # target pixels coarser than this take the most frequent class (mode)


def worldcover_on_grid(grid: RegionGrid, source: DataSource | None = None,
                       deadline: float | None = None) -> tuple[np.ndarray, dict]:
    """WorldCover native codes reprojected onto the region's UTM grid -> (S x S uint8, provenance
    of the WorldCover read: tiles, tags, synthetic, source).

    The WorldCover pixels covering the region (plus a 2 px margin) are read with reads.read_window
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
    wc = source or data_source_from_env()
    try:
        native, info = read_window(window, wc, deadline)
    except (SourceUnreachableError, MissingTileError) as exc:  # its advice is for WorldCover regions
        raise labels_error(exc, [t for t, _, _ in window.tiles()], wc) from None
    src_transform = Affine(WC_PIXEL_DEG, 0, col0 * WC_PIXEL_DEG - 180,
                           0, -WC_PIXEL_DEG, 90 - row0 * WC_PIXEL_DEG)
    out = np.zeros((grid.size, grid.size), np.uint8)
    method = Resampling.mode if grid.pixel_m > MODE_ABOVE_M else Resampling.nearest
    reproject(native, out, src_transform=src_transform, src_crs=CRS.from_epsg(4326),
              src_nodata=NODATA, dst_transform=Affine(*grid.transform), dst_crs=grid.crs,
              dst_nodata=NODATA, resampling=method, tolerance=0)  # exact, not approximated
    info = {**info, "global_window": [row0, col0, size], "resampling": method.name}
    return out, info


def labels_error(exc: BharatEOError, tiles: list[str], source: DataSource) -> BharatEOError:
    """One piece of advice for labels that couldn't be read (`exc` from reads.read_window): the
    WorldCover tiles they need, why they couldn't be read, and where to get them. The scene was
    found, so nothing here is about BHARATEO_S2_DIR. -> RegionError for a tile the source has no
    file for (MissingTileError), else SourceUnreachableError."""
    needed = f"ESA WorldCover tile{'s' if len(tiles) > 1 else ''} {', '.join(tiles)}"
    if isinstance(exc, LandTileMissingError):
        why = (f"{source.describe()} has no file for tile {exc.tile}, which holds land (GLOBE "
               f"1 km land mask), so it can't be read as sea")
    elif isinstance(exc, MissingTileError):
        why = (f"{source.describe()} has no file for it, and it holds no land (ESA publishes none "
               "over open sea)")
    else:
        why = re.split(r"\. (?=[A-Z`])", str(exc), maxsplit=1)[0].rstrip(".")  # what failed
    todo = ("Put that tile in the folder BHARATEO_WORLDCOVER_DIR names" if source.kind == "folder"
            else "Set BHARATEO_WORLDCOVER_DIR to a folder holding that tile")
    kind = RegionError if isinstance(exc, MissingTileError) else SourceUnreachableError
    return kind(f"The Sentinel-2 scene was found, but its land-cover labels need {needed}, which "
                f"could not be read: {why}. {todo}, or go online to read it from the WorldCover "
                "source.")
