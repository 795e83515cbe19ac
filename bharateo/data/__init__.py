"""The pixels: ESA WorldCover tiles and their grid (worldcover.py), regions (roi.py: the Roi
type and load_roi) read with rasterio windows (reads.py; the global grid in grid.py, GDAL's
settings in gdal.py) through one read / cache / deadline flow shared with Sentinel-2 (cache.py,
deadline.py), ground sizes on WGS84 (geodesy.py), land-cover overviews (overview.py), the land
mask (landmask.py), pixel sources and their bands (sources.py), Sentinel-2 L2A (sentinel2/),
reflectance normalisation and pictures (reflectance.py), chips cut from regions (chips.py) and
the reshapes between chips and tokens (patches.py: patchify, unpatchify; the models use them).

Builds on bharateo.config; knows nothing of models, training, storage or the app.
"""
