"""Pixel sources: where a chip's input bands come from, and which bands they are.

The band list travels with the data: a ChipConfig names its source and carries its bands
(`ChipConfig.bands`), the chips built from it carry them too (`ChipSet.bands`), and the model's
input channels are the band list's length (`ModelConfig.for_chips`, which RunConfig calls), so
no module writes "3 channels" itself.
A new source (e.g. Sentinel-2 L2A reflectance) is one PixelSource and one line in PIXEL_SOURCES,
plus the reader that cuts its chips with those bands.
"""
from __future__ import annotations

from dataclasses import dataclass

from bharateo.config.settings import registered
from bharateo.data.worldcover import PALETTE_BANDS

# Sentinel-2 MSI bands (ESA band ids; read by bharateo/data/sentinel2/)
S2_BANDS_4 = ("B02", "B03", "B04", "B08")  # blue, green, red, near infrared: the 10 m bands
S2_BANDS_10 = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


@dataclass(frozen=True)
class PixelSource:
    """One kind of model input.

    name:        the key in PIXEL_SOURCES, saved in config.json as `chips.source`
    label:       what the app and CLI call it
    bands:       the input bands in channel order (a token is channel-major: C x p x p values)
    description: one sentence for the pages and `--help`
    """

    name: str
    label: str
    bands: tuple[str, ...]
    description: str

    @property
    def channels(self) -> int:
        """Input channels C of a chip (C x S x S) and of a token (C x p x p values)."""
        return len(self.bands)


PIXEL_SOURCES: dict[str, PixelSource] = {
    "worldcover": PixelSource(
        "worldcover", "WorldCover palette RGB", PALETTE_BANDS,
        "ESA WorldCover 10 m class ids drawn in the notebook's class palette (red, green, blue "
        "in [0, 1]; no-data black), as the BharatEO-v0 notebook's model reads them."),
    "s2-4band": PixelSource(
        "s2-4band", "Sentinel-2 4 band", S2_BANDS_4,
        "Sentinel-2 L2A surface reflectance, blue, green, red and near infrared (B02 B03 B04 B08, "
        "10 m), normalised per band; WorldCover labels reprojected onto the scene's grid."),
    "s2-10band": PixelSource(
        "s2-10band", "Sentinel-2 10 band", S2_BANDS_10,
        "Sentinel-2 L2A surface reflectance, the ten 10 m and 20 m bands (B02-B08, B8A, B11, "
        "B12; 20 m bands on the 10 m grid), normalised per band; WorldCover labels reprojected "
        "onto the scene's grid."),
}
DEFAULT_SOURCE = "worldcover"  # runs saved before sources existed have no key: palette RGB


def pixel_source(name: str) -> PixelSource:
    """The PixelSource registered as `name`. Raises ConfigError naming the known sources."""
    return registered(PIXEL_SOURCES, name, "pixel source")
