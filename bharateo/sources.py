"""Pixel sources: where a chip's input bands come from, and which bands they are.

The band list travels with the data: a ChipConfig names its source, the chips built from it
carry the source's bands (`ChipSet.bands`), and RunConfig sets the model's input channels from
the source (`ModelConfig.in_chans == len(bands)`), so no module writes "3 channels" itself.
A new source (e.g. Sentinel-2 L2A reflectance) is one PixelSource and one line in PIXEL_SOURCES,
plus the reader that cuts its chips with those bands.
"""
from __future__ import annotations

from dataclasses import dataclass

from bharateo.errors import ConfigError
from bharateo.worldcover import PALETTE_BANDS


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
}
DEFAULT_SOURCE = "worldcover"  # runs saved before sources existed have no key: palette RGB


def pixel_source(name: str) -> PixelSource:
    """The PixelSource registered as `name`. Raises ConfigError naming the known sources."""
    try:
        return PIXEL_SOURCES[name]
    except (KeyError, TypeError):
        known = ", ".join(f"'{n}'" for n in PIXEL_SOURCES)
        raise ConfigError(f"Unknown pixel source {name!r}: this lab has {known}. A run saved by a "
                          "newer version of the lab needs that version to load.") from None
