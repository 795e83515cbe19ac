"""Chips <-> tokens: the pure reshapes between a B x C x H x W picture and B x N x (C*p*p)
patch tokens, channel-major inside a token (the BharatEO-v0 notebook's layout).

Here, in the data layer, because chips (bharateo/data/chips.py) and chip stores
(bharateo/storage/chipstore.py) cut their tokens with them; the models read them from here too
(bharateo/models/notebook.py re-exports both).
"""
from __future__ import annotations

import math

import torch


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """B x C x H x W -> B x N x (C*p*p), N = (H/p) * (W/p) in row-major grid order,
    channel-major inside a token (the notebook's layout). H and W are multiples of p."""
    b, c, h, w = x.shape
    p = patch_size
    return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(
        b, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, channels: int, patch_size: int) -> torch.Tensor:
    """B x N x (C*p*p) -> B x C x H x W, the inverse of patchify for a square grid
    (N a square number, H = W = sqrt(N) * p)."""
    b, n, _ = tokens.shape
    g, p = math.isqrt(n), patch_size
    return tokens.reshape(b, g, g, channels, p, p).permute(0, 3, 1, 4, 2, 5).reshape(
        b, channels, g * p, g * p)
