"""How many of a chip's patches a mask ratio hides: the one mask-ratio check and count.

Torch-free, so the token accounting (Home's calculator, `python -m bharateo tokens`) needs no
torch; the masks themselves are drawn in bharateo/models/notebook.py (random_patch_mask), which re-exports
these two functions.
"""
from __future__ import annotations

from fractions import Fraction

from bharateo.errors import ConfigError
from bharateo.config.schema import is_number


def check_mask_ratio(mask_ratio: float) -> float:
    """`mask_ratio` if it is a number strictly between 0 and 1 (the one check: training,
    evaluation, reconstruction and the token accounting call it), else ConfigError."""
    if not (is_number(mask_ratio) and 0.0 < mask_ratio < 1.0):
        raise ConfigError(f"Mask ratio must be strictly between 0 and 1 (got {mask_ratio}): "
                          "at 0 there is nothing to reconstruct, at 1 nothing to see.")
    return mask_ratio


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """Tokens masked per chip: floor(N x ratio) in exact decimal arithmetic, kept within 1..N-1 so
    both sets are non-empty (64 at 0.75 -> 48, as the notebook; 100 at 0.57 -> 57).

    The ratio is read as the decimal it was typed as (the nearest fraction with a denominator of
    at most 10**6), not as the binary float just below it: in floats 100 x 0.57 is 56.99999...
    The mask, the token table and every caption use this one function.
    """
    exact = Fraction(float(mask_ratio)).limit_denominator(10**6)
    return min(max(int(num_patches * exact), 1), num_patches - 1)
