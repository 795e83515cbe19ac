"""Issue 13: the `mae` variant (visible-only encoder, light decoder), its FLOPs and parameter
counts, bf16 precision and the `auto` policy, and runs of both variants end to end."""
from __future__ import annotations

import pytest
import torch

from bharateo import evaluate as ev
from bharateo.architectures import MODELS, build_model, model_class
from bharateo.chips import ChipConfig
from bharateo.errors import ConfigError
from bharateo.model import ModelConfig, num_masked, random_patch_mask
from bharateo.model_mae import MaskedAutoencoder
from bharateo.pipeline import RunConfig, run_experiment
from bharateo.roi import Roi, RoiSpec
from bharateo.runs import load_model, load_run
from bharateo.train import TrainConfig
from tests.fixture_tiles import synthetic_native

SMALL = ModelConfig(arch="mae", img_size=64, patch_size=16, embed_dim=32, depth=2, heads=2,
                    decoder_dim=16, decoder_depth=1, decoder_heads=2)


def batch(config: ModelConfig, b: int = 3, ratio: float = 0.75, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.rand(b, config.num_patches, config.token_dim, generator=g)
    labels = torch.randint(0, config.num_classes, (b, config.num_patches), generator=g)
    return tokens, labels, random_patch_mask(b, config.num_patches, ratio, g)


def test_the_encoder_sees_only_the_visible_tokens():
    torch.manual_seed(0)
    model = MaskedAutoencoder(SMALL).eval()
    tokens, _, mask = batch(SMALL)
    lengths = []
    model.encoder.layers[0].norm1.register_forward_hook(lambda m, i, o: lengths.append(o.shape[1]))
    with torch.no_grad():
        latent = model.encode(tokens, mask)
        other = tokens.clone()
        other[mask] = torch.rand(int(mask.sum()), SMALL.token_dim)  # new pixels in hidden places
        model.mask_token.add_(1.0)  # and another mask token: the encoder never reads either
        again = model.encode(other, mask)
        pred_before, _ = model(tokens, mask)
        pred_after, _ = model(other, mask)
    visible = SMALL.num_patches - num_masked(SMALL.num_patches, 0.75)
    assert latent.shape == (3, visible, SMALL.embed_dim) and lengths == [visible] * 4
    assert torch.equal(latent, again)
    assert torch.equal(pred_before, pred_after)  # nothing downstream reads hidden pixels either
    # ...but the visible pixels do matter (the check above could fail)
    other[~mask] += 0.5
    with torch.no_grad():
        assert not torch.allclose(model.encode(other, mask), latent)


def test_every_token_gets_a_class_and_the_class_loss_scores_all_of_them():
    torch.manual_seed(1)
    model = MaskedAutoencoder(SMALL)
    tokens, labels, mask = batch(SMALL)
    pred, logits = model(tokens, mask)
    assert pred.shape == tokens.shape and logits.shape == (3, SMALL.num_patches, SMALL.num_classes)
    out = model.training_losses(tokens, labels, mask, 0.2)
    every = torch.nn.functional.cross_entropy(logits.reshape(-1, SMALL.num_classes), labels.reshape(-1))
    assert torch.allclose(out["esa"], every, atol=1e-6)
    hidden = torch.nn.functional.smooth_l1_loss(pred[mask], tokens[mask], beta=0.1)
    assert torch.allclose(out["rec"], hidden, atol=1e-6)  # the pixel loss scores hidden tokens only
    out["loss"].backward()  # every parameter takes part (no head or layer is left out)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_rows_hiding_different_counts_are_run_one_by_one():
    torch.manual_seed(2)
    model = MaskedAutoencoder(SMALL).eval()
    tokens, _, mask = batch(SMALL, b=2)
    mask[1] = random_patch_mask(1, SMALL.num_patches, 0.5, torch.Generator().manual_seed(9))[0]
    with torch.no_grad():
        pred, logits = model(tokens, mask)
        one, _ = model(tokens[1:], mask[1:])
    assert logits.shape == (2, SMALL.num_patches, SMALL.num_classes)
    assert torch.allclose(pred[1:], one, atol=1e-6)


@pytest.mark.parametrize("config", [ModelConfig(arch="mae"), SMALL, ModelConfig(),
                                    ModelConfig(arch="mae", embed_dim=192, depth=4, heads=6,
                                                decoder_dim=96, decoder_depth=2, decoder_heads=3)])
def test_parameter_count_matches_the_built_module(config):
    model = build_model(config)
    assert type(model).parameter_count(config) == sum(p.numel() for p in model.parameters())
    run = RunConfig(model=config)  # the run's own count is its variant's (chips set img_size)
    assert run.parameters == sum(p.numel() for p in build_model(run.model).parameters())


def test_flops_per_chip_counts_tokens_each_variant_runs():
    nb, mae = ModelConfig(), ModelConfig(arch="mae")
    nb_flops = model_class("notebook").flops_per_chip(nb, 0.75)
    mae_flops = model_class("mae").flops_per_chip(mae, 0.75)
    assert 2.5 < nb_flops / mae_flops < 3.0  # 284M vs 104M at the notebook's sizes
    # the visible-only encoder gets cheaper as more is hidden; the notebook model's encoder doesn't
    assert model_class("mae").flops_per_chip(mae, 0.9) < 0.8 * mae_flops
    all_tokens = 6 * nb.depth * 64 * (12 * 128**2 + 2 * 64 * 128)  # 3 layers over all 64 tokens
    assert min(model_class("notebook").flops_per_chip(nb, r) for r in (0.1, 0.9)) > all_tokens


def test_decoder_sizes_are_checked_before_anything_is_allocated(monkeypatch):
    def no_allocation(*args, **kwargs):
        raise AssertionError("a tensor was allocated for an invalid config")
    monkeypatch.setattr(torch.nn.Linear, "__init__", no_allocation)
    with pytest.raises(ConfigError, match="decoder heads"):
        build_model(ModelConfig(arch="mae", decoder_dim=60, decoder_heads=8))
    with pytest.raises(ConfigError, match="decoder dim must be between"):
        build_model(ModelConfig(arch="mae", decoder_dim=4096))
    with pytest.raises(ConfigError, match="whole number"):
        build_model(ModelConfig(arch="mae", decoder_depth=1.5))
    ModelConfig(decoder_dim=60, decoder_heads=8).validate()  # the notebook model has no decoder
    assert set(MODELS) >= {"notebook", "mae"}


# --- both variants end to end: train, save, load, reconstruct, evaluate ----------------------
@pytest.fixture(scope="module")
def rois():
    return [Roi(RoiSpec(name, 0.0, 0.0, 512), synthetic_native(512, 512, seed=i, class_weights=kind))
            for i, (name, kind) in enumerate([("a", "urban"), ("b", "arid"), ("c", "cropland")])]


@pytest.mark.parametrize("arch", ["notebook", "mae"])
def test_a_run_of_each_variant_saves_loads_reconstructs_and_evaluates(arch, rois):
    config = RunConfig(rois=tuple(r.spec for r in rois),
                       chips=ChipConfig(n_chips=32, chip_size=64, holdout_roi="c", n_holdout_chips=8),
                       model=ModelConfig(arch=arch, embed_dim=32, depth=1, heads=2, decoder_dim=16,
                                         decoder_heads=2),
                       train=TrainConfig(epochs=2, lr=2e-3))
    result = run_experiment(config, rois=rois, name=f"{arch}-run")
    assert result.end.reason == "finished" and result.metrics["parameters"] == config.parameters
    run = load_run(f"{arch}-run")
    assert run.config["model"]["arch"] == arch  # the run records its variant
    model = load_model(run)
    assert type(model) is model_class(arch)
    for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)
    rec = ev.reconstruct_chip(model, result.train_chips, 0, 0.75)
    assert rec.mask.sum() == num_masked(16, 0.75) and rec.predicted.shape == rec.target.shape
    scores = ev.evaluate(model, result.heldout_chips, 0.75)
    assert sum(map(sum, scores["confusion"])) + scores["ignored_patches"] == 8 * 16  # every patch
    assert 0 <= scores["masked_mae"] < 1
