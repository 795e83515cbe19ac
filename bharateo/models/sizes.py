"""Each model variant's arithmetic, without its nn.Module: parameters, layers, FLOPs per chip and
the rules of its own sizes, keyed by the variant's name (SIZES).

Torch-free and below the model classes, so ModelConfig.validate (bharateo/models/notebook.py)
checks a config (a variant name it knows, a parameter count under its limit) before anything is
built and without importing the registry, which imports the classes (bharateo/models/registry.py
checks at import that its names are these names, in this order). Every function takes a
ModelConfig (read through its fields only: img_size, patch_size, in_chans, embed_dim, depth,
heads, num_classes, decoder_*); tests check the counts against the built modules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bharateo.config.settings import registered
from bharateo.errors import ConfigError
from bharateo.models.masking import num_masked


def layer_macs(tokens: int, width: int) -> int:
    """Multiply-adds of one encoder layer over `tokens` tokens of `width`, per chip: the q/k/v,
    output and two feed-forward (4 x width) projections, 12 width^2 per token, plus the two
    attention matmuls (scores and weighted sum), 2 x tokens x width per token."""
    return tokens * (12 * width * width + 2 * tokens * width)


def _token_dim(config) -> int:
    return config.in_chans * config.patch_size ** 2


def _num_patches(config) -> int:
    return (config.img_size // config.patch_size) ** 2


# --- notebook: the BharatEO-v0 notebook's TinyRGBMAE (encoder over all N tokens) -------------
def notebook_parameter_count(config) -> int:
    """Parameters of the notebook model (TinyRGBMAE) at `config`, counted from its layer shapes
    (tests check it against the built module)."""
    d, t = config.embed_dim, _token_dim(config)
    per_layer = (3 * d * d + 3 * d) + (d * d + d) + 2 * (4 * d * d) + 4 * d + d + 4 * d
    heads = 2 * d + d * t + t + 2 * d + d * config.num_classes + config.num_classes
    return (t * d + d) + d + _num_patches(config) * d + config.depth * per_layer + heads


def notebook_layer_count(config) -> int:
    """Transformer layers a step runs through (the training-time estimate's per-layer cost)."""
    return config.depth


def notebook_flops_per_chip(config, mask_ratio: float) -> float:
    """Training FLOPs for one chip at `mask_ratio`: forward + backward = 3 x the forward's
    2 x multiply-adds (the usual 6 x MACs rule, Kaplan et al. 2020). Forward: the patch
    embedding of the V visible tokens (V x T x D; masked ones are the mask token), `depth`
    layers over all N tokens (layer_macs), the pixel head on the N - V masked tokens and the
    class head on all N. Softmax, norms and the optimiser are left out (a few %)."""
    n, t, d = _num_patches(config), _token_dim(config), config.embed_dim
    masked = num_masked(n, mask_ratio)
    macs = ((n - masked) * t * d + config.depth * layer_macs(n, d)
            + masked * d * t + n * d * config.num_classes)
    return 6.0 * macs


# --- mae: He et al. 2021's visible-only encoder and light decoder (bharateo/models/mae.py) ----
def mae_check_config(config) -> None:
    """The decoder's shape rule (ModelConfig.validate checks the bounds). ConfigError."""
    if config.decoder_dim % config.decoder_heads:
        raise ConfigError(f"Decoder dim {config.decoder_dim} must be divisible by the number "
                          f"of decoder heads {config.decoder_heads} (e.g. 64 with 4 heads).")


def mae_parameter_count(config) -> int:
    """Trainable parameters of the mae variant at `config`, counted from the layer shapes
    without building the model (tests check it against the built module)."""
    d, dd, t, n = config.embed_dim, config.decoder_dim, _token_dim(config), _num_patches(config)

    def layer(w: int) -> int:  # attention in/out, feed-forward 4w, two LayerNorms
        return (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w) + 4 * w

    encoder = (t * d + d) + n * d + config.depth * layer(d) + 2 * d
    decoder = (d * dd + dd) + dd + n * dd + config.decoder_depth * layer(dd)
    heads = (2 * dd + dd * t + t) + (2 * dd + dd * config.num_classes + config.num_classes)
    return encoder + decoder + heads


def mae_layer_count(config) -> int:
    """Transformer layers a step runs through: encoder and decoder."""
    return config.depth + config.decoder_depth


def mae_flops_per_chip(config, mask_ratio: float) -> float:
    """Training FLOPs for one chip at `mask_ratio` (6 x forward multiply-adds, as
    notebook_flops_per_chip). Forward: patch embedding of the V visible tokens, `depth`
    encoder layers over V tokens, the decoder embedding of V tokens, `decoder_depth` decoder
    layers over all N, the pixel head on the N - V hidden tokens, the class head on all N.
    At the notebook's sizes (N 64, V 16, D 128, decoder 64 x 1): 104M vs 284M FLOPs."""
    n, t, d, dd = _num_patches(config), _token_dim(config), config.embed_dim, config.decoder_dim
    masked = num_masked(n, mask_ratio)
    v = n - masked
    macs = (v * t * d + config.depth * layer_macs(v, d) + v * d * dd
            + config.decoder_depth * layer_macs(n, dd) + masked * dd * t
            + n * dd * config.num_classes)
    return 6.0 * macs


def _no_rules(config) -> None:
    """No rules beyond ModelConfig.validate's (the variant uses no sizes of its own)."""


@dataclass(frozen=True)
class VariantSizes:
    """One variant's arithmetic: parameter_count(config) -> int, layer_count(config) -> int,
    flops_per_chip(config, mask_ratio) -> float, check_config(config) (ConfigError)."""

    parameter_count: Callable[..., int]
    layer_count: Callable[..., int]
    flops_per_chip: Callable[..., float]
    check_config: Callable[..., None] = _no_rules


SIZES: dict[str, VariantSizes] = {
    "notebook": VariantSizes(notebook_parameter_count, notebook_layer_count,
                             notebook_flops_per_chip),
    "mae": VariantSizes(mae_parameter_count, mae_layer_count, mae_flops_per_chip,
                        mae_check_config),
}


def variant_sizes(name: str) -> VariantSizes:
    """The arithmetic of variant `name`. Raises ConfigError naming the known variants."""
    return registered(SIZES, name, "model variant")
