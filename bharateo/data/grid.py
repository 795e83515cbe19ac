"""The global WorldCover pixel grid: windows on it, tiles' extents, and the check that a file lies
on a tile's grid.

The grid is 1/12000 degree (about 10 m) in EPSG:4326, row 0 at 90N and column 0 at 180W; a tile
is TILE_DEGREES (3) degrees, TILE_PIXELS (36000) pixels a side, named by its south-west corner
(bharateo/data/worldcover.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from bharateo.data.worldcover import (PIXELS_PER_DEGREE, TILE_DEGREES, TILE_PIXELS,
                                      tile_id_from_origin)
from bharateo.data.geodesy import METRES_PER_DEGREE_EQUATOR
from bharateo.errors import TileFileError


@dataclass(frozen=True)
class GlobalWindow:
    """A pixel window on the global 1/12000-degree grid (row 0 = 90N, col 0 = 180W)."""

    row: int
    col: int
    size: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        west = self.col / PIXELS_PER_DEGREE - 180
        north = 90 - self.row / PIXELS_PER_DEGREE
        return (west, north - self.size / PIXELS_PER_DEGREE,
                west + self.size / PIXELS_PER_DEGREE, north)

    def overlaps(self, other: "GlobalWindow") -> bool:
        return (self.row < other.row + other.size and other.row < self.row + self.size
                and self.col < other.col + other.size and other.col < self.col + self.size)

    def tiles(self) -> list[tuple[str, int, int]]:
        """[(tile id, lon0, lat0)] of every tile the window touches."""
        out = []
        r_tiles = range(self.row // TILE_PIXELS, (self.row + self.size - 1) // TILE_PIXELS + 1)
        c_tiles = range(self.col // TILE_PIXELS, (self.col + self.size - 1) // TILE_PIXELS + 1)
        for tr in r_tiles:
            for tc in c_tiles:
                lat0 = 90 - (tr + 1) * TILE_DEGREES
                lon0 = tc * TILE_DEGREES - 180
                out.append((tile_id_from_origin(lon0, lat0), lon0, lat0))
        return out


def check_tile_grid(src, tile: str, lon0: int, lat0: int, shown: str) -> None:
    """TileFileError unless the open file `src` lies on WorldCover tile `tile`'s grid: CRS
    EPSG:4326, 1/12000-degree square pixels, north-west corner at (lon0, lat0 + 3), 36000 x 36000
    pixels of uint8 in band 1. The message names the file (`shown`) and each mismatch."""
    wrong = []
    epsg = src.crs.to_epsg() if src.crs else None
    if epsg != 4326:
        wrong.append(f"its CRS is {src.crs or 'missing'}, not EPSG:4326 (longitude/latitude)")
    else:
        t, px = src.transform, 1 / PIXELS_PER_DEGREE
        if not (math.isclose(t.a, px, rel_tol=1e-6) and math.isclose(-t.e, px, rel_tol=1e-6)
                and t.b == 0 and t.d == 0):
            wrong.append(f"its pixels are {t.a:.4g} x {abs(t.e):.4g} degrees (about "
                         f"{t.a * METRES_PER_DEGREE_EQUATOR:.0f} m), not 1/12000 degree (10 m)")
        elif abs(t.c - lon0) > px / 100 or abs(t.f - (lat0 + TILE_DEGREES)) > px / 100:
            wrong.append(f"its north-west corner is at ({t.c:.6f}, {t.f:.6f}), not at the tile's "
                         f"({lon0}, {lat0 + TILE_DEGREES})")
    if (src.height, src.width) != (TILE_PIXELS, TILE_PIXELS):
        wrong.append(f"it is {src.width} x {src.height} pixels, not {TILE_PIXELS} x {TILE_PIXELS}")
    if src.count < 1 or src.dtypes[0] != "uint8":
        wrong.append(f"its data type is {src.dtypes[0] if src.count else 'missing'}, not uint8")
    if wrong:
        raise TileFileError(
            f"The file {shown} has the name of WorldCover tile {tile} but is not on the WorldCover "
            f"grid: {'; '.join(wrong)}. Replace it with the official file "
            "(ESA_WorldCover_10m_2021_v200_<TILE>_Map.tif, unchanged).")


def tile_extent(lon0: int, lat0: int) -> str:
    """'78-81E, 27-30N': the extent of the 3-degree tile with south-west corner (lon0, lat0)."""
    def span(a: int, pos: str, neg: str) -> str:
        b = a + TILE_DEGREES
        if a >= 0:
            return f"{a}-{b}{pos}"
        if b <= 0:
            return f"{-b}-{-a}{neg}"
        return f"{-a}{neg}-{b}{pos}"
    return f"{span(lon0, 'E', 'W')}, {span(lat0, 'N', 'S')}"


def tile_extent_text(tile: str) -> str:
    """'N00E006' -> 'lon 6–9 E, lat 0–3 N' (a tile is TILE_DEGREES square from its SW corner)."""
    lat0 = int(tile[1:3]) * (1 if tile[0] == "N" else -1)
    lon0 = int(tile[4:7]) * (1 if tile[3] == "E" else -1)
    lon1, lat1 = lon0 + TILE_DEGREES, lat0 + TILE_DEGREES
    return (f"lon {abs(lon0)}–{abs(lon1)} {'E' if lon1 > 0 else 'W'}, "
            f"lat {abs(lat0)}–{abs(lat1)} {'N' if lat1 > 0 else 'S'}")
