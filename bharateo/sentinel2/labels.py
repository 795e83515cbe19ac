"""WorldCover labels on a Sentinel-2 region's UTM grid (class-preserving reprojection)."""
from __future__ import annotations

import math

import numpy as np

from bharateo.errors import SourceUnreachableError
from bharateo.roi import GlobalWindow, read_window
from bharateo.sentinel2.read import RegionGrid
from bharateo.worldcover import NODATA, PIXELS_PER_DEGREE, DataSource, data_source_from_env


# --- WorldCover labels on the region's grid --------------------------------------------------
WC_PIXEL_DEG = 1 / PIXELS_PER_DEGREE
MODE_ABOVE_M = 20.0  # target pixels coarser than this take the most frequent class (mode)


def worldcover_on_grid(grid: RegionGrid, source: DataSource | None = None,
                       deadline: float | None = None) -> tuple[np.ndarray, dict]:
    """WorldCover native codes reprojected onto the region's UTM grid -> (S x S uint8, provenance
    of the WorldCover read: tiles, tags, synthetic, source).

    The WorldCover pixels covering the region (plus a 2 px margin) are read with roi.read_window
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
    try:
        native, info = read_window(window, source or data_source_from_env(), deadline)
    except SourceUnreachableError as exc:  # its advice is about WorldCover regions, not labels
        raise SourceUnreachableError(
            f"The Sentinel-2 pixels were found, but their labels come from ESA WorldCover, and "
            f"that read failed: {exc} Offline, put the WorldCover tile for this place in the "
            "folder named by BHARATEO_WORLDCOVER_DIR (or prefetch the region while online); "
            "BHARATEO_S2_DIR only holds the Sentinel-2 scenes.") from None
    src_transform = Affine(WC_PIXEL_DEG, 0, col0 * WC_PIXEL_DEG - 180,
                           0, -WC_PIXEL_DEG, 90 - row0 * WC_PIXEL_DEG)
    out = np.zeros((grid.size, grid.size), np.uint8)
    method = Resampling.mode if grid.pixel_m > MODE_ABOVE_M else Resampling.nearest
    reproject(native, out, src_transform=src_transform, src_crs=CRS.from_epsg(4326),
              src_nodata=NODATA, dst_transform=Affine(*grid.transform), dst_crs=grid.crs,
              dst_nodata=NODATA, resampling=method, tolerance=0)  # exact, not approximated
    info = {**info, "global_window": [row0, col0, size], "resampling": method.name}
    return out, info
