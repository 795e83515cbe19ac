"""Each setting declared once (issue 12.2): a field with `setting(...)` metadata is a CLI flag, a
checked value, a new run's limits and a config.json key; how a page draws it is one line of
bharateo/app/knobs.py's DRAWN. The app's side (the Train and Chips pages drawn from the
declarations): tests/app/test_knobs.py."""
from __future__ import annotations

import argparse
import dataclasses
import math
import re

import pytest

from bharateo import cli
from bharateo.training import experiment as pipeline
from bharateo.data.chips import ChipConfig
from bharateo.errors import BharatEOError, ConfigError
from bharateo.models.notebook import ModelConfig
from bharateo.app.knobs import Drawn, knob_problems, knob_settings, knobs_from_config
from bharateo.training.experiment import PRESETS, SECTIONS, RunConfig
from bharateo.storage.runs import list_runs
from bharateo.config.settings import (add_flags, check_settings, from_args, number_words,
                               problem, setting, settings_of)
from bharateo.training.loop import TrainConfig

def test_a_new_setting_is_a_cli_flag_checked_against_its_range(warmup, monkeypatch, capsys):
    args = cli.build_parser().parse_args(["train", "--run", "w", "--warmup-epochs", "3"])
    assert args.warmup_epochs == 3 and from_args(warmup, args)["warmup_epochs"] == 3
    assert "warmup epochs (a whole number from 0 to 10" in cli.build_parser()._subparsers._group_actions[0] \
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
    assert "--warmup-epochs: Warmup epochs must be a whole number from 0 to 10 (got 99): epochs of " \
        "linear learning-rate warm-up." in err
    assert "Traceback" not in err
    assert len(seen) == 1 and list_runs() == []  # refused before anything was built


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
                     "--source", "--device", "--precision", "--decoder-dim", "--decoder-depth",
                     "--decoder-heads", "--dates", "--max-cloud", "--model", "--class-weighting"}
    args = parser.parse_args(["--no-cosine", "--seed", "7"])
    assert from_args(TrainConfig, args) == {"cosine": False, "seed": 7}
    assert from_args(ChipConfig, args) == {"seed": 7}  # one --seed seeds chips and training


# a setting two more subcommands take: one line declares it for all three
WarmupTrainConfig2 = dataclasses.make_dataclass(
    "WarmupTrainConfig2",
    [("warmup_epochs", int, setting(0, label="warmup epochs", bounds=(0, 100), limits=(0, 10),
                                    commands=("evaluate", "tokens"),
                                    help="epochs of linear learning-rate warm-up"))],
    bases=(TrainConfig,), frozen=True)


def _help(command):
    return cli.build_parser()._subparsers._group_actions[0].choices[command].format_help()


@pytest.mark.parametrize("command", ["evaluate", "tokens"])
def test_a_new_setting_is_a_flag_of_every_subcommand_its_declaration_names(command, monkeypatch,
                                                                           capsys):
    """Declared with commands=("evaluate", "tokens"), a setting is a flag of those two (and of
    train), with the declared default, help and range; a value outside it exits 2 naming the
    flag and the range (its hard bounds: the page's narrower lesson range is train's alone),
    before the command reads anything."""
    monkeypatch.setitem(SECTIONS, "train", WarmupTrainConfig2)
    head = ["evaluate", "no-such-run"] if command == "evaluate" else ["tokens"]
    assert cli.build_parser().parse_args(head).warmup_epochs == 0  # the declared default
    assert cli.build_parser().parse_args(head + ["--warmup-epochs", "4"]).warmup_epochs == 4
    assert "warmup epochs (between 0 and 100; default 0): epochs of linear" in \
        " ".join(_help(command).split())  # argparse wraps the help text
    ran = []
    monkeypatch.setattr(cli, f"cmd_{command}", lambda args: ran.append(args))
    assert cli.main(head + ["--warmup-epochs", "101"]) == 2
    err = capsys.readouterr().err
    assert "--warmup-epochs: Warmup epochs must be between 0 and 100 (got 101)." in err
    assert "Traceback" not in err and ran == []
    cli.build_parser()  # the parser's func is looked up when it is built: build a fresh one
    assert "--warmup-epochs" not in _help("prefetch")  # only where it is declared


# each subcommand's flags that are declared settings, as README and docs/ use them
COMMAND_FLAGS = {"evaluate": {"--mask-ratio": "train.mask_ratio", "--device": "train.device"},
                 "tokens": {"--epochs": "train.epochs", "--mask-ratio": "train.mask_ratio",
                            "--channels": "model.in_chans", "--chip-size": "chips.chip_size",
                            "--patch-size": "chips.patch_size"},
                 **{c: {"--source": "chips.source", "--dates": "chips.dates",
                        "--max-cloud": "chips.max_cloud"} for c in ("prefetch", "inspect")}}


@pytest.mark.parametrize("command", sorted(COMMAND_FLAGS))
def test_every_subcommand_takes_its_settings_from_the_declarations(command, capsys):
    """The whole kind: each flag of evaluate, tokens, prefetch and inspect that is a setting has
    its declared name, default, type and help, and every numeric one refuses a value outside its
    declared range with exit 2 and a sentence naming the flag and the range."""
    declared = {f"{key}.{s.name}": s for key, cls in SECTIONS.items() for s in settings_of(cls)}
    parser = cli.build_parser()._subparsers._group_actions[0].choices[command]
    actions = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    head = ["evaluate", "no-such-run"] if command == "evaluate" else [command]
    for flag, name in COMMAND_FLAGS[command].items():
        s, action = declared[name], actions[flag]
        assert (action.dest, action.default) == (s.name, s.default)
        assert action.help.startswith(s.label) and action.help.endswith(s.help)
        assert action.type.__name__ == s.type.__name__ and action.choices is None  # problem()
        assert all(str(c) in action.metavar for c in s.choices or ())  # ... lists the choices
        if s.type not in (int, float):
            continue
        for bad in _outside(s)[-1:]:
            assert cli.main(head + [flag, str(int(bad) if s.type is int else bad)]) == 2
            err = capsys.readouterr().err
            low, high = s.bounds
            assert f"error: Fix these settings: {flag}: {s.label[:1].upper()}" in err
            assert "Traceback" not in err
            assert f"{number_words(low)} " in err and f" {number_words(high)}" in err, err


def test_tokens_counts_a_chip_set_of_any_size(capsys):
    """`tokens --chips` is the accounting's chip count, not a run's: docs/scale.md's 1M-chip plan
    (beyond the 100,000 chips a run may cut) is counted, not refused."""
    assert cli.main(["tokens", "--chips", "1000000", "--epochs", "100", "--channels", "10"]) == 0
    out = capsys.readouterr().out
    assert out.count("6,400,000,000") == 2 and "2,560 values each" in out
    assert cli.main(["tokens", "--epochs", "800"]) == 0  # past a lesson's 500, inside the bounds
    assert "800" in capsys.readouterr().out


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
            with pytest.raises(ConfigError, match="must be one of|Unknown .* use one of"):
                check_settings(dataclasses.replace(cls(), **{s.name: "nowhere"}), what, prefix)


def test_typed_knob_ranges_come_from_the_declarations():
    """Every typed knob refuses a value just outside low..high (a new run's limits) and a
    fraction where a whole number is needed, naming its label; the values at the ends pass."""
    typed = [s for s in knob_settings().values() if s.typed]
    assert {s.name for s in typed} == {"n_chips", "min_classes", "seed", "lr", "weight_decay",
                                       "epochs"}
    good = knobs_from_config(PRESETS["notebook default"])
    for s in typed:
        for value in (s.low, s.high):
            assert knob_problems({**good, s.name: value}) == []
        for value in (s.low - 1, s.high * 2, None) + ((s.low + 0.5,) if s.whole else ()):
            problems = knob_problems({**good, s.name: value})
            assert len(problems) == 1 and problems[0].startswith(
                f"{s.label[:1].upper()}{s.label[1:]} must be"), problems
    assert problem(knob_settings()["lr"].setting, math.nan, new_run=True) == (
        "Learning rate must be a number from 1e-06 to 10 (got nan): at 0 the model never "
        "changes, below 1e-6 hardly; the notebook uses 4e-4.")


def test_a_bad_declaration_is_refused_at_import():
    with pytest.raises(ValueError, match="widget"):
        Drawn("dial")
    with pytest.raises(ValueError, match="group"):
        Drawn("number", "Elsewhere")
    with pytest.raises(ValueError, match="limits"):
        setting(1, label="x", help="y", bounds=(0, 10), limits=(0, 20))


def test_a_registry_lookup_names_the_known_entries():
    """The one lookup behind the model variants and the pixel sources (settings.registered):
    an unknown name, or one a damaged config.json made unhashable, is a ConfigError listing
    what the registry holds."""
    from bharateo.config.settings import registered

    assert registered({"a": 1, "b": 2}, "b", "colour") == 2
    for bad in ("c", ["a"]):
        with pytest.raises(ConfigError, match=r"^Unknown colour .*: this lab has 'a', 'b'\."):
            registered({"a": 1, "b": 2}, bad, "colour")


# --- issue 20.4: one check per setting, one sentence in the CLI, the page and the link ---------
def test_a_value_no_page_offers_gets_the_same_sentence_from_cli_page_and_link(capsys):
    import pytest

    from bharateo.cli import main
    from bharateo.app.knobs import from_text, knob_problems, knob_settings

    knobs = knob_settings()
    sentence = "Chips must be a whole number from 16 to 4,096 (got 5000): fewer than 16"
    assert main(["train", "--run", "x", "--n-chips", "5000"]) == 2
    assert f"--n-chips: {sentence}" in capsys.readouterr().err
    assert any(p.startswith(sentence) for p in knob_problems({"n_chips": 5000}))
    with pytest.raises(ValueError, match=rf"^{re.escape(sentence)}"):
        from_text(knobs["n_chips"], "5000")
    # the kinds of control a page has: a slider's steps, a select slider's options, choices
    for name, text, words in (("mask_ratio", "0.93", "not on the slider's steps of 0.05"),
                              ("mask_ratio", "0.99", "the slider runs from 0.05 to 0.95"),
                              ("heads", "3", "choose one of"), ("precision", "fp8", "use one of"),
                              ("cosine", "maybe", "1 or 0"),
                              ("lr", "abc", r"must be a number \(got 'abc'\)"),
                              ("epochs", "x" * 100, "at most 64 printable characters")):
        with pytest.raises(ValueError, match=words):
            from_text(knobs[name], text)
    assert from_text(knobs["mask_ratio"], "0.85") == 0.85 and from_text(knobs["cosine"], "0") is False
