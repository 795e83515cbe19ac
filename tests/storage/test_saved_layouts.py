"""Runs saved before issue 24 load and evaluate; the facts issue 24 gave one carrier each.

- A run folder written in an older layout (its files written here, byte for byte as the lab
  wrote them: config.json without `arch`, `source`, `device`, `precision`; a reflectance run with
  its band statistics at config.json's top level, written then from the chips) loads, rebuilds
  its RunConfig and evaluates; the reflectance run reads chips with its own statistics.
- The band statistics are a declared field of every model variant, written by save_run from the
  model and read back typed (SavedRun.band_stats, load_model).
- Each variant's arithmetic lives in bharateo/models/sizes.py, under the registry's names;
  ModelConfig.validate needs neither the registry nor the classes.
- Storage checks a saved run's settings through the check the training layer registers.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bharateo.data.chips import ChipConfig, ChipSet, patch_mode_labels, tokens_for
from bharateo.data.reflectance import BandStats
from bharateo.data.sources import S2_BANDS_4
from bharateo.models.notebook import ModelConfig, TinyRGBMAE
from bharateo.models.registry import MODELS, build_model
from bharateo.models.sizes import SIZES
from bharateo.storage import runs
from bharateo.training.evaluate import evaluate
from bharateo.training.experiment import RunConfig

from tests.support.paths import REPO  # noqa: E402

ROOT = REPO
SIZE, PATCH = 32, 8
TINY = dict(embed_dim=16, depth=1, heads=2)


def synthetic_chips(n: int = 8, bands=None, stats: BandStats | None = None) -> ChipSet:
    """n synthetic chips of SIZE px (labels 0..3; with `bands`, random reflectance pixels)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(n, SIZE, SIZE)).astype(np.uint8)
    extra = {} if bands is None else dict(
        bands=tuple(bands), band_stats=stats,
        pixels=rng.uniform(0.0, 0.5, size=(n, len(bands), SIZE, SIZE)).astype(np.float32))
    return ChipSet(labels, patch_mode_labels(labels, PATCH), np.zeros(n, np.int64),
                   np.zeros((n, 2), np.int64), ["synthetic"], SIZE, PATCH, **extra)


def write_old_run(name: str, config: dict, in_chans: int) -> Path:
    """A run folder as an older lab wrote it: the four files, `config` verbatim."""
    folder = runs.checkpoint_root() / name
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = TinyRGBMAE(ModelConfig(img_size=SIZE, patch_size=PATCH, in_chans=in_chans, **TINY))
    torch.save(model.state_dict(), folder / "model.pt")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "history.json").write_text(json.dumps(
        [{"epoch": 1, "loss": 1.2, "rec": 0.9, "esa": 1.5, "rec_mae": 0.3, "esa_acc": 0.4}]))
    (folder / "metrics.json").write_text(json.dumps(
        {"train_rec_mae": 0.3, "train_esa_acc": 0.4, "epochs_done": 1}))
    return folder


def old_sections(in_chans: int) -> dict:
    """rois/chips/model/train as the lab wrote them before variants, sources and devices."""
    return {"rois": [{"name": "Jaipur_Rajasthan", "lat": 26.9124, "lon": 75.7873, "size": 1024}],
            "chips": {"n_chips": 8, "chip_size": SIZE, "patch_size": PATCH, "min_classes": 1,
                      "seed": 0, "holdout_roi": None, "holdout_block": None},
            "model": {"img_size": SIZE, "patch_size": PATCH, "in_chans": in_chans,
                      "num_classes": 8, **TINY},
            "train": {"lr": 4e-4, "weight_decay": 0.05, "epochs": 1, "batch_size": 8,
                      "mask_ratio": 0.75, "patch_loss_weight": 0.2, "seed": 0},
            "saved_at": "2026-11-30T10:00:00+00:00"}


def test_a_palette_run_in_the_old_layout_loads_and_evaluates():
    write_old_run("old-palette", old_sections(3), in_chans=3)
    raw = json.loads((runs.run_dir("old-palette") / "config.json").read_text())
    assert "arch" not in raw["model"] and "source" not in raw["chips"] and "band_stats" not in raw
    run = runs.load_run("old-palette")
    config = RunConfig.from_dict(run.config)
    assert (config.model.arch, config.chips.source, config.model.in_chans) == ("notebook", "worldcover", 3)
    assert run.band_stats is None
    model = runs.load_model(run)
    assert model.band_stats is None and type(model) is TinyRGBMAE
    scores = evaluate(model, synthetic_chips())
    assert scores["chips"] == 8 and 0 <= scores["accuracy"] <= 1
    assert len(scores["confusion"]) == 8


def test_a_reflectance_run_in_the_old_layout_evaluates_with_its_own_statistics():
    saved_stats = BandStats(S2_BANDS_4, (0.1, 0.12, 0.15, 0.3), (0.05, 0.05, 0.06, 0.1), 4096)
    sections = old_sections(4)
    sections["chips"]["source"] = "s2-4band"
    write_old_run("old-s2", {**sections, "band_stats": saved_stats.to_dict()}, in_chans=4)
    run = runs.load_run("old-s2")
    assert RunConfig.from_dict(run.config).model.in_chans == 4
    assert run.band_stats == saved_stats  # read back typed
    model = runs.load_model(run)
    assert isinstance(model.band_stats, BandStats) and model.band_stats == saved_stats
    own = BandStats(S2_BANDS_4, (0.0,) * 4, (1.0,) * 4)
    chips = synthetic_chips(bands=S2_BANDS_4, stats=own)
    assert torch.equal(tokens_for(model, chips), chips.tokens(stats=saved_stats))
    assert not torch.equal(tokens_for(model, chips), chips.tokens())
    scores = evaluate(model, chips)
    assert scores["chips"] == 8 and 0 <= scores["accuracy"] <= 1


def test_save_run_writes_the_models_band_stats_and_load_model_reads_them_back():
    stats = BandStats(S2_BANDS_4, (0.1, 0.2, 0.3, 0.4), (0.1, 0.1, 0.1, 0.2), 100)
    config = RunConfig(chips=ChipConfig(chip_size=SIZE, patch_size=PATCH, source="s2-4band"),
                       model=ModelConfig(**TINY))
    model = build_model(config.model)
    model.band_stats = stats
    runs.save_run("s2-new", model, config.to_dict(), [], {})  # config.to_dict has no band_stats
    raw = json.loads((runs.run_dir("s2-new") / "config.json").read_text())
    assert BandStats.from_dict(raw["band_stats"]) == stats
    assert runs.load_model(runs.load_run("s2-new")).band_stats == stats


@pytest.mark.parametrize("arch", list(MODELS))
def test_every_variant_declares_its_band_stats_field(arch):
    cls = MODELS[arch]
    assert cls.__annotations__["band_stats"] in ("BandStats | None", BandStats | None)
    assert build_model(ModelConfig(arch=arch, img_size=SIZE, patch_size=PATCH, **TINY)).band_stats is None


def test_the_band_list_reaches_the_models_input_channels_from_the_chips():
    for source, bands in (("worldcover", 3), ("s2-4band", 4), ("s2-10band", 10)):
        chips = ChipConfig(source=source)
        assert len(chips.bands) == bands == RunConfig(chips=chips).model.in_chans
    config = ModelConfig(**TINY).for_chips(64, 16, S2_BANDS_4)
    assert (config.img_size, config.patch_size, config.in_chans) == (64, 16, 4)


def test_the_registry_and_the_variants_arithmetic_hold_the_same_names():
    assert tuple(MODELS) == tuple(SIZES)
    for arch, cls in MODELS.items():
        config = ModelConfig(arch=arch, img_size=SIZE, patch_size=PATCH, **TINY)
        assert cls.parameter_count(config) == SIZES[arch].parameter_count(config) == \
            sum(p.numel() for p in build_model(config).parameters())


def fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_model_config_validates_without_the_registry_and_a_missing_arithmetic_stops_the_import():
    done = fresh("import sys\nfrom bharateo.models.notebook import ModelConfig\n"
                 "ModelConfig(arch='mae').validate()\n"
                 "assert 'bharateo.models.registry' not in sys.modules\n"
                 "assert 'bharateo.models.mae' not in sys.modules\n")
    assert done.returncode == 0, done.stderr
    done = fresh("from bharateo.models import sizes\n"
                 "sizes.SIZES['extra'] = sizes.SIZES['notebook']\n"
                 "import bharateo.models.registry\n")
    assert done.returncode != 0 and "ImportError" in done.stderr and "'extra'" in done.stderr


def test_storage_checks_saved_settings_through_the_check_training_registers():
    done = fresh("import sys\nfrom bharateo.storage import runs\n"
                 "assert not any(m.startswith('bharateo.training') for m in sys.modules)\n"
                 "assert runs._settings_checks == []\n"
                 "from bharateo.training.experiment import RunConfig\n"
                 "assert runs._settings_checks == [RunConfig.from_dict]\n")
    assert done.returncode == 0, done.stderr


def test_reading_a_run_with_no_settings_check_registered_is_refused_loudly(tmp_path):
    """A caller that reads runs before importing the training layer must not get a run whose
    settings nobody checked (the lesson link's first visit on a fresh server did)."""
    done = fresh("import json, pathlib, sys\nfrom bharateo.storage import runs\n"
                 f"folder = pathlib.Path({str(tmp_path)!r}) / 'r'\nfolder.mkdir()\n"
                 "config = {'rois': [], 'chips': {}, 'model': {}, 'train': {}}\n"
                 "try:\n    runs.check_config(config)\nexcept RuntimeError as exc:\n"
                 "    print('refused:', exc)\nelse:\n    sys.exit('accepted unchecked')\n")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "import bharateo.training.experiment" in done.stdout


def test_a_lesson_link_imports_the_settings_check_before_it_loads_a_run():
    """restore_lesson's run branch registers the check itself (Home imports no training)."""
    import inspect

    from bharateo.app import lesson

    source = inspect.getsource(lesson.restore_lesson)
    assert source.index("import bharateo.training.experiment") < source.index("load_run(validate")
