"""Issue 13: the `mae` variant (visible-only encoder, light decoder), its FLOPs and parameter
counts, bf16 precision and the `auto` policy, and runs of both variants end to end."""
from __future__ import annotations

import pytest
import torch

from bharateo import cli
from bharateo.models import device
from bharateo.training import evaluate as ev
from bharateo.models.registry import MODELS, build_model, model_class
from bharateo.data.chips import ChipConfig
from bharateo.errors import ConfigError
from bharateo.models.notebook import ModelConfig, num_masked, random_patch_mask
from bharateo.models.mae import MaskedAutoencoder
from bharateo.training.experiment import RunConfig, run_experiment
from bharateo.data.roi import Roi, RoiSpec
from bharateo.storage.runs import load_model, load_run
from bharateo.training.loop import TrainConfig
from tests.support.fixture_tiles import synthetic_native
from tests.support.models import tiny_model_config

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
    with pytest.raises(ConfigError, match="Decoder dim must be between"):
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
                       model=tiny_model_config(arch=arch, decoder_dim=16,
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


# --- precision: bf16 autocast and the auto policy ----------------------------------------------
@pytest.mark.parametrize("arch", ["notebook", "mae"])
def test_bf16_and_fp32_losses_agree_on_a_fixed_batch(arch):
    config = ModelConfig(arch=arch, img_size=64, embed_dim=64, depth=2, heads=4)
    torch.manual_seed(3)
    model = build_model(config)
    tokens, labels, mask = batch(config, b=8)
    exact = model.training_losses(tokens, labels, mask, 0.2)
    with device.autocast("cpu", "bf16"):
        half = model.training_losses(tokens, labels, mask, 0.2)
    for key in ("loss", "rec", "esa", "rec_mae"):
        assert half[key].dtype == torch.float32  # losses are computed in fp32
        assert abs(half[key].item() - exact[key].item()) <= 0.02 * abs(exact[key].item()), key
    assert half["loss"].item() != exact["loss"].item()  # bf16 really ran (the check can fail)
    half["loss"].backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32
               for p in model.parameters())  # fp32 master weights and gradients


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend the CPU has exactly the given /proc/cpuinfo flags."""
    def set_flags(*flags):
        monkeypatch.setattr(device, "cpu_flags", lambda: set(flags))
    return set_flags


def test_auto_falls_back_to_fp32_where_bf16_is_not_native(cpu_flags, monkeypatch):
    cpu_flags("avx2", "avx512f")
    big = ModelConfig(embed_dim=256, depth=8, heads=8)
    precision, why = device.resolve_precision("auto", "cpu", big, 64)
    assert precision == "fp32" and "no AVX512-BF16 or AMX" in why
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.resolve_precision("auto", "cuda", big, 64)[0] == "fp32"
    assert device.resolve_precision("bf16", "cpu", big, 64) == ("bf16", "asked for")  # as asked
    with device.autocast("cpu", "auto"):  # auto without a model: never slower, so fp32
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ConfigError, match="Unknown precision"):
        device.resolve_precision("fp16", "cpu")


def test_auto_picks_bf16_where_native_only_for_steps_big_enough_to_pay(cpu_flags):
    cpu_flags("avx2", "amx_bf16", "amx_tile")
    nb = device.resolve_precision("auto", "cpu", ModelConfig(), 16, 0.75)
    assert nb[0] == "bf16" and "AMX_BF16" in nb[1] and "4.5 GFLOP" in nb[1]
    mae = device.resolve_precision("auto", "cpu", ModelConfig(arch="mae"), 16, 0.75)
    assert mae[0] == "bf16" and "1.7 GFLOP" in mae[1] and "over" in mae[1]
    small = ModelConfig(arch="mae", embed_dim=64, depth=2)  # 0.8 GFLOP a step: bf16 gains nothing
    small_pick = device.resolve_precision("auto", "cpu", small, 16, 0.75)
    assert small_pick[0] == "fp32" and "under" in small_pick[1]
    assert device.resolve_precision("auto", "cpu", small, 64, 0.75)[0] == "bf16"
    cpu_flags("avx512_bf16")
    with device.autocast("cpu", device.resolve_precision("auto", "cpu", ModelConfig(), 16)[0]):
        assert torch.is_autocast_enabled("cpu")


def test_cli_trains_the_mae_variant_at_auto_precision_and_the_run_records_both(
        worldcover_dir, cpu_flags, capsys):
    cpu_flags("avx2")  # no native bf16: auto must say fp32 and why
    assert cli.main(["train", "--run", "fast", "--model", "mae", "--precision", "auto",
                     "--n-chips", "16", "--epochs", "1", "--holdout-roi", "mathura_belt",
                     "--n-holdout-chips", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mae model" in out and "precision fp32 (auto: this CPU has no AVX512-BF16" in out
    run = load_run("fast")
    assert run.config["model"]["arch"] == "mae" and run.config["train"]["precision"] == "auto"
    assert run.metrics["precision"] == "fp32" and "AVX512-BF16" in run.metrics["precision_reason"]
    assert type(load_model(run)) is MaskedAutoencoder
    assert cli.main(["train", "--run", "bad", "--model", "mae", "--epochs", "0"]) == 2
    assert "epochs" in capsys.readouterr().err and load_run("fast")  # refused, nothing else lost
