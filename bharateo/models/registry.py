"""Model variants by name: the registry every caller builds a model through.

A variant is an nn.Module class built from a ModelConfig with one contract:
  - `forward(tokens, mask)`: B x N x T tokens, B x N bool mask (True = hidden) ->
    (B x N x T pixel predictions, B x N x K patch-class logits);
  - `training_losses(tokens, patch_labels, mask, patch_loss_weight, class_weights=None)` ->
    dict of 0-d tensors `loss`, `rec`, `esa`, `rec_mae`, `esa_acc` and the batch's K x K
    `confusion` (see TinyRGBMAE.training_losses, model.scored_losses);
  - a declared `band_stats` attribute (data.reflectance.BandStats, or None for palette RGB):
    the per-band normalisation of its input, saved with the run (runs.save_run, load_model);
  - static `parameter_count(config)`, `layer_count(config)`, `flops_per_chip(config, ratio)`
    and `check_config(config)`: its arithmetic, kept apart from the class in
    bharateo/models/sizes.py (SIZES) so ModelConfig.validate checks a config before a tensor is
    allocated without importing this module.
`config.json` records the name in `model.arch`; runs saved before variants existed have no such
key and load as "notebook". A new variant is one class and one line in MODELS, and its
arithmetic and one line in sizes.SIZES (checked below: the two hold the same names in one order).
"""
from __future__ import annotations

import torch.nn as nn

from bharateo.config.settings import registered
from bharateo.models.mae import MaskedAutoencoder
from bharateo.models.notebook import ModelConfig, TinyRGBMAE
from bharateo.models.sizes import SIZES

MODELS: dict[str, type[nn.Module]] = {
    "notebook": TinyRGBMAE,  # the BharatEO-v0 notebook's model: encoder over all 64 tokens
    "mae": MaskedAutoencoder,  # He et al. 2021: encoder over visible tokens, light decoder
}
if tuple(MODELS) != tuple(SIZES):  # a class without its arithmetic, or the other way round
    raise ImportError(f"bharateo/models/registry.py's variants {tuple(MODELS)} are not "
                      f"bharateo/models/sizes.py's {tuple(SIZES)}: add the missing one to both.")


def model_class(name: str) -> type[nn.Module]:
    """The class registered as `name`. Raises ConfigError naming the known variants."""
    return registered(MODELS, name, "model variant")


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised model of the variant `config.arch` (weights from torch's global
    RNG: seed it first, as train.make_model does). Raises ConfigError for a bad config."""
    return model_class(config.arch)(config.validate())
