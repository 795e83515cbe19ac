"""Exceptions a teacher may see. Each message says what went wrong and what to do next."""


class BharatEOError(Exception):
    """Base class: anything the UI shows with st.error instead of a traceback."""


class RegionError(BharatEOError):
    """The region can't be used: over sea, outside WorldCover coverage, or overlapping another."""


class MissingTileError(RegionError):
    """The data source has no file for the tile(s) the region needs and they hold no land (GLOBE
    1 km land mask: ESA publishes none over open sea); raised when no tile of the region could be
    read. Its subclass LandTileMissingError is a missing tile that holds land."""

    def __init__(self, tile: str, where: str):
        self.tile = tile
        super().__init__(
            f"Tile {tile} is not available from {where}, and it holds no land (GLOBE 1 km land "
            "mask): ESA publishes no WorldCover tile over open sea, so this region is on open "
            "sea. Move the centre onto land.")


class LandTileMissingError(MissingTileError):
    """The data source has no file for a tile that holds land (GLOBE 1 km land mask,
    bharateo/data/landmask.py), so its part of the region can't be read as open sea. The message
    (bharateo/data/reads.py check_missing_tile_is_sea) names the tile, its extent, its official
    URL and how to get it."""

    def __init__(self, tile: str, message: str):
        self.tile = tile
        BharatEOError.__init__(self, message)


class SourceUnreachableError(BharatEOError):
    """The data source could not be reached (no network, server down, folder missing)."""


class TileFileError(BharatEOError):
    """A tile the source does serve is not usable WorldCover data: damaged or truncated, not a
    GeoTIFF (an HTML login or error page), or not on the WorldCover grid (another CRS, pixel size,
    origin, data type or shape). The message names the file and what is wrong."""


class CacheError(BharatEOError):
    """A cache file was unreadable. Raised only internally; callers get a fresh read instead."""


class ChipError(BharatEOError):
    """Chips can't be built: the chip size doesn't fit the region, or too few chips pass the rule."""


class ConfigError(BharatEOError):
    """A hyperparameter or config value is out of range."""


class RunNameError(BharatEOError):
    """A run name that is empty, too long, or would escape the checkpoints folder."""


class RunNotFoundError(BharatEOError):
    """No saved run by that name."""


class CheckpointMismatchError(BharatEOError):
    """Saved weights don't fit the model shape they are loaded into."""


class RunDamagedError(RunNotFoundError):
    """A saved run whose files are missing, unreadable or hold values of the wrong kind."""


class RunSaveError(BharatEOError):
    """A run could not be written: the checkpoints folder is read-only, full, or missing."""


class ChipStoreError(BharatEOError):
    """A chip store on disk can't be used or written: no manifest, a missing, truncated or damaged
    shard (named), or a folder that already exists. The message says to rebuild the store."""


class DistributedError(BharatEOError):
    """A distributed (torchrun) training can't start or was stopped: bad rank environment, an
    unavailable backend, or another rank that failed (its own error is printed above)."""


class DataFileError(BharatEOError):
    """A file, stored result or catalogue answer that is too big, nests too deeply, is not JSON,
    or holds values of the wrong type (bharateo.untrusted). The message names it and the problem."""
