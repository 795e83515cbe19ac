"""Token accounting: how many tokens a run shows the model, as in the notebook's table."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from bharateo.errors import ConfigError
from bharateo.models.masking import check_mask_ratio, num_masked
from bharateo.data.sources import DEFAULT_SOURCE, pixel_source

# channel counts the Home page's calculator offers: this lab's input, then the notebook's next steps
CHANNEL_OPTIONS = {pixel_source(DEFAULT_SOURCE).channels: "palette RGB (this lab)",
                   4: "Sentinel-2 RGB + NIR", 10: "Sentinel-2 10-band"}


@dataclass(frozen=True)
class TokenAccount:
    chips: int
    epochs: int
    mask_ratio: float
    channels: int
    chip_size: int
    patch_size: int
    tokens_per_chip: int
    token_dim: int  # raw values per token: channels x p x p
    total_tokens: int  # token presentations: chips x epochs x tokens per chip
    visible_tokens: int
    masked_tokens: int
    masked_pixel_targets: int  # masked tokens x p x p pixels (each with `channels` values)
    masked_value_targets: int  # masked pixel targets x channels

    def to_dict(self) -> dict:
        return asdict(self)


def token_accounting(chips: int, epochs: int, mask_ratio: float = 0.75,
                     channels: int = pixel_source(DEFAULT_SOURCE).channels,
                     chip_size: int = 128, patch_size: int = 16) -> TokenAccount:
    """384 chips x 20 epochs at 0.75, 3 channels -> 491,520 / 122,880 / 368,640 / 94,371,840.

    `channels`: the chips' input channels (ChipSet.channels, the pixel source's band count).
    Masked tokens are counted per chip as the model masks them: int(N x ratio), at least 1 and at
    most N - 1. Raises ConfigError for a chip size that isn't a multiple of the patch size, a
    mask ratio outside (0, 1), or fewer than 1 chip, epoch or channel.
    """
    if chip_size % patch_size or patch_size < 1:
        raise ConfigError(f"Chip size {chip_size} must be a multiple of patch size {patch_size}.")
    check_mask_ratio(mask_ratio)
    if min(chips, epochs, channels) < 1:
        raise ConfigError("Chips, epochs and channels must be at least 1.")
    n = (chip_size // patch_size) ** 2
    masked_per_chip = num_masked(n, mask_ratio)
    presentations = chips * epochs
    masked = presentations * masked_per_chip
    pixels = masked * patch_size ** 2
    return TokenAccount(chips, epochs, mask_ratio, channels, chip_size, patch_size,
                        tokens_per_chip=n, token_dim=channels * patch_size ** 2,
                        total_tokens=presentations * n, visible_tokens=presentations * n - masked,
                        masked_tokens=masked, masked_pixel_targets=pixels,
                        masked_value_targets=pixels * channels)


# The notebook's BharatEO-v0 projection ("Token scale: toy run vs BharatEO-v0"): 1M chips x 100
# epochs of "10 x 128 x 128 Sentinel-2 L2A reflectance" (10 x 16 x 16 = 2,560 values per token).
# The one source for Home's calculator and the CLI's `tokens`.
V0_CHIPS, V0_EPOCHS, V0_CHANNELS = 1_000_000, 100, 10
V0_NAME = (f"BharatEO-v0 ({V0_CHIPS // 1_000_000}M chips x {V0_EPOCHS} epochs, "
           f"{V0_CHANNELS} Sentinel-2 bands)")


def v0_accounting(mask_ratio: float = 0.75, chip_size: int = 128,
                  patch_size: int = 16) -> TokenAccount:
    """token_accounting of the notebook's BharatEO-v0 projection (V0_CHIPS chips x V0_EPOCHS
    epochs, V0_CHANNELS Sentinel-2 bands) at this mask ratio, chip and patch size: at the
    defaults 64 tokens of 2,560 values, 6.4B presentations, 1.6B visible, 4.8B masked, 1.2T
    masked pixel targets. Raises what token_accounting raises."""
    return token_accounting(V0_CHIPS, V0_EPOCHS, mask_ratio, V0_CHANNELS, chip_size, patch_size)
