"""Sentinel-2 test material: the real shared L2A crops, WorldCover label fixtures for their places,
and a tiny STAC API on 127.0.0.1.

The reflectance is real (../shared/data/sentinel2/, see its README): a Sentinel-2A L2A scene over
the Western Sahara (29RKH, 2020-02-19) downsampled 10x by its publisher, so its "10 m" bands are
100 m pixels and its 20 m bands 200 m. No WorldCover tile exists here for that place (N24W012), so
the labels come from fixture tiles written by `write_label_fixture` on the real WorldCover grid,
tagged BHARATEO_SYNTHETIC_FIXTURE like every fixture of tests/support/fixture_tiles.py; the app calls
them "synthetic test fixture".
"""
from __future__ import annotations

import json
import math
import shutil
import threading
from pathlib import Path

import numpy as np

from bharateo.data.roi import RoiSpec
from bharateo.data.worldcover import PIXELS_PER_DEGREE, TILE_DEGREES, tile_id_from_origin, tile_origin
from tests.support.fixture_tiles import RangeHTTPServer, synthetic_native, write_fixture_tile
from tests.support.paths import SHARED

SHARED_S2 = SHARED / "data" / "sentinel2"
SCENE_ID = "S2A_29RKH_20200219_0_L2A"
SCENE_DIR = SHARED_S2 / "S2A_29RKH_20200219_L2A_100m"
SCENE_ITEM = SCENE_DIR / f"{SCENE_ID}.json"
BELGIUM_TIF = (SHARED_S2 / "S2_31UFS_2021-06_monthly_10m" /
               "S2L2A_31UFS_2021-06_monthly_4band_B02B03B04B08_10m.tif")
# Regions inside the scene's footprint (its pixels are 100 m here: 256 px = 25.6 km)
SAHARA = RoiSpec("sahara_29rkh", -11.45, 24.80, 256)
SAHARA_EAST = RoiSpec("sahara_east", -11.10, 24.55, 192)
DATES = "2020-01-01/2020-03-01"  # a search range holding the scene's date (2020-02-19)
VARIED = {40: .35, 60: .3, 20: .2, 50: .1, 30: .05}  # fixture label classes: share of each
LABEL_BLOCK_PX = 120  # fixture class blocks of 1/100 degree (~1.1 km): a few per 16 px patch


def scene_folder(root: Path, scenes: dict[str, dict] | None = None) -> Path:
    """A BHARATEO_S2_DIR-style folder under `root` holding the shared scene (its band files
    copied: a link to a file outside the folder is never read) once per entry of `scenes`
    {scene id: item property overrides}, each with its own item JSON; default: the shared scene
    as it is."""
    root = Path(root)
    base = json.loads(SCENE_ITEM.read_text())
    for scene_id, overrides in (scenes or {SCENE_ID: {}}).items():
        folder = root / scene_id
        folder.mkdir(parents=True, exist_ok=True)
        for f in SCENE_DIR.glob("*.tif"):
            if not (folder / f.name).exists():
                shutil.copyfile(f, folder / f.name)
        item = json.loads(json.dumps(base))
        item["id"] = scene_id
        item["properties"].update(overrides)
        (folder / f"{scene_id}.json").write_text(json.dumps(item))
    return root


def write_label_fixture(folder: Path, bounds, seed: int = 7, weights="arid",
                        block_px: int = LABEL_BLOCK_PX) -> list[Path]:
    """WorldCover fixture tiles (tagged BHARATEO_SYNTHETIC_FIXTURE) filled with synthetic classes
    over `bounds` (W, S, E, N degrees, plus a margin), in block_px x block_px blocks."""
    west, south, east, north = bounds
    margin = 0.02
    west, south, east, north = west - margin, south - margin, east + margin, north + margin
    col0, row0 = math.floor(west * PIXELS_PER_DEGREE), math.floor(-north * PIXELS_PER_DEGREE)
    cols = math.ceil(east * PIXELS_PER_DEGREE) - col0
    rows = math.ceil(-south * PIXELS_PER_DEGREE) - row0
    coarse = synthetic_native(-(-rows // block_px) + 1, -(-cols // block_px) + 1, seed, weights)
    fill = np.repeat(np.repeat(coarse, block_px, 0), block_px, 1)[:rows, :cols]
    paths = []
    tiles = {tile_origin(lon, lat) for lon in (west, east) for lat in (south, north)}
    for lon0, lat0 in sorted(tiles):
        t_col = lon0 * PIXELS_PER_DEGREE
        t_row = -(lat0 + TILE_DEGREES) * PIXELS_PER_DEGREE
        paths.append(write_fixture_tile(folder, tile_id_from_origin(lon0, lat0),
                                        [(row0 - t_row, col0 - t_col, fill)]))
    return paths


SCENE_BOUNDS = (-11.98, 24.29, -10.87, 25.31)


def sahara_labels(folder: Path, spec: RoiSpec = SAHARA, **kw) -> list[Path]:
    """Label fixture around a region of the shared scene (100 m pixels)."""
    half = spec.size * 100 / 2 / 100_000 + 0.03
    return write_label_fixture(folder, (spec.lon - half * 1.2, spec.lat - half,
                                        spec.lon + half * 1.2, spec.lat + half), **kw)


class StacServer:
    """A tiny STAC API on 127.0.0.1 for pystac-client: landing page (GET /), conformance, and
    item search (GET or POST /search) answering with `items` whose band hrefs point at band files
    served with HTTP range requests from `files` under /files/ (tests/fixture_tiles._RangeHandler).
    The search answers every item, as an API that ignores filters would; the client side decides
    (`honour_dates`: only the items in the search's datetime range and within its
    eo:cloud_cover limit, as Earth Search answers).
    `searches` records each search's body. `answer` (body -> dict or bytes), when set, is the
    search's whole answer instead (bytes sent as they are, chunked when `chunked`: no
    Content-Length), for catalogues that answer with something else."""

    def __init__(self, files: Path, items: list[dict], honour_dates: bool = False,
                 answer=None, chunked: bool = False):
        self.files, self.items, self.searches = Path(files), items, []
        self.honour_dates, self.answer, self.chunked = honour_dates, answer, chunked
        self._files_server = RangeHTTPServer(self.files)

    def __enter__(self) -> "StacServer":
        import http.server

        self._files_server.start()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, obj, status=200):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _raw(self, body: bytes):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if outer.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        for i in range(0, len(body), 2**20):
                            part = body[i:i + 2**20]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        self.wfile.write(b"0\r\n\r\n")
                    except OSError:  # the client stopped reading: as it should
                        pass
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def _search(self, body):
                outer.searches.append(body)
                if outer.answer is not None:
                    answer = outer.answer(body)
                    return self._raw(answer) if isinstance(answer, bytes) else self._json(answer)
                feats = [outer.item_with_urls(it) for it in outer.items
                         if not outer.honour_dates
                         or (outer.in_dates(it, body) and outer.under_cloud_limit(it, body))]
                self._json({"type": "FeatureCollection", "features": feats, "links": []})

            def do_GET(self):
                path = self.path.split("?")[0].rstrip("/")
                if path == "":
                    self._json(outer.landing())
                elif path == "/conformance":
                    self._json({"conformsTo": outer.CONFORMS})
                elif path == "/search":
                    self._search({"query": self.path})
                else:
                    self._json({"code": "NotFound"}, 404)

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                if self.path.split("?")[0].rstrip("/") == "/search":
                    self._search(body)
                else:
                    self._json({"code": "NotFound"}, 404)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._files_server.stop()

    @staticmethod
    def in_dates(item: dict, body: dict) -> bool:
        """Is the item's day within the search body's "first/last" datetime range?"""
        first, _, last = str(body.get("datetime", "")).partition("/")
        day = item["properties"]["datetime"][:10]
        return first[:10] <= day <= last[:10]

    @staticmethod
    def under_cloud_limit(item: dict, body: dict) -> bool:
        """Is the item's eo:cloud_cover within the search body's query limit (if it has one)?"""
        limit = ((body.get("query") or {}) if isinstance(body.get("query"), dict) else {}).get(
            "eo:cloud_cover", {}).get("lte")
        return limit is None or item["properties"].get("eo:cloud_cover", 0) <= limit

    CONFORMS = ["https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0/item-search#query"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def landing(self) -> dict:
        return {"type": "Catalog", "id": "fixture", "description": "test STAC API",
                "stac_version": "1.0.0", "conformsTo": self.CONFORMS,
                "links": [{"rel": "self", "href": self.url + "/"},
                          {"rel": "root", "href": self.url + "/"},
                          {"rel": "search", "href": self.url + "/search",
                           "type": "application/geo+json", "method": "POST"},
                          {"rel": "search", "href": self.url + "/search",
                           "type": "application/geo+json", "method": "GET"}]}

    def item_with_urls(self, item: dict) -> dict:
        """`item` with each band asset's href rewritten to /files/<scene folder>/<Bxx>.tif."""
        out = json.loads(json.dumps(item))
        out["links"] = []
        for key, asset in out.get("assets", {}).items():
            name = Path(asset.get("href", "")).name
            if name.endswith(".tif"):
                asset["href"] = f"{self._files_server.url}/{item['id']}/{name}"
        return out


def shared_item(scene_id: str = SCENE_ID, **properties) -> dict:
    item = json.loads(SCENE_ITEM.read_text())
    item["id"] = scene_id
    item["properties"].update(properties)
    return item


def copy_scene_files(root: Path, scene_id: str) -> Path:
    """The shared scene's band files copied under root/scene_id (served over HTTP)."""
    folder = Path(root) / scene_id
    folder.mkdir(parents=True, exist_ok=True)
    for f in SCENE_DIR.glob("*.tif"):
        shutil.copy(f, folder / f.name)
    return folder
