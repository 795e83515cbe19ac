"""Home's logic (app.py): the pipeline diagram and the token-accounting calculator's table, the
notebook's table for any settings beside the BharatEO-v0 projection (1M chips x 100 epochs of 10
Sentinel-2 bands, bharateo.training.tokens.v0_accounting).

bharateo.training.tokens imports torch (through bharateo.models.notebook's mask arithmetic), so it is imported
only when the calculator is drawn: Home's text and diagram reach the browser before that.
"""
from __future__ import annotations

import pandas as pd

from bharateo.data.sources import DEFAULT_SOURCE, pixel_source  # no torch: Home stays light
from bharateo.words import plural


def pipeline_dot(source: str = DEFAULT_SOURCE, chip: int = 128, patch: int = 16) -> str:
    """The notebook's pipeline as a Graphviz diagram (its default chips, mask and model), the
    chip's channels and token length from the pixel source's bands (bharateo/data/sources.py)."""
    bands = pixel_source(source)
    n, dim = (chip // patch) ** 2, bands.channels * patch * patch
    return f"""
digraph {{
  rankdir=LR; node [shape=box, style="rounded,filled", fillcolor="#f4f6f4", fontsize=11];
  roi [label="WorldCover ROI\\n2048 x 2048 px, ~9 m"];
  chip [label="chip\\n{bands.channels} x {chip} x {chip}\\n{bands.label}"];
  tok [label="{n} tokens\\n{n} x {dim}"];
  mask [label="mask 75%\\n16 visible"];
  enc [label="transformer\\nencoder 64 x 128"];
  pix [label="pixel head\\nreconstruct masked pixels", fillcolor="#fde9e4"];
  cls [label="patch head\\nESA class per token", fillcolor="#e6f0fa"];
  roi -> chip -> tok -> mask -> enc; enc -> pix; enc -> cls;
}}
"""


PIPELINE_DOT = pipeline_dot()  # the lab's default: WorldCover palette RGB

# The calculator's widgets: key -> first value (the notebook's run: 384 chips x 20 epochs, ...).
CALCULATOR_DEFAULTS = {"calc_chips": 384, "calc_epochs": 20, "calc_mask_ratio": 0.75,
                       "calc_channels": pixel_source(DEFAULT_SOURCE).channels,
                       "calc_chip_size": 128, "calc_patch_size": 16}
TOKEN_ROWS = [("tokens per chip", "tokens_per_chip"), ("values per token", "token_dim"),
              ("total token presentations", "total_tokens"), ("visible token inputs", "visible_tokens"),
              ("masked token targets", "masked_tokens"),
              ("masked pixel regression targets", "masked_pixel_targets")]


def channel_options() -> dict[int, str]:
    """The calculator's channel counts -> their names (bharateo.training.tokens.CHANNEL_OPTIONS)."""
    from bharateo.training.tokens import CHANNEL_OPTIONS

    return CHANNEL_OPTIONS


def token_table(chips: int, epochs: int, mask_ratio: float, channels: int, chip_size: int,
                patch_size: int) -> pd.DataFrame:
    """The notebook's token accounting for these settings beside the BharatEO-v0 projection
    (bharateo.training.tokens.v0_accounting: 1M chips x 100 epochs of 10 Sentinel-2 bands, whatever
    `channels` this run has; same mask ratio, chip and patch size), one row per count, numbers
    with thousands separators. Raises what token_accounting raises (e.g. ConfigError for a chip
    size that isn't a multiple of the patch size)."""
    from bharateo.training.tokens import V0_NAME, token_accounting, v0_accounting

    mine = token_accounting(chips, epochs, mask_ratio, channels, chip_size, patch_size)
    v0 = v0_accounting(mask_ratio, chip_size, patch_size)
    return pd.DataFrame({
        "": [label for label, _ in TOKEN_ROWS],
        f"this run ({chips:,} chips x {plural(epochs, 'epoch')})":
            [f"{getattr(mine, k):,}" for _, k in TOKEN_ROWS],
        V0_NAME: [f"{getattr(v0, k):,}" for _, k in TOKEN_ROWS],
    })
