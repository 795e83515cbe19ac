"""The tiny model and chips the quick tests train: a 32-dim, one-layer, two-head model
(`TINY_MODEL`, `tiny_model_config(**changes)` for a variant of it), random-label chip sets
(`tiny_chips`) and a made-up 4-band source's chips (`four_band_chips`). Nothing here reads a
file; every value is seeded."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from bharateo.data.chips import ChipSet, patch_mode_labels
from bharateo.models.notebook import ModelConfig

TINY_MODEL = ModelConfig(embed_dim=32, depth=1, heads=2)  # trains a step in milliseconds

FAKE_BANDS = ("b1", "b2", "b3", "nir")  # a made-up 4-band source: not any real sensor's


def tiny_model_config(**changes) -> ModelConfig:
    """TINY_MODEL with `changes` (any ModelConfig field: img_size, arch, in_chans...)."""
    return replace(TINY_MODEL, **changes)


def tiny_chips(n: int = 16, seed: int = 0) -> ChipSet:
    """n chips of 32 px, 8 px patches, random labels of classes 0-3 (seeded)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=(n, 32, 32)).astype(np.uint8)
    return ChipSet(labels, patch_mode_labels(labels, 8), np.zeros(n, np.int64),
                   np.zeros((n, 2), np.int64), ["synthetic"], 32, 8)


def four_band_chips(n: int = 12, size: int = 32, patch: int = 8, seed: int = 0) -> ChipSet:
    """n chips of 4 fake bands (uniform values in [0, 1]) with random class ids as labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 8, size=(n, size, size)).astype(np.uint8)
    pixels = rng.random((n, len(FAKE_BANDS), size, size), dtype=np.float32)
    return ChipSet(labels, patch_mode_labels(labels, patch), np.zeros(n, np.int64),
                   np.zeros((n, 2), np.int64), ["fake"], size, patch, bands=FAKE_BANDS,
                   pixels=pixels)
