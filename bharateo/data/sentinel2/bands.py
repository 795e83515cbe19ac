"""Sentinel-2 L2A constants: bands, asset names, SCL no-data classes, the reflectance
scale and offset, the default catalogue (sources: ESA's L2A product specification, Element 84
Earth Search)."""
from __future__ import annotations

from bharateo.config import environment
from bharateo.data.sources import PIXEL_SOURCES, S2_BANDS_4, S2_BANDS_10

# --- bands (ESA Sentinel-2 MSI; names as in the L2A product and its COGs) ----------------------
BANDS_10, BANDS_4 = S2_BANDS_10, S2_BANDS_4  # the bands of sources "s2-10band" and "s2-4band"
BAND_NAMES = {"B02": "blue", "B03": "green", "B04": "red", "B05": "red edge 1",
              "B06": "red edge 2", "B07": "red edge 3", "B08": "near infrared",
              "B8A": "narrow near infrared", "B11": "short-wave infrared 1.6 µm",
              "B12": "short-wave infrared 2.2 µm"}
BAND_RESOLUTION_M = {**dict.fromkeys(("B02", "B03", "B04", "B08"), 10),
                     **dict.fromkeys(("B05", "B06", "B07", "B8A", "B11", "B12", "SCL"), 20)}
# STAC asset keys: Earth Search v1 uses common names, older catalogues (and folders) band ids
ASSET_KEYS = {"B02": ("blue", "B02"), "B03": ("green", "B03"), "B04": ("red", "B04"),
              "B05": ("rededge1", "B05"), "B06": ("rededge2", "B06"), "B07": ("rededge3", "B07"),
              "B08": ("nir", "B08"), "B8A": ("nir08", "B8A"), "B11": ("swir16", "B11"),
              "B12": ("swir22", "B12"), "SCL": ("scl", "SCL")}
S2_SOURCES = {name: PIXEL_SOURCES[name].bands for name in ("s2-4band", "s2-10band")}
TRUE_COLOUR = ("B04", "B03", "B02")  # the notebook: "B4-B3-B2 true color"
FALSE_COLOUR = ("B08", "B04", "B03")  # "B8-B4-B3 false color" (vegetation red)
# Scene Classification Layer classes that are no-data for the model (ESA, Sentinel-2 L2A
# Product Specification / Sen2Cor SCL legend).
SCL_NODATA_CLASSES = {0: "no data", 1: "saturated or defective", 3: "cloud shadow",
                      8: "cloud, medium probability", 9: "cloud, high probability",
                      10: "thin cirrus"}
SCL_CLOUD_CLASSES = (3, 8, 9, 10)  # of those, cloud shadow and cloud (reported apart)
BAND_NODATA_DN = 0  # L2A band no-data value
QUANTIFICATION_VALUE = 10000  # L2A: reflectance = (DN + BOA_ADD_OFFSET) / 10000
BOA_ADD_OFFSET = -1000  # processing baseline >= 04.00 (products since 25 Jan 2022)
OFFSET_BASELINE = 4.0
DEFAULT_STAC_URL = environment.S2_STAC_URL.default  # Element 84 Earth Search
DEFAULT_COLLECTION = environment.S2_COLLECTION.default  # sentinel-2-l2a
DEFAULT_DATES = "2021-01-01/2021-12-31"  # WorldCover 2021's year
DEFAULT_MAX_CLOUD = 20.0
SEARCH_MAX_ITEMS = 200
# Hosts whose band files a catalogue's items may name, besides the catalogue's own host: Earth
# Search v1's COGs are in AWS's open-data bucket (its items' asset hrefs). Another catalogue's
# hosts are named in BHARATEO_S2_ASSET_HOSTS (comma-separated).
EARTH_SEARCH_ASSET_HOSTS = ("sentinel-cogs.s3.us-west-2.amazonaws.com",)
MAX_ITEM_BYTES = 2**20  # one STAC item file (the shared scene's: 21 KB)
MAX_SEARCH_ANSWER_BYTES = 16 * 2**20  # one catalogue answer (a page of 100 items: ~2 MB)
SEARCH_TIMEOUT_S = 15.0
S2_LABEL = "Sentinel-2 L2A reflectance"
ATTRIBUTION = "Contains modified Copernicus Sentinel data"
