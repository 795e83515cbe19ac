"""Model variants by name (bharateo/models/registry.py): an unknown name is refused in words
wherever a name arrives (registry, config, config.json), and a variant registered with its class
(registry.MODELS) and its arithmetic (sizes.SIZES) is built, trained, saved and loaded as itself."""
from __future__ import annotations

import json

import pytest

from bharateo.models import registry as architectures
from bharateo.models.registry import MODELS, build_model, model_class
from bharateo.models.sizes import SIZES
from bharateo.data.chips import ChipConfig
from bharateo.errors import ConfigError, RunDamagedError
from bharateo.models.notebook import ModelConfig, TinyRGBMAE
from bharateo.training.experiment import RunConfig
from bharateo.storage.runs import load_model, load_run, run_dir, save_run
from bharateo.training.loop import StepMetrics, TrainConfig, TrainingEnd, make_model, train
from tests.support.models import tiny_chips

TINY = dict(img_size=32, patch_size=8, embed_dim=16, depth=1, heads=2)


class ShallowHeadMAE(TinyRGBMAE):
    """A stand-in second variant: the notebook model under another class and name."""


@pytest.fixture
def second_variant(monkeypatch):
    """The two lines a new variant needs, for this test only: its class in the registry and its
    arithmetic in sizes.SIZES (here the notebook model's, as the class is the notebook model)."""
    monkeypatch.setitem(MODELS, "shallow-head", ShallowHeadMAE)
    monkeypatch.setitem(SIZES, "shallow-head", SIZES["notebook"])
    return "shallow-head"


def test_the_notebook_model_is_the_default_variant():
    assert ModelConfig().arch == "notebook" and model_class("notebook") is TinyRGBMAE
    assert type(build_model(ModelConfig(**TINY))) is TinyRGBMAE


@pytest.mark.parametrize("name", ["vit-huge", "Notebook", "", None, 3])
def test_an_unknown_variant_name_is_a_config_error_naming_the_known_ones(name):
    with pytest.raises(ConfigError) as info:
        model_class(name)
    message = str(info.value)
    assert message.startswith(f"Unknown model variant {name!r}") and "'notebook'" in message


def test_an_unknown_variant_is_refused_before_a_model_is_built():
    with pytest.raises(ConfigError, match="Unknown model variant 'vit-huge'.*'notebook'"):
        build_model(ModelConfig(arch="vit-huge", **TINY))
    with pytest.raises(ConfigError, match="Unknown model variant 'vit-huge'"):
        RunConfig(model=ModelConfig(arch="vit-huge")).validate()


def test_a_config_json_naming_an_unknown_variant_is_a_damaged_run_not_a_traceback():
    model = make_model(ModelConfig(**TINY), 0)
    config = RunConfig(chips=ChipConfig(chip_size=32, patch_size=8), model=model.config)
    path = save_run("future-variant", model, config.to_dict(), [], {})
    raw = json.loads((path / "config.json").read_text())
    raw["model"]["arch"] = "vit-huge"  # written by a newer lab
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(RunDamagedError) as info:
        load_run("future-variant")
    message = str(info.value)
    assert "Unknown model variant 'vit-huge'" in message and "'notebook'" in message
    assert ".." not in message  # one sentence ends once


def test_a_variant_is_one_registry_line_built_trained_saved_and_loaded_by_name(second_variant):
    config = ModelConfig(arch=second_variant, **TINY).validate()
    model = make_model(config, 0)
    assert type(model) is ShallowHeadMAE
    assert architectures.model_class(second_variant) is ShallowHeadMAE
    events = list(train(model, tiny_chips(), TrainConfig(epochs=1, batch_size=8)))
    assert isinstance(events[-1], TrainingEnd) and any(isinstance(e, StepMetrics) for e in events)
    run_config = RunConfig(chips=ChipConfig(chip_size=32, patch_size=8), model=config)
    path = save_run("variant-run", model, run_config.to_dict(), [], {})
    assert json.loads((path / "config.json").read_text())["model"]["arch"] == second_variant
    loaded = load_model(load_run("variant-run"))
    assert type(loaded) is ShallowHeadMAE and loaded.config.arch == second_variant
    assert run_dir("variant-run") == path
