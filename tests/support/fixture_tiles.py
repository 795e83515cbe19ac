"""Synthetic WorldCover-grid fixtures for tests and benchmarks.

No real WorldCover tiles are available offline, so tests write their own GeoTIFFs on the real
tile grid (EPSG:4326, 1/12000-degree pixels, origin at the tile's NW corner, 36000 x 36000 uint8,
nodata 0) and read them from a folder or through HTTP range requests (`RangeHTTPServer`), the same
GDAL /vsicurl/ path that reads the public bucket.

Every file written here carries the dataset tag `SYNTHETIC_TAG` (bharateo.data.roi) so the app can
never present fixture pixels as WorldCover. Only the given fills are written; the rest of the
tile is sparse (no blocks stored) and reads back as 0 = "sea / outside coverage".

Importable as `tests.support.fixture_tiles` from the repo root (benchmarks in bench/ use it too).
"""
from __future__ import annotations

import email.utils
import http.server
import math
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bharateo.data.grid import GlobalWindow
from bharateo.data.reads import SYNTHETIC_TAG
from bharateo.data.roi import NOTEBOOK_ROIS, RoiSpec, roi_window
from bharateo.data.worldcover import (
    NODATA,
    PIXELS_PER_DEGREE,
    TILE_DEGREES,
    TILE_PIXELS,
    tile_filename,
    tile_global_offset,
    tile_origin,
)

# --- synthetic class maps ---------------------------------------------------------------------
# Class weights roughly follow the notebook's printed native class counts for the three ROIs.
PRESETS: dict[str, dict[int, float]] = {
    # delhi_ncr: built-up and tree dominant, some cropland, grass, water
    "urban": {50: 0.50, 10: 0.30, 40: 0.08, 30: 0.05, 80: 0.04, 20: 0.015, 60: 0.01, 90: 0.005},
    # shekhawati: cropland dominant with shrub, built-up, tree
    "arid": {40: 0.80, 20: 0.07, 50: 0.05, 10: 0.05, 30: 0.02, 60: 0.008, 80: 0.002},
    # mathura_belt: cropland dominant with grass, built-up, tree
    "cropland": {40: 0.78, 30: 0.06, 50: 0.08, 10: 0.06, 60: 0.01, 80: 0.008, 20: 0.002},
}
ROI_PRESETS = {"delhi_ncr": "urban", "shekhawati": "arid", "mathura_belt": "cropland"}

COARSE_PX = 32       # coarse class blocks
FINE_PX = 8          # finer layer overriding some cells
FINE_FRACTION = 0.3  # share of fine cells that override the coarse class


def _weights(class_weights) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(class_weights, str):
        class_weights = PRESETS[class_weights]
    codes = np.array(list(class_weights), dtype=np.uint8)
    w = np.array([class_weights[c] for c in class_weights], dtype=np.float64)
    if codes.size == 0 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("class_weights needs at least one positive weight")
    if np.any(codes == NODATA):
        raise ValueError("class_weights must not contain the nodata code 0")
    return codes, w / w.sum()


def _layer(rng, rows, cols, cell, codes, p) -> np.ndarray:
    """Random classes in cell x cell blocks, with a random phase so blocks don't align to 0."""
    off_r, off_c = rng.integers(0, cell, size=2)
    n_r = (rows + off_r) // cell + 1
    n_c = (cols + off_c) // cell + 1
    grid = rng.choice(codes, size=(n_r, n_c), p=p)
    up = np.repeat(np.repeat(grid, cell, axis=0), cell, axis=1)
    return up[off_r:off_r + rows, off_c:off_c + cols]


def synthetic_native(size_rows: int, size_cols: int, seed: int = 0,
                     class_weights: dict[int, float] | str = "urban") -> np.ndarray:
    """Deterministic uint8 map of native WorldCover codes with spatially coherent patches.

    Coarse ~32 px class blocks, with a finer ~8 px layer overriding ~30% of its cells: 128 px
    chips hold several classes, 16 px patches usually have one dominant class but not always.
    `class_weights` is {native code: weight} or a preset name from PRESETS. Never contains 0.
    """
    codes, p = _weights(class_weights)
    rng = np.random.default_rng(seed)
    coarse = _layer(rng, size_rows, size_cols, COARSE_PX, codes, p)
    fine = _layer(rng, size_rows, size_cols, FINE_PX, codes, p)
    off_r, off_c = rng.integers(0, FINE_PX, size=2)
    mask_grid = rng.random(((size_rows + off_r) // FINE_PX + 1,
                            (size_cols + off_c) // FINE_PX + 1)) < FINE_FRACTION
    mask = np.repeat(np.repeat(mask_grid, FINE_PX, 0), FINE_PX, 1)[
        off_r:off_r + size_rows, off_c:off_c + size_cols]
    return np.where(mask, fine, coarse).astype(np.uint8, copy=False)


# --- the tile grid --------------------------------------------------------------------------------
def parse_tile(tile: str) -> tuple[int, int]:
    """'N27E075' -> (lon0, lat0) = (75, 27); 'S03W060' -> (-60, -3)."""
    m = re.fullmatch(r"([NS])(\d{2})([EW])(\d{3})", tile)
    if not m:
        raise ValueError(f"not a WorldCover tile id: {tile!r}")
    lat0 = int(m.group(2)) * (1 if m.group(1) == "N" else -1)
    lon0 = int(m.group(4)) * (1 if m.group(3) == "E" else -1)
    return lon0, lat0


def tile_rowcol(lon: float, lat: float) -> tuple[str, int, int]:
    """(tile id, row, col) of the tile pixel holding lon/lat, computed as `roi_window` does."""
    from bharateo.data.worldcover import tile_id_from_origin

    lon0, lat0 = tile_origin(lon, lat)
    col = math.floor((lon - lon0) * PIXELS_PER_DEGREE)
    row = math.floor((lat0 + TILE_DEGREES - lat) * PIXELS_PER_DEGREE)
    return tile_id_from_origin(lon0, lat0), row, col


def window_in_tile(window: GlobalWindow, tile: str) -> tuple[int, int]:
    """(row_off, col_off) of a global window's NW corner in `tile`'s pixel coords (may be <0)."""
    t_row, t_col = tile_global_offset(*parse_tile(tile))
    return window.row - t_row, window.col - t_col


def write_fixture_tile(folder, tile: str, fills=(), tags: dict | None = None,
                       grid: dict | None = None) -> Path:
    """Write a sparse, tiled, deflated 36000 x 36000 GeoTIFF on `tile`'s real grid.

    `fills` is a list of (row_off, col_off, uint8 array) in tile pixel coordinates; parts outside
    the tile are clipped. Everything not filled reads back as 0 (nodata). The file is named as
    the official tile and tagged BHARATEO_SYNTHETIC_FIXTURE=1, unless `tags` gives the tags to
    write instead (e.g. {} for an untagged file under an official name). `grid` overrides profile
    keys (crs, transform, width, height, dtype) to write a file that is NOT on the WorldCover grid
    under the official name (see WRONG_GRIDS).
    """
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    lon0, lat0 = parse_tile(tile)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / tile_filename(tile)
    profile = dict(
        driver="GTiff", width=TILE_PIXELS, height=TILE_PIXELS, count=1, dtype="uint8",
        # == rasterio.transform.from_origin(lon0, lat0 + 3, 1/12000, 1/12000), built directly
        # to avoid affine's PendingDeprecationWarning for `*` inside from_origin
        crs="EPSG:4326", transform=Affine(1 / PIXELS_PER_DEGREE, 0, lon0,
                                          0, -1 / PIXELS_PER_DEGREE, lat0 + TILE_DEGREES),
        nodata=NODATA, tiled=True, blockxsize=512, blockysize=512, compress="deflate",
        sparse_ok=True,
    )
    profile.update(grid or {})
    with rasterio.Env(GDAL_CACHEMAX=256):
        with rasterio.open(path, "w", **profile) as dst:
            dst.update_tags(**({SYNTHETIC_TAG: "1"} if tags is None else tags))
            for row_off, col_off, arr in fills:
                arr = np.asarray(arr, dtype=np.uint8)
                r0, c0 = max(row_off, 0), max(col_off, 0)
                r1 = min(row_off + arr.shape[0], TILE_PIXELS)
                c1 = min(col_off + arr.shape[1], TILE_PIXELS)
                if r1 <= r0 or c1 <= c0:
                    continue
                r1, c1 = min(r1, profile["height"]), min(c1, profile["width"])
                if r1 <= r0 or c1 <= c0:
                    continue
                part = arr[r0 - row_off:r1 - row_off, c0 - col_off:c1 - col_off]
                dst.write(part.astype(profile["dtype"]), 1, window=Window(c0, r0, c1 - c0, r1 - r0))
    return path


def wrong_grids(tile: str) -> dict[str, dict]:
    """`grid` overrides for write_fixture_tile: files under `tile`'s official name that are not on
    its WorldCover grid (each kind seen in the field: reprojected, resampled, shifted, retyped)."""
    from affine import Affine

    lon0, lat0 = parse_tile(tile)
    px = 1 / PIXELS_PER_DEGREE
    return {
        "utm32632": dict(crs="EPSG:32632", transform=Affine(10, 0, 500_000, 0, -10, 3_300_000)),
        "20m": dict(transform=Affine(2 * px, 0, lon0, 0, -2 * px, lat0 + TILE_DEGREES),
                    width=TILE_PIXELS // 2, height=TILE_PIXELS // 2),
        "shifted": dict(transform=Affine(px, 0, lon0 + 100 * px, 0, -px, lat0 + TILE_DEGREES)),
        "uint16": dict(dtype="uint16"),
    }


# --- the notebook fixture -------------------------------------------------------------------------
@dataclass
class FixtureInfo:
    """What `notebook_fixture` wrote and where to point tests."""

    folder: Path
    tiles: dict[str, Path]                 # tile id -> file
    rois: dict[str, RoiSpec]               # the three notebook ROIs (all inside N27E075)
    content: dict[str, tuple[str, int, int, int, int]] = field(default_factory=dict)
    # ^ name -> (tile, row_off, col_off, rows, cols) of each written block (edge block: N27E075 part)
    edge_lon_lat: tuple[float, float] = (0.0, 0.0)  # a 512-px window here straddles 78E
    edge_spec: RoiSpec | None = None                # RoiSpec("tile_edge", *edge_lon_lat, 512)
    sea_lon_lat: tuple[float, float] = (0.0, 0.0)   # inside N27E075 but unwritten (= nodata)
    sea_spec: RoiSpec | None = None
    missing_tile_lon_lat: tuple[float, float] = (0.0, 0.0)  # in N30E075, which is not written
    missing_tile: str = "N30E075"

    def path(self, tile: str) -> Path:
        return self.tiles[tile]


EDGE_LON_LAT = (77.995, 28.05)
SEA_LON_LAT = (76.5, 29.7)
MISSING_TILE_LON_LAT = (76.5, 31.5)


def notebook_fixture(folder, margin: int = 256, seed: int = 2021) -> FixtureInfo:
    """Write N27E075 (content around the three notebook ROIs plus an east-edge block) and N27E078
    (the east-edge block's other half) into `folder`; return a FixtureInfo.

    Each notebook ROI's 2048 window is covered with `margin` px of content on every side (preset
    per ROI: urban / arid / cropland). The edge block is 2048 rows x 3072 cols of one coherent map
    centred on 78E at EDGE_LON_LAT's row, split across the two tiles. SEA_LON_LAT (76.5E 29.7N)
    is more than 2048 px from any content, so any ROI up to 2048 px there is all nodata.
    """
    folder = Path(folder)
    fills75, content = [], {}
    rois = {}
    for i, spec in enumerate(NOTEBOOK_ROIS):
        rois[spec.name] = spec
        r, c = window_in_tile(roi_window(spec), "N27E075")
        n = spec.size + 2 * margin
        arr = synthetic_native(n, n, seed + i, ROI_PRESETS[spec.name])
        fills75.append((r - margin, c - margin, arr))
        content[spec.name] = ("N27E075", r - margin, c - margin, n, n)

    # east-edge block: one map, cols [36000 - 1536, 36000) in N27E075 and [0, 1536) in N27E078
    _, erow, _ = tile_rowcol(*EDGE_LON_LAT)
    half_w, rows = 1536, 2048
    edge = synthetic_native(rows, 2 * half_w, seed + 10, "cropland")
    fills75.append((erow - rows // 2, TILE_PIXELS - half_w, edge[:, :half_w]))
    content["edge_N27E075"] = ("N27E075", erow - rows // 2, TILE_PIXELS - half_w, rows, half_w)
    content["edge_N27E078"] = ("N27E078", erow - rows // 2, 0, rows, half_w)

    tiles = {
        "N27E075": write_fixture_tile(folder, "N27E075", fills75),
        "N27E078": write_fixture_tile(folder, "N27E078", [(erow - rows // 2, 0, edge[:, half_w:])]),
    }
    return FixtureInfo(
        folder=folder, tiles=tiles, rois=rois, content=content,
        edge_lon_lat=EDGE_LON_LAT, edge_spec=RoiSpec("tile_edge", *EDGE_LON_LAT, 512),
        sea_lon_lat=SEA_LON_LAT, sea_spec=RoiSpec("sea", *SEA_LON_LAT, 512),
        missing_tile_lon_lat=MISSING_TILE_LON_LAT, missing_tile="N30E075",
    )


def direct_read(path, row_off: int, col_off: int, rows: int, cols: int) -> np.ndarray:
    """Plain rasterio windowed read of a fixture file (for comparisons in tests)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        return src.read(1, window=Window(col_off, row_off, cols, rows))


# --- an HTTP server with Range support ------------------------------------------------------------
class _RangeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BharatEOFixture/1.0"

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _file(self) -> Path | None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        root = self.server.root
        target = (root / rel).resolve()
        if root not in target.parents or not target.is_file():
            return None
        return target

    def _send(self, data: bytes) -> None:
        # count first: once the client has the bytes, the count must already include them
        self.server.add_bytes(len(data))
        self.wfile.write(data)

    def _not_found(self, head: bool) -> None:
        body = b"Not Found\n"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self._send(body)

    @staticmethod
    def _parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
        """'bytes=a-b,c-,-n' -> [(start, end_inclusive)]; None = ignore header; [] = 416."""
        m = re.fullmatch(r"\s*bytes\s*=\s*(.+)", header)
        if not m:
            return None
        out = []
        for spec in m.group(1).split(","):
            spec = spec.strip()
            mm = re.fullmatch(r"(\d*)-(\d*)", spec)
            if not mm or (mm.group(1) == "" and mm.group(2) == ""):
                return None
            if mm.group(1) == "":  # suffix range: last n bytes
                n = int(mm.group(2))
                if n == 0:
                    continue
                out.append((max(size - n, 0), size - 1))
            else:
                start = int(mm.group(1))
                end = int(mm.group(2)) if mm.group(2) else size - 1
                if end < start:
                    return None
                if start >= size:
                    continue
                out.append((start, min(end, size - 1)))
        return out

    def _serve(self, head: bool) -> None:
        if self.server.stalls_now():  # accepted, and never answered (bounded by stop())
            self.server.stop_event.wait(120)
            self.close_connection = True
            return
        path = self._file()
        if path is None:
            self._not_found(head)
            return
        size = path.stat().st_size
        mtime = email.utils.formatdate(path.stat().st_mtime, usegmt=True)
        header = self.headers.get("Range")
        ranges = self._parse_ranges(header, size) if header else None
        if ranges == []:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(path, "rb") as f:
            if ranges is None:
                self.send_response(200)
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Last-Modified", mtime)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if not head:
                    while chunk := f.read(1 << 20):
                        self._send(chunk)
                return
            if len(ranges) == 1:
                start, end = ranges[0]
                self.send_response(206)
                self.send_header("Content-Type", "image/tiff")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Last-Modified", mtime)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                if not head:
                    f.seek(start)
                    self._send(f.read(end - start + 1))
                return
            boundary = "BHARATEO_FIXTURE_BOUNDARY"
            parts = []
            for start, end in ranges:
                f.seek(start)
                parts.append(
                    (f"--{boundary}\r\nContent-Type: image/tiff\r\n"
                     f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n").encode()
                    + f.read(end - start + 1) + b"\r\n")
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            self.send_response(206)
            self.send_header("Content-Type", f"multipart/byteranges; boundary={boundary}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self._send(body)

    def do_GET(self):
        self._serve(head=False)

    def do_HEAD(self):
        self._serve(head=True)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, port: int = 0, stall_after: int | None = None):
        super().__init__(("127.0.0.1", port), _RangeHandler)
        self.root = root
        self.bytes_sent = 0
        self.requests = 0
        self.stall_after, self.answered, self.stalled = stall_after, 0, 0
        self.stop_event = threading.Event()
        self._lock = threading.Lock()

    def stalls_now(self) -> bool:
        """Count one HTTP request; True once `stall_after` requests have been answered."""
        with self._lock:
            if self.stall_after is not None and self.answered >= self.stall_after:
                self.stalled += 1
                return True
            self.answered += 1
            return False

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def finish_request(self, request, client_address):
        with self._lock:
            self.requests += 1
        super().finish_request(request, client_address)


class RangeHTTPServer:
    """Serve `folder` on 127.0.0.1 (ephemeral port) with HTTP Range support, in a thread.

    with RangeHTTPServer(folder) as srv:
        rasterio.open(f"{srv.url}/ESA_WorldCover_10m_2021_v200_N27E075_Map.tif")
        srv.bytes_sent  # body bytes sent so far (all requests)

    Use a fresh server (= fresh port = fresh URL) per test when counting bytes: GDAL caches
    /vsicurl/ reads per URL for the whole process. With `stall_after=n` the server answers n HTTP
    requests (e.g. the file's header) and then accepts every later one and never answers it (a
    source that stalls mid-read) until stop().
    """

    def __init__(self, folder, port: int = 0, stall_after: int | None = None):
        self.folder = Path(folder).resolve()
        self.wanted_port = port  # 0 = any free port; a fixed one lets a test restart the server
        self.stall_after = stall_after
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "RangeHTTPServer":
        self._server = _Server(self.folder, self.wanted_port, self.stall_after)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop_event.set()
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> "RangeHTTPServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bytes_sent(self) -> int:
        return self._server.bytes_sent

    @property
    def requests(self) -> int:
        return self._server.requests

    @property
    def stalled(self) -> int:
        """HTTP requests accepted and left unanswered (stall_after)."""
        return self._server.stalled

    def reset_counts(self) -> None:
        with self._server._lock:
            self._server.bytes_sent = 0
            self._server.requests = 0


class StallingServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (a stalled Wi-Fi).

    with StallingServer() as srv: ... srv.url ...; leaving the block closes every connection."""

    def __init__(self):
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._conns, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self._conns.append(self._sock.accept()[0])
            except OSError:  # the 0.1 s accept timeout, or the socket closed
                continue

    def __enter__(self) -> "StallingServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._sock.close()

    @property
    def connections(self) -> int:
        return len(self._conns)


class AnswerServer:
    """An HTTP server on 127.0.0.1 that answers every request with one fixed reply (e.g. an HTML
    login page with status 200), counting requests: with AnswerServer(200, "text/html", b"<html>")
    as srv: ... srv.url ...; it stops when the block ends."""

    def __init__(self, status: int, content_type: str, body: bytes):
        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self, head=False):
                outer.requests += 1
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET(head=True)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "AnswerServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def closed_port_url(contains: str | None = None, avoid=("403", "404")) -> str:
    """A localhost URL nothing listens on (the port was bound, then released).

    By default the port number avoids the substrings "403"/"404" (error texts quote the URL);
    `contains="404"` instead picks a free port whose number contains that string.
    """
    import socket

    def free(port: int) -> int | None:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return None
            return s.getsockname()[1]

    if contains:
        candidates = (p for p in range(10000, 65536) if contains in str(p))
    else:
        candidates = iter(lambda: 0, None)  # ephemeral ports, forever
    for _ in range(200):
        port = free(next(candidates))
        if port and not (not contains and any(a in str(port) for a in avoid)):
            return f"http://127.0.0.1:{port}"
    raise RuntimeError("no free localhost port found")


def disk_usage(path) -> int:
    """Bytes actually allocated on disk (sparse files count only what is stored)."""
    st = os.stat(path)
    return getattr(st, "st_blocks", 0) * 512 or st.st_size
