"""Issue 23: fast mode's levers and the whole run's start-up (docs/speed.md).

Each lever kept in the "fast (MAE encoder)" preset leaves a short run's losses within a stated
tolerance of the plain fp32 run; where the arithmetic is unchanged (start-up work moved out of
the way) the run is bit-exact. The preset's settings are declared once (bharateo/training/experiment.py);
the Train page's preset button shows them (tests/app/test_page_train.py).
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from bharateo.data.chips import ChipConfig, build_chip_sets
from bharateo.models.notebook import ModelConfig
from bharateo.training.experiment import PRESETS
from bharateo.data.roi import Roi, RoiSpec
from bharateo.training.loop import EpochMetrics, StepMetrics, TrainConfig, make_model, train
from tests.support.fixture_tiles import synthetic_native
from tests.support.models import tiny_model_config
from tests.support.paths import REPO

FAST = PRESETS["fast (MAE encoder)"]
TINY = tiny_model_config(arch="mae", img_size=64, patch_size=16, decoder_dim=16, decoder_depth=1,
                         decoder_heads=2)


@pytest.fixture(scope="module")
def chips():
    rois = [Roi(RoiSpec(name, 0.0, 0.0, 512), synthetic_native(512, 512, seed=i, class_weights=kind))
            for i, (name, kind) in enumerate([("a", "urban"), ("b", "arid"), ("c", "cropland")])]
    return build_chip_sets(rois, ChipConfig(n_chips=64, chip_size=64))[0]


def epoch_losses(chips, config: TrainConfig, model_config: ModelConfig = TINY) -> list[float]:
    model = make_model(model_config, config.seed)
    return [e.loss for e in train(model, chips, config) if isinstance(e, EpochMetrics)]


def test_the_fast_preset_is_the_notebook_run_with_only_its_levers_changed():
    """The preset differs from the notebook default only in the declared levers: the variant,
    the precision, the batch size and its scaled learning rate, fewer epochs (docs/speed.md)."""
    base = PRESETS["notebook default"]
    assert FAST.rois == base.rois and FAST.chips == base.chips
    assert replace(FAST.model, arch="notebook") == base.model and FAST.model.arch == "mae"
    changed = {k for k, v in FAST.train.to_dict().items() if base.train.to_dict()[k] != v}
    assert changed <= {"precision", "batch_size", "lr", "epochs"} and FAST.train.precision == "auto"
    assert FAST.train.epochs < base.train.epochs
    # the learning rate follows the batch size by the linear scaling rule (docs/speed.md)
    scale = FAST.train.batch_size / base.train.batch_size
    assert scale > 1 and FAST.train.lr == pytest.approx(base.train.lr * scale)


def test_bf16_keeps_a_short_runs_losses_within_3_percent_of_fp32(chips):
    plain = TrainConfig(epochs=2, precision="fp32")
    exact = epoch_losses(chips, plain)
    half = epoch_losses(chips, replace(plain, precision="bf16"))
    assert half != exact  # bf16 really ran
    for a, b in zip(half, exact):
        assert abs(a - b) <= 0.03 * b  # bf16 matmuls: ~3 significant digits, losses in fp32


def test_the_fast_batch_and_scaled_lr_keep_a_short_runs_losses_within_10_percent(chips):
    """Same chips seen (epochs), a quarter of the steps at the larger batch with the linearly scaled
    learning rate: the loss after each epoch stays within 10 % of batch 16's, and it falls."""
    plain = TrainConfig(epochs=3, precision="fp32")
    exact = epoch_losses(chips, plain)
    fast = epoch_losses(chips, replace(plain, batch_size=FAST.train.batch_size, lr=FAST.train.lr))
    assert fast[-1] < fast[0]
    for a, b in zip(fast[1:], exact[1:]):  # the first epoch's mean includes the untrained start
        assert abs(a - b) <= 0.10 * b


def test_moving_start_up_work_leaves_the_notebook_run_bit_exact(chips):
    """Lazy imports change no arithmetic: two fp32 runs of the notebook model, one after
    importing the evaluation code, give identical losses at every step."""
    config = TrainConfig(epochs=1, batch_size=16)
    model_config = replace(TINY, arch="notebook")

    def steps():
        model = make_model(model_config, config.seed)
        return [e.loss for e in train(model, chips, config) if isinstance(e, StepMetrics)]

    first = steps()
    import bharateo.training.evaluate  # noqa: F401  (what the lazy import defers)
    assert steps() == first


def test_a_worldcover_training_run_starts_without_pandas_or_the_sentinel2_modules():
    """The CLI's train path (parser, settings checks) imports neither: pandas is for tables in
    the app and `evaluate`, the Sentinel-2 readers for Sentinel-2 sources (docs/speed.md)."""
    code = ("import sys; from bharateo import cli; from bharateo.training.experiment import RunConfig; "
            "cli.build_parser(); RunConfig().validate(); "
            "print(sorted({m.split('.')[0] if m.startswith('pandas') else m for m in sys.modules "
            "if m == 'pandas' or m.startswith('bharateo.data.sentinel2')}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
