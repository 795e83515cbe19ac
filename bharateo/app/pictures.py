"""Pictures of chips, ROIs and errors as uint8 RGB arrays for st.image (no matplotlib)."""
from __future__ import annotations

import numpy as np
from plotly.colors import sample_colorscale

from bharateo.worldcover import NODATA_ID, NUM_CLASSES, PALETTE_255


def to_uint8(image: np.ndarray) -> np.ndarray:
    """H x W x 3 float in [0, 1] -> uint8."""
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement so small chips stay crisp in the browser."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


def labels_image(labels: np.ndarray) -> np.ndarray:
    """H x W class ids -> H x W x 3 uint8 palette picture. No-data (NODATA_ID pixels,
    IGNORE_INDEX patch labels, any id outside 0..7) is black, never a class colour."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        labels = np.where((labels >= 0) & (labels < NUM_CLASSES), labels, NODATA_ID).astype(np.uint8)
    return PALETTE_255[labels]


def thumbnail_labels(labels: np.ndarray, max_side: int = 512) -> np.ndarray:
    """Shrink a big label map by taking every k-th pixel (keeps exact class colours)."""
    step = max(1, int(np.ceil(max(labels.shape) / max_side)))
    return labels[::step, ::step]


def draw_grid(image: np.ndarray, cells: int, color=(255, 255, 255), highlight=None) -> np.ndarray:
    """Draw a cells x cells grid on an H x W x 3 uint8 image; outline cell `highlight` (r, c)."""
    out = image.copy()
    h, w = out.shape[:2]
    for i in range(1, cells):
        out[i * h // cells, :] = color
        out[:, i * w // cells] = color
    if highlight is not None:
        r, c = highlight
        r0, r1 = r * h // cells, (r + 1) * h // cells - 1
        c0, c1 = c * w // cells, (c + 1) * w // cells - 1
        for t in range(2):
            out[r0 + t, c0:c1 + 1] = out[r1 - t, c0:c1 + 1] = (0, 0, 0)
            out[r0:r1 + 1, c0 + t] = out[r0:r1 + 1, c1 - t] = (0, 0, 0)
    return out


_MAGMA = (np.array([[int(v) for v in c[4:-1].split(",")]
                    for c in sample_colorscale("Magma", list(np.linspace(0, 1, 256)))],
                   dtype=np.uint8))


def magma(values: np.ndarray, vmin: float = 0.0, vmax: float = 0.5) -> np.ndarray:
    """H x W floats -> H x W x 3 uint8 with the magma colour map on [vmin, vmax]."""
    idx = np.clip((values - vmin) / (vmax - vmin) * 255, 0, 255).astype(np.int64)
    return _MAGMA[idx]
