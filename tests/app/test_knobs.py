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
    assert any("**warmup epochs** is 99" in e.value and "blocked" in e.value for e in at.error)
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
    """The Chips form's typed fields take their ranges from ChipConfig's declarations (with the
    form's documented changes): a value past either end is refused, naming the form's label."""
    typed = [s for s in chip_page.chip_form_settings().values() if s.typed]
    assert [s.label for s in typed] == ["Training chips", "Seed", "Held-out chips"]
    declared = {s.name: s for s in settings_of(ChipConfig)}
    good = {s.name: s.default for s in typed}
    for s in typed:
        assert s.high == declared[s.name].high and chip_page.chip_field_problems(good) == []
        for value in (s.low - 1, s.high + 1):
            problems = chip_page.chip_field_problems({**good, s.name: value})
            assert len(problems) == 1 and problems[0].startswith(f"**{s.label}** is {value}")


def test_a_page_address_asks_only_for_what_the_chips_form_offers():
    """The lesson address's chip settings are held to the Chips form's declared limits: each
    size outside its declared options, and each form field past its range, is named."""
    assert chip_page.chip_config_problems(ChipConfig()) == []
    form = chip_page.chip_form_settings()
    limited = {**{s.name: s for s in settings_of(ChipConfig) if s.options}, **form}
    for s in limited.values():
        wrong = [max(s.options) * 2] if s.options else [s.low - 1, s.high + 1]
        for value in wrong:
            problems = chip_page.chip_config_problems(dataclasses.replace(ChipConfig(), **{s.name: value}))
            assert len(problems) == 1 and problems[0].startswith(f"**{s.label}**"), (s.name, problems)


def test_the_reconstruct_ratio_in_a_link_is_checked_by_the_mask_ratio_settings_one_check():
    import pytest

    from bharateo.app.teacher import parse_recon

    assert parse_recon("train,1,0.6", {"train": 5}) == ("train", 1, 0.6)
    for raw, words in (("train,1,0.93", "not on the slider's steps of 0.05"),
                       ("train,1,0.99", "the slider runs from 0.05 to 0.95"),
                       ("train,1,x", "'x' is not a number"), ("train,9,0.5", "there is no chip 9")):
        with pytest.raises(ValueError, match=words):
            parse_recon(raw, {"train": 5})
