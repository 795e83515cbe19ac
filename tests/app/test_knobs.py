"""The app's side of "each setting declared once" (issue 12.2): a setting added in one line is a
Train knob, checked from its declaration; the Chips form and the lesson address take their
limits from ChipConfig's declarations; knobs are set through session state only."""
from __future__ import annotations

import dataclasses

from streamlit.elements.lib import policies
from streamlit.testing.v1 import AppTest

from bharateo.app import chips as chip_page, train as studio
from bharateo.data.chips import ChipConfig
from bharateo.training.experiment import PRESETS
from bharateo.data.roi import NOTEBOOK_ROIS, RoiSpec, load_roi
from bharateo.app.knobs import DRAWN, knob
from bharateo.config.settings import settings_of
from tests.support.paths import APP

SMALL_ROIS = [RoiSpec(s.name, s.lon, s.lat, 512) for s in NOTEBOOK_ROIS]


def train_page():
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.session_state["rois"] = [load_roi(s) for s in SMALL_ROIS]
    return at.switch_page("pages/train.py").run()


def test_a_new_setting_is_a_train_knob_checked_against_its_range(worldcover_dir, warmup):
    at = train_page()
    knob = at.number_input(key="knob_warmup_epochs")
    assert knob.label == "warmup epochs" and knob.value == 0 and not at.exception
    assert knob.help.startswith("Whole number from 0 to 10")
    knob.set_value(99).run()
    assert any("Warmup epochs must be a whole number from 0 to 10 (got 99)" in e.value
               and "blocked" in e.value for e in at.error)
    assert next(b for b in at.button if b.label == "Train").disabled
    at.number_input(key="knob_warmup_epochs").set_value(4).run()
    assert not at.error and not at.exception
    knobs = at.session_state["train_knobs"]
    config = studio.config_from_knobs(knobs, at.session_state["rois"], ChipConfig())
    assert type(config.train) is warmup and config.train.warmup_epochs == 4


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
    """The Chips form's typed fields take their ranges from ChipConfig's declarations (a new
    run's limits, app/knobs.py's DRAWN and the form's documented changes): a value past either
    end is refused, naming the form's label and the range in the science's words."""
    typed = [s for s in chip_page.chip_form_settings().values() if s.typed]
    assert [s.label for s in typed] == ["Training chips", "Seed", "Held-out chips"]
    declared = {s.name: knob(s) for s in settings_of(ChipConfig) if s.name in DRAWN}
    good = {s.name: s.default for s in typed}
    for s in typed:
        assert s.high == declared[s.name].high and chip_page.chip_field_problems(good) == []
        for value in (s.low - 1, s.high + 1):
            problems = chip_page.chip_field_problems({**good, s.name: value})
            assert len(problems) == 1 and problems[0].startswith(
                f"{s.label} must be a whole number from") and f"(got {value})" in problems[0], problems


def test_a_page_address_asks_only_for_what_the_chips_form_offers():
    """The lesson address's chip settings are held to the Chips form's declared limits: each
    size outside its declared options, and each form field past its range, is named."""
    assert chip_page.chip_config_problems(ChipConfig()) == []
    form = chip_page.chip_form_settings()
    limited = {**{s.name: knob(s) for s in settings_of(ChipConfig)
                  if s.name in DRAWN and DRAWN[s.name].options}, **form}
    for s in limited.values():
        wrong = [max(s.options) * 2] if s.options else [s.low - 1, s.high + 1]
        for value in wrong:
            problems = chip_page.chip_config_problems(dataclasses.replace(ChipConfig(), **{s.name: value}))
            assert len(problems) == 1 and problems[0].startswith(
                (f"**{s.label}**", f"{s.label} must be")), (s.name, problems)


def test_the_reconstruct_ratio_in_a_link_is_checked_by_the_mask_ratio_settings_one_check():
    import pytest

    from bharateo.app.teacher import parse_recon

    assert parse_recon("train,1,0.6", {"train": 5}) == ("train", 1, 0.6)
    for raw, words in (("train,1,0.93", "not on the slider's steps of 0.05"),
                       ("train,1,0.99", "the slider runs from 0.05 to 0.95"),
                       ("train,1,x", r"must be a number \(got 'x'\)"), ("train,9,0.5", "there is no chip 9")):
        with pytest.raises(ValueError, match=words):
            parse_recon(raw, {"train": 5})


# --- issue 24.2: one check per value, the same sentence from the CLI, the page's form and the link
BAD_VALUES = {  # a value the science refuses alone, and one it refuses with the other settings
    "mask_ratio": ("1.5", "Mask ratio must be strictly between 0 and 1 (got 1.5): at 0 there is "
                          "nothing to reconstruct, at 1 nothing to see."),
    "embed_dim": ("7", "Embed dim 7 must be divisible by the number of heads 4 (try 128 or fewer "
                       "heads)."),
}


def test_a_bad_value_gets_the_same_sentence_through_every_door(capsys):
    """The CLI's flag, the Train page's form (the check the page runs on its knobs before Train)
    and a lesson link's value go through one check (settings.problem, then the cross-field
    rules, then what the page offers), so each door says the same sentence."""
    import pytest

    from bharateo.app import teacher
    from bharateo.app.knobs import knob_problems, knobs_from_config
    from bharateo.cli import main
    from bharateo.errors import ConfigError

    defaults = knobs_from_config(PRESETS["notebook default"])
    for name, (text, sentence) in BAD_VALUES.items():
        value = float(text) if "." in text else int(text)
        # the CLI: exit 2 and the sentence, before anything is read
        assert main(["train", "--run", "doors", f"--{name.replace('_', '-')}", text]) == 2
        assert sentence in capsys.readouterr().err, name
        # the page's form: what blocks Train, and the config the Train button would build
        knobs = {**defaults, name: value}
        assert sentence in knob_problems(knobs), name
        with pytest.raises(ConfigError) as info:
            studio.config_from_knobs(knobs, [], ChipConfig())
        assert sentence in str(info.value), name
        # the lesson link: the value is left out with a note holding the sentence
        values, notes = teacher.restore_knobs({name: text}, [], baseline=defaults)
        assert values == {} and len(notes) == 1 and sentence.rstrip(".") in notes[0], notes
