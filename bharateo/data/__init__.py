"""The pixels: ESA WorldCover tiles and their grid (worldcover.py), regions read with rasterio
windows and cached under data/ (roi.py), land-cover overviews (overview.py), the land mask
(landmask.py), pixel sources and their bands (sources.py), Sentinel-2 L2A (sentinel2/),
reflectance normalisation and pictures (reflectance.py), and chips cut from regions (chips.py).

Builds on bharateo.config; knows nothing of models, training, storage or the app.
"""
