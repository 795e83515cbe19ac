"""Each setting declared once (issue 12.2): a field with `setting(...)` metadata is a CLI flag, a
Train knob, a checked value and a config.json key, with no other list to edit."""
from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import pytest
from streamlit.elements.lib import policies
from streamlit.testing.v1 import AppTest

from bharateo import cli, pipeline
from bharateo.app import regions as views, train as studio
from bharateo.chips import ChipConfig
from bharateo.errors import BharatEOError, ConfigError
from bharateo.model import ModelConfig
from bharateo.pipeline import PRESETS, SECTIONS, RunConfig
from bharateo.roi import NOTEBOOK_ROIS, RoiSpec, load_roi
from bharateo.runs import list_runs
from bharateo.settings import (add_flags, check_settings, from_args, range_problems, setting,
                               settings_of)
from bharateo.train import TrainConfig

APP = str(Path(__file__).resolve().parents[1] / "app.py")
SMALL_ROIS = [RoiSpec(s.name, s.lon, s.lat, 512) for s in NOTEBOOK_ROIS]

# one line: the whole declaration of a new hyperparameter
WarmupTrainConfig = dataclasses.make_dataclass(
    "WarmupTrainConfig",
    [("warmup_epochs", int, setting(0, label="warmup epochs", low=0, high=10, step=1,
                                    widget="number", group="Optimiser",
                                    help="epochs of linear learning-rate warm-up"))],
    bases=(TrainConfig,), frozen=True)


@pytest.fixture
def warmup(monkeypatch):
    monkeypatch.setitem(SECTIONS, "train", WarmupTrainConfig)
    return WarmupTrainConfig


def train_page():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.session_state["rois"] = [load_roi(s) for s in SMALL_ROIS]
    return at.switch_page("pages/train.py").run()


def test_a_new_setting_is_a_cli_flag_checked_against_its_range(warmup, monkeypatch, capsys):
    args = cli.build_parser().parse_args(["train", "--run", "w", "--warmup-epochs", "3"])
    assert args.warmup_epochs == 3 and from_args(warmup, args)["warmup_epochs"] == 3
    assert "warmup epochs (0 to 10" in cli.build_parser()._subparsers._group_actions[0] \
        .choices["train"].format_help()
    seen = []

    def fake_run(config, **kwargs):  # stop before any data is read or model trained
        seen.append(config)
        raise BharatEOError("stopped by the test")
    monkeypatch.setattr(pipeline, "run_experiment", fake_run)
    assert cli.main(["train", "--run", "w", "--warmup-epochs", "3"]) == 2
    assert seen[0].train.warmup_epochs == 3 and seen[0].train.lr == 4e-4  # the rest: the preset
    assert RunConfig.from_dict(seen[0].to_dict()).train.warmup_epochs == 3  # config.json
    capsys.readouterr()
    assert cli.main(["train", "--run", "w", "--warmup-epochs", "99"]) == 2
    err = capsys.readouterr().err
    assert "--warmup-epochs is 99: type a whole number from 0 to 10" in err and "Traceback" not in err
    assert len(seen) == 1 and list_runs() == []  # refused before anything was built


def test_a_new_setting_is_a_train_knob_checked_against_its_range(worldcover_dir, warmup):
    at = train_page()
    knob = at.number_input(key="knob_warmup_epochs")
    assert knob.label == "warmup epochs" and knob.value == 0 and not at.exception
    assert knob.help.startswith("Whole number from 0 to 10")
    knob.set_value(99).run()
    assert any("**warmup epochs** is 99" in e.value and "blocked" in e.value for e in at.error)
    assert next(b for b in at.button if b.label == "Train").disabled
    at.number_input(key="knob_warmup_epochs").set_value(4).run()
    assert not at.error and not at.exception
    knobs = at.session_state["train_knobs"]
    config = studio.config_from_knobs(knobs, at.session_state["rois"], ChipConfig())
    assert type(config.train) is warmup and config.train.warmup_epochs == 4


def test_every_cli_flag_of_train_is_a_declared_setting():
    """Today's flag names (pinned by scripts and tests) all come from the declarations."""
    parser = argparse.ArgumentParser()
    for cls in SECTIONS.values():
        add_flags(parser, cls)
    flags = {flag for action in parser._actions for flag in action.option_strings} - {"-h", "--help"}
    assert flags == {"--n-chips", "--chip-size", "--patch-size", "--min-classes", "--seed",
                     "--holdout-roi", "--holdout-block", "--n-holdout-chips", "--arch",
                     "--embed-dim", "--depth", "--heads", "--epochs", "--batch-size", "--lr",
                     "--weight-decay", "--no-cosine", "--mask-ratio", "--patch-loss-weight",
                     "--source", "--device", "--precision"}
    args = parser.parse_args(["--no-cosine", "--seed", "7"])
    assert from_args(TrainConfig, args) == {"cosine": False, "seed": 7}
    assert from_args(ChipConfig, args) == {"seed": 7}  # one --seed seeds chips and training


def _outside(s):
    """Values just outside setting `s`'s bounds (and non-finite ones)."""
    low, high = s.bounds
    bad = [math.nan, math.inf] if s.type is float else []
    if low is not None:
        bad.append(low if s.strict else low - (1 if s.type is int else 1e-9))
    if high is not None:
        bad.append(high if s.strict else high + 1)
    return bad


@pytest.mark.parametrize("cls, what, prefix", [(ChipConfig, "chips", "Chips: "),
                                               (ModelConfig, "model", "Model: "),
                                               (TrainConfig, "training", "")])
def test_bounds_and_types_of_every_setting_are_checked(cls, what, prefix):
    """The whole kind: every declared number outside its bounds, and every wrong type, is
    refused with a sentence naming the setting and the value; the defaults pass."""
    check_settings(cls(), what, prefix)
    numbers = [s for s in settings_of(cls) if s.type in (int, float)]
    assert numbers
    for s in numbers:
        for value in _outside(s):
            with pytest.raises(ConfigError) as info:
                check_settings(dataclasses.replace(cls(), **{s.name: value}), what, prefix)
            text = str(info.value)
            assert text.lower().startswith(f"{prefix}{s.label}".lower()) and repr(value) in text
        wrong = "12" if s.type is int else "0.5"
        with pytest.raises(ConfigError, match=f"'{s.name}' must be"):
            check_settings(dataclasses.replace(cls(), **{s.name: wrong}), what, prefix)
    for s in settings_of(cls):
        if s.choices:
            with pytest.raises(ConfigError, match="must be one of"):
                check_settings(dataclasses.replace(cls(), **{s.name: "nowhere"}), what, prefix)


def test_typed_knob_ranges_come_from_the_declarations():
    """Every typed knob refuses a value just outside low..high and a fraction where a whole
    number is needed, naming its label; the values at the ends pass."""
    typed = [s for s in studio.knob_settings().values() if s.typed]
    assert {s.name for s in typed} == {"n_chips", "min_classes", "seed", "lr", "weight_decay",
                                       "epochs"}
    good = studio.knobs_from_config(PRESETS["notebook default"])
    for s in typed:
        for value in (s.low, s.high):
            assert studio.knob_problems({**good, s.name: value}) == []
        for value in (s.low - 1, s.high * 2, None) + ((s.low + 0.5,) if s.whole else ()):
            problems = studio.knob_problems({**good, s.name: value})
            assert len(problems) == 1 and problems[0].startswith(f"**{s.label}** is"), problems
    assert range_problems({"lr": math.nan}, [studio.knob_settings()["lr"]], {"lr": "--lr"}) == [
        "--lr is nan, not a number: type a number from 1e-06 to 10."]


def test_a_bad_declaration_is_refused_at_import():
    with pytest.raises(ValueError, match="widget"):
        setting(1, label="x", help="y", widget="dial")
    with pytest.raises(ValueError, match="group"):
        setting(1, label="x", help="y", group="Elsewhere")


def test_train_knobs_set_by_a_preset_give_no_session_state_warning(worldcover_dir, monkeypatch):
    """A knob's value is set through session state only (a preset, the Chips page), never also
    as the widget's default, so Streamlit has nothing to warn about."""
    warned = []
    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", lambda msg, *a, **k: warned.append(msg % a))
    at = train_page()
    next(b for b in at.button if b.label == "quick demo").click().run()
    at.run()
    assert at.session_state["knob_n_chips"] == PRESETS["quick demo"].chips.n_chips
    assert not at.exception and not warned, warned


def test_the_chips_form_checks_its_fields_from_the_declarations():
    """The Chips form's typed fields take their ranges from ChipConfig's declarations (with the
    form's documented changes): a value past either end is refused, naming the form's label."""
    typed = [s for s in views.chip_form_settings().values() if s.typed]
    assert [s.label for s in typed] == ["Training chips", "Seed", "Held-out chips"]
    declared = {s.name: s for s in settings_of(ChipConfig)}
    good = {s.name: s.default for s in typed}
    for s in typed:
        assert s.high == declared[s.name].high and views.chip_field_problems(good) == []
        for value in (s.low - 1, s.high + 1):
            problems = views.chip_field_problems({**good, s.name: value})
            assert len(problems) == 1 and problems[0].startswith(f"**{s.label}** is {value}")


def test_a_page_address_asks_only_for_what_the_chips_form_offers():
    """The lesson address's chip settings are held to the Chips form's declared limits: each
    size outside its declared options, and each form field past its range, is named."""
    assert views.chip_config_problems(ChipConfig()) == []
    form = views.chip_form_settings()
    limited = {**{s.name: s for s in settings_of(ChipConfig) if s.options}, **form}
    for s in limited.values():
        wrong = [max(s.options) * 2] if s.options else [s.low - 1, s.high + 1]
        for value in wrong:
            problems = views.chip_config_problems(dataclasses.replace(ChipConfig(), **{s.name: value}))
            assert len(problems) == 1 and problems[0].startswith(f"**{s.label}**"), (s.name, problems)
