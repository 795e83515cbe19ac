"""Per-band normalisation of reflectance chips and their true / false colour pictures.

The notebook: "normalize each band by its dataset-wide mean / std before the MAE" and "visual
reconstruction panels show Sentinel-2 B4-B3-B2 true color and B8-B4-B3 false color".
  - BandStats: mean and standard deviation of each band over the training chips' pixels, no-data
    and cloud left out (a pixel whose label is NODATA_ID, see the no-data rule in
    bharateo/data/chips.py). Given to the model (its declared `band_stats` field), stored with
    the run (config.json "band_stats", written by storage.runs.save_run) and used at evaluation
    and reconstruction, so a run always reads pixels the way it was trained.
  - normalise: (reflectance - mean) / std per band; no-data pixels become 0 (the band mean), the
    normalised counterpart of the black no-data pixel of palette RGB.
  - composite: three bands as an RGB picture with a percentile stretch: each channel's 2nd and
    98th percentiles of the valid pixels map to 0 and 1 (the "cumulative count cut 2-98 %" that
    QGIS applies to multiband rasters by default).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bharateo.errors import ConfigError

STD_FLOOR = 1e-4  # reflectance units: a constant band (e.g. a fixture) must not divide by 0
STRETCH_PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation of reflectance (unitless, 0..1 nominal), from
    `pixels` valid pixels of the training chips."""

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixels: int = 0

    def to_dict(self) -> dict:
        return {"bands": list(self.bands), "mean": list(self.mean), "std": list(self.std),
                "pixels": self.pixels}

    @classmethod
    def from_dict(cls, d) -> "BandStats":
        """Checked: ConfigError for a wrong shape, a non-finite value or a std <= 0."""
        try:
            stats = cls(tuple(str(b) for b in d["bands"]), tuple(float(m) for m in d["mean"]),
                        tuple(float(s) for s in d["std"]), int(d.get("pixels", 0)))
        except (KeyError, TypeError, ValueError):
            raise ConfigError("the band statistics ('band_stats') are damaged: they need bands, "
                              "mean and std lists") from None
        if not (len(stats.bands) == len(stats.mean) == len(stats.std)) or not stats.bands:
            raise ConfigError("the band statistics ('band_stats') have lists of different lengths")
        if not all(math.isfinite(v) for v in stats.mean + stats.std) or min(stats.std) <= 0:
            raise ConfigError("the band statistics ('band_stats') hold a non-finite mean or a "
                              "standard deviation of 0 or less")
        return stats

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) as C x 1 x 1 float32, ready to broadcast over C x H x W."""
        return (np.asarray(self.mean, np.float32)[:, None, None],
                np.asarray(self.std, np.float32)[:, None, None])


def band_stats(batches, bands) -> BandStats:
    """BandStats over (pixels B x C x H x W float32 reflectance, valid B x H x W bool) batches,
    counting only valid pixels (float64 sums, so 384 chips x 10 bands lose nothing).
    ConfigError when no pixel is valid."""
    total = total_sq = None
    count = 0
    for pixels, valid in batches:
        v = valid[:, None].astype(np.float64)
        x = pixels.astype(np.float64) * v
        s, sq = x.sum(axis=(0, 2, 3)), (x * pixels).sum(axis=(0, 2, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += int(valid.sum())
    if not count:
        raise ConfigError("No valid (cloud-free, not no-data) pixel in the training chips, so "
                          "the bands can't be normalised. Choose other regions or dates.")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return BandStats(tuple(bands), tuple(float(m) for m in mean),
                     tuple(float(max(s, STD_FLOOR)) for s in std), count)


def normalise(pixels: np.ndarray, valid: np.ndarray, stats: BandStats) -> np.ndarray:
    """B x C x H x W reflectance -> B x C x H x W float32 (x - mean) / std, 0 where not valid."""
    mean, std = stats.arrays()
    out = (pixels - mean) / std
    out *= valid[:, None]
    return out.astype(np.float32, copy=False)


def denormalise(values: np.ndarray, stats: BandStats) -> np.ndarray:
    """C x H x W (or B x C x H x W) normalised values -> reflectance."""
    mean, std = stats.arrays()
    return values * std + mean


def stretch_limits(image: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """3 x H x W reflectance -> 3 x 2 (low, high) of each channel's STRETCH_PERCENTILES over the
    valid pixels (all pixels if none is valid)."""
    flat = image.reshape(3, -1)
    if valid is not None and valid.any():
        flat = flat[:, valid.ravel()]
    low, high = np.percentile(flat, STRETCH_PERCENTILES, axis=1)
    return np.stack([low, np.maximum(high, low + 1e-6)], axis=1)


def stretch(image: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """3 x H x W reflectance -> H x W x 3 float32 in [0, 1] with each channel's limits."""
    out = (image - limits[:, :1, None]) / (limits[:, 1:, None] - limits[:, :1, None])
    return np.clip(out, 0, 1).transpose(1, 2, 0).astype(np.float32)


def composite_bands(bands, which: str) -> tuple[int, int, int] | None:
    """Indices of the (R, G, B) bands of a 'true' (B04 B03 B02) or 'false' (B08 B04 B03)
    colour picture in `bands`, None if a band is missing."""
    from bharateo.data.sentinel2 import FALSE_COLOUR, TRUE_COLOUR

    wanted = TRUE_COLOUR if which == "true" else FALSE_COLOUR
    if not all(b in bands for b in wanted):
        return None
    return tuple(list(bands).index(b) for b in wanted)


def composite(pixels: np.ndarray, bands, which: str = "true", valid: np.ndarray | None = None,
              limits: np.ndarray | None = None) -> np.ndarray:
    """C x H x W reflectance -> H x W x 3 picture in [0, 1]: true or false colour, stretched by
    `limits` (default: this image's own 2-98 % limits); no-data pixels black."""
    idx = composite_bands(bands, which)
    if idx is None:
        raise ConfigError(f"A {which} colour picture needs bands "
                          f"{'B04 B03 B02' if which == 'true' else 'B08 B04 B03'}; these chips "
                          f"have {' '.join(bands)}.")
    rgb = pixels[list(idx)]
    out = stretch(rgb, stretch_limits(rgb, valid) if limits is None else limits)
    if valid is not None:
        out[~valid] = 0
    return out
