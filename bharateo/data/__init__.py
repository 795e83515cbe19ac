"""The pixels: ESA WorldCover tiles and their grid (worldcover.py), regions read with rasterio
windows and cached under data/ (roi.py), land-cover overviews (overview.py), the land mask
(landmask.py), pixel sources and their bands (sources.py), Sentinel-2 L2A (sentinel2/),
reflectance normalisation and pictures (reflectance.py), chips cut from regions (chips.py) and
the reshapes between chips and tokens (patches.py: patchify, unpatchify; the models use them).

Builds on bharateo.config; knows nothing of models, training, storage or the app.
"""
