"""Sentinel-2 L2A reflectance for a region, with WorldCover labels on the same grid.

The notebook's next step ("the only change to the pipeline is the source of the pixels"): a
region is a square of `size` pixels on a Sentinel-2 scene's own grid (its UTM zone, 10 m), centred
on lon/lat. This module
  1. finds the scene: a STAC API search (pystac-client) for the region, a date range and a cloud
     limit, or the scenes of a local folder (BHARATEO_S2_DIR: <scene>/B02.tif ... SCL.tif plus the
     scene's STAC item JSON); of the scenes that cover the whole region, the least cloudy wins;
  2. reads only the region's window of each band with rasterio (GDAL /vsicurl/ range requests for
     URLs, the same bounded GDAL settings as WorldCover, see gdal.GDAL_ENV); the 20 m bands (B05
     B06 B07 B8A B11 B12, SCL) are put on the 10 m grid by repeating each pixel 2 x 2 (nearest:
     measured values are kept, never blended across a cloud edge);
  3. turns digital numbers into reflectance: (DN + offset) / 10000, offset -1000 for processing
     baseline >= 04.00 unless the item says it was applied already (reflectance_rule);
  4. makes no-data: a band's no-data (DN 0) and the Scene Classification Layer's classes in
     SCL_NODATA_CLASSES (no data, saturated/defective, cloud shadow, cloud medium/high
     probability, thin cirrus) are WorldCover code 0 in the region's label map, so the project's
     one no-data rule (bharateo/data/chips.py) applies unchanged;
  5. reprojects WorldCover (EPSG:4326) onto the region's UTM grid with a class-preserving
     resampling (worldcover_on_grid) for the patch labels;
  6. caches each region under data/ like WorldCover regions: atomic write, checksum bound to the
     region and query, provenance (scene id, date, cloud cover, bands, CRS, MGRS tile).

The package, by concern: bands.py (constants), scenes.py (where scenes come from, the query),
read.py (grid, scene choice, band reads, reflectance), labels.py (WorldCover on the grid),
region.py (the region, its cache, a folder's presets). Everything is importable from here.
"""
from bharateo.data.sentinel2.bands import (  # noqa: F401
    BANDS_10, BANDS_4, BAND_NAMES, BAND_RESOLUTION_M, ASSET_KEYS, S2_SOURCES, TRUE_COLOUR,
    FALSE_COLOUR, SCL_NODATA_CLASSES, SCL_CLOUD_CLASSES, BAND_NODATA_DN, QUANTIFICATION_VALUE, BOA_ADD_OFFSET,
    OFFSET_BASELINE, DEFAULT_STAC_URL, DEFAULT_COLLECTION, DEFAULT_DATES, DEFAULT_MAX_CLOUD,
    SEARCH_MAX_ITEMS, SEARCH_TIMEOUT_S, S2_LABEL, ATTRIBUTION,
)
from bharateo.data.sentinel2.scenes import (  # noqa: F401
    S2Source, s2_source_from_env, S2Query, Scene, scene_from_item, folder_scenes, stac_scenes,
    footprint_contains, in_range,
)
from bharateo.data.sentinel2.read import (  # noqa: F401
    RegionGrid, region_grid, choose_scene, scene_bounds, place_text, reflectance_rule, read_band, read_scene_window,
    to_reflectance,
)
from bharateo.data.sentinel2.labels import (  # noqa: F401
    WC_PIXEL_DEG, MODE_ABOVE_M, worldcover_on_grid,
)
from bharateo.data.sentinel2.region import (  # noqa: F401
    S2Roi, cache_path, cache_binding, write_cache, read_cache, find_scene, load_s2_roi,
    folder_presets, folder_places, folder_dates, source_of_rois, folder_footprints, folder_notes,
    folder_outside, folder_pixel_metres, S2_PIXEL_M,
)
