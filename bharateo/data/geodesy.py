"""Ground sizes on the WGS84 ellipsoid: metres per degree and per WorldCover pixel at a latitude,
and the plain texts of a size, a place and a bounding box. Pure functions (no I/O).
"""
from __future__ import annotations

import math

from bharateo.data.worldcover import PIXELS_PER_DEGREE

WGS84_A = 6378137.0  # WGS84 semi-major axis, m (NIMA TR8350.2)
WGS84_F = 1 / 298.257223563  # WGS84 flattening
# metres in one degree of longitude at the equator, rounded (WGS84: 111 319.5 m; 110 574 m of
# latitude): the rough figure for "how many degrees is this many metres" where a few per cent
# don't matter (a search box, a message); ground sizes use metres_per_degree
METRES_PER_DEGREE_EQUATOR = 111_320


def metres_per_degree(lat: float) -> tuple[float, float]:
    """(north-south, east-west) metres of one degree at latitude `lat` on the WGS84 ellipsoid.

    One degree of latitude is M * pi/180 and one of longitude N * cos(lat) * pi/180, with M and N
    the meridional and prime-vertical radii of curvature: 110 574 m and 111 319 m at the equator,
    110 829 m and 97 812 m at Delhi (28.6N)."""
    e2 = WGS84_F * (2 - WGS84_F)
    phi = math.radians(lat)
    w = math.sqrt(1 - e2 * math.sin(phi) ** 2)
    meridional, prime_vertical = WGS84_A * (1 - e2) / w ** 3, WGS84_A / w
    return meridional * math.pi / 180, prime_vertical * math.cos(phi) * math.pi / 180


def pixel_metres(lat: float) -> tuple[float, float]:
    """(north-south, east-west) ground size in metres of one WorldCover pixel at latitude `lat`.

    A pixel is 1/12000 degree each way (metres_per_degree / PIXELS_PER_DEGREE): 9.21-9.31 m
    north-south (equator to pole), and 8.15 m east-west at Delhi (28.6N), 9.28 m at the equator.
    """
    ns, ew = metres_per_degree(lat)
    return ns / PIXELS_PER_DEGREE, ew / PIXELS_PER_DEGREE


def ground_size(pixels: int, lat: float) -> str:
    """2048, 28.61 -> '2048 px ≈ 18.9 km N-S x 16.7 km E-W at 28.61°N' (WGS84, see pixel_metres).

    The east-west size is the one at `lat` (a region's centre); it shrinks with cos(latitude).
    """
    ns, ew = pixel_metres(lat)
    return (f"{pixels} px ≈ {km_text(pixels * ns)} N-S x {km_text(pixels * ew)} E-W "
            f"at {abs(lat):.2f}°{'N' if lat >= 0 else 'S'}")


def km_text(metres: float) -> str:
    """18929.3 -> '18.9 km'; 590.4 -> '590 m'."""
    return f"{metres / 1000:.1f} km" if metres >= 1000 else f"{metres:.0f} m"


def lon_lat_text(lon: float, lat: float) -> str:
    """77.23, 28.61 -> '77.2300°E 28.6100°N' (degrees, 4 decimals: about 11 m)."""
    return f"{abs(lon):.4f}°{'E' if lon >= 0 else 'W'} {abs(lat):.4f}°{'N' if lat >= 0 else 'S'}"


def bounds_text(bounds) -> str:
    """(west, south, east, north) degrees -> 'W 77.1447, S 28.5247, E 77.3153, N 28.6953'."""
    west, south, east, north = bounds
    return f"W {west:.4f}, S {south:.4f}, E {east:.4f}, N {north:.4f}"
