"""Offline land-cover overviews for the Regions map: whole tiles at about 1 km, regions finer.

A WorldCover COG stores overviews (reduced copies at factors 2, 4, ... 64) beside its 10 m
pixels, so a whole 36000 x 36000 tile is read at ~1 km per pixel from a few KB of it, without
touching the full-resolution blocks. Cached regions are drawn from their cached arrays. Both
become RGBA PNGs in the class palette with no-data (sea, outside coverage) transparent, which
mapview puts on the map as image overlays. No Streamlit here.
"""
from __future__ import annotations

import base64
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bharateo.data.cache import binding_from_cache_name, read_cache
from bharateo.data.gdal import GDAL_ENV
from bharateo.data.reads import SYNTHETIC_TAG
from bharateo.data.roi import Roi, RoiSpec
from bharateo.files import atomic_write_bytes
from bharateo.errors import TileFileError
from bharateo.data.worldcover import CLASS_COLORS_255, NODATA, TILE_DEGREES, collapse_worldcover

log = logging.getLogger(__name__)

OVERVIEW_PX = 333  # a tile's side in overview pixels: 3 degrees / 333 ~ 1 km at the equator
REGION_OVERVIEW_PX = 256  # a cached region's side in overview pixels (~80 m for 2048 px)
TILE_FILE = re.compile(r"^ESA_WorldCover_10m_2021_v200_([NS]\d{2}[EW]\d{3})_Map\.tif$")
VERIFIED_LABEL = "ESA WorldCover 10 m 2021 v200"
UNVERIFIED_LABEL = "not verified as ESA WorldCover"
SYNTHETIC_LABEL = "synthetic test fixture"

Bounds = tuple[float, float, float, float]  # (west, south, east, north) in degrees


@dataclass(frozen=True)
class Overview:
    """One picture for the map: an RGBA PNG covering `bounds`, and what its pixels are."""

    name: str  # tile id or region name
    bounds: Bounds
    png: bytes
    data_label: str  # VERIFIED_LABEL, UNVERIFIED_LABEL or SYNTHETIC_LABEL

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def tile_bounds(tile: str) -> Bounds:
    """'N00E006' -> (6.0, 0.0, 9.0, 3.0): the tile's (west, south, east, north) in degrees."""
    lat0 = int(tile[1:3]) * (1 if tile[0] == "N" else -1)
    lon0 = int(tile[4:7]) * (1 if tile[3] == "E" else -1)
    return float(lon0), float(lat0), float(lon0 + TILE_DEGREES), float(lat0 + TILE_DEGREES)


def tile_data_label(tags: dict, tile: str) -> str:
    """What a tile file's own tags say its pixels are (as Roi.data_label says for a region).

    Real ESA tiles carry `product_tile` (their own id) and `product_version`; a fixture carries
    SYNTHETIC_TAG; anything else under an official name is not verified as WorldCover.
    """
    if SYNTHETIC_TAG in tags:
        return SYNTHETIC_LABEL
    if tags.get("product_tile") == tile and tags.get("product_version"):
        return VERIFIED_LABEL
    return UNVERIFIED_LABEL


def palette_rgba(native: np.ndarray) -> np.ndarray:
    """H x W native WorldCover codes -> H x W x 4 uint8: class palette, no-data (code 0) clear."""
    nodata = native == NODATA
    labels = collapse_worldcover(np.where(nodata, 10, native).astype(np.uint8))
    rgba = np.empty(native.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = CLASS_COLORS_255[labels]
    rgba[..., 3] = np.where(nodata, 0, 255)
    return rgba


def png_bytes(rgba: np.ndarray) -> bytes:
    """H x W x 4 uint8 -> PNG file bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _covers_tile(src, tile: str) -> bool:
    """True when the open file lies in EPSG:4326 exactly over `tile` (to 1/100 of a 10 m pixel).
    Enough for a ~1 km picture drawn at the tile's bounds; region reads check the full 10 m grid
    (grid.check_tile_grid)."""
    if not src.crs or src.crs.to_epsg() != 4326:
        return False
    return all(abs(a - b) < 1e-6 for a, b in zip(src.bounds, tile_bounds(tile)))


def read_tile_overview(path: str | Path, size: int = OVERVIEW_PX) -> tuple[np.ndarray, dict] | None:
    """A tile's native codes at `size` x `size` (uint8) from its own COG overviews, and its tags.

    Nearest-neighbour, so every pixel is a real WorldCover code (no blended classes); with the
    official overviews (factors 2..64) GDAL reads the 64x one (563 px) and subsamples it.
    None for a file without overviews (reading one would decode all 1.3 G pixels).
    Raises rasterio's errors for an unreadable file, TileFileError for a file named as a tile but
    not on that tile's WorldCover grid (it would be drawn in the wrong place).
    """
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.Env(**GDAL_ENV), rasterio.open(path) as src:
        if (m := TILE_FILE.match(Path(path).name)) and not _covers_tile(src, m.group(1)):
            raise TileFileError(f"{path} is named as tile {m.group(1)} but is not in EPSG:4326 "
                                f"over that tile's bounds ({src.crs}, {tuple(src.bounds)})")
        if not src.overviews(1):
            return None
        native = src.read(1, out_shape=(size, size), resampling=Resampling.nearest)
        return native, src.tags()


def tile_overview(tile: str, path: str | Path, cache_dir: Path | None = None,
                  size: int = OVERVIEW_PX) -> Overview | None:
    """The map overview of the tile file at `path` (None if it has no overviews or can't be read).

    With `cache_dir`, the PNG and label are kept in `cache_dir/overviews/`, keyed by the file's
    size and modification time, so a server restart does not read the tile again.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    cached = None
    if cache_dir is not None:
        stem = f"{tile}_{stat.st_size}_{stat.st_mtime_ns}_{size}"
        cached = Path(cache_dir) / "overviews" / f"{stem}.png"
        label_file = cached.with_suffix(".txt")
        if cached.is_file() and label_file.is_file():
            return Overview(tile, tile_bounds(tile), cached.read_bytes(), label_file.read_text())
    try:
        read = read_tile_overview(path, size)
    except Exception as exc:  # a damaged or foreign file: no overview, the map still draws
        log.warning("no overview for %s: %s", path, exc)
        return None
    if read is None:
        return None
    native, tags = read
    overview = Overview(tile, tile_bounds(tile), png_bytes(palette_rgba(native)),
                        tile_data_label(tags, tile))
    if cached is not None:
        try:
            atomic_write_bytes(cached, overview.png)
            atomic_write_bytes(cached.with_suffix(".txt"), overview.data_label.encode())
        except OSError as exc:  # a read-only data folder: the overview is still drawn
            log.warning("overview of %s not kept on disk: %s", tile, exc)
    return overview


def local_tiles(folder: str | Path | None) -> dict[str, Path]:
    """{tile id: path} of the official-name tile files in `folder` (empty if there is none)."""
    if not folder or not Path(folder).is_dir():
        return {}
    return {m.group(1): p for p in sorted(Path(folder).iterdir())
            if (m := TILE_FILE.match(p.name))}


def region_overview(name: str, native: np.ndarray, bounds: Bounds, data_label: str,
                    size: int = REGION_OVERVIEW_PX) -> Overview:
    """A region's native codes (N x N) as an overview of about `size` px (every k-th pixel)."""
    step = max(1, -(-max(native.shape) // size))
    return Overview(name, tuple(float(b) for b in bounds),
                    png_bytes(palette_rgba(native[::step, ::step])), data_label)


def cached_region_overviews(data_dir: Path, size: int = REGION_OVERVIEW_PX) -> list[Overview]:
    """Overviews of every region cached under `data_dir` (damaged files are skipped)."""
    out = []
    for path in sorted(Path(data_dir).glob("worldcover_*.npz")) if Path(data_dir).is_dir() else []:
        binding = binding_from_cache_name(path)
        try:  # the checksum binds pixels to the window the name gives: a swapped file is skipped
            native, provenance = read_cache(path, binding)
            roi = Roi(RoiSpec(path.stem, *provenance["center_lon_lat"], native.shape[0]), native,
                      provenance)
            out.append(region_overview(path.stem, native, provenance["bounds"], roi.data_label,
                                       size))
        except Exception:  # damaged, or provenance without what a picture needs: not drawn
            continue
    return out

