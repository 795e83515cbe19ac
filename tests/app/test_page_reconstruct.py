"""The Reconstruct page through AppTest: model and chips choice, panels, slider, mask seed, curve."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from bharateo.training import evaluate as ev
from bharateo.app import pictures, results
from bharateo.app.state import CurrentModel
from bharateo.models.registry import build_model
from bharateo.data.chips import ChipConfig, build_chip_sets
from bharateo.models.notebook import num_masked
from tests.support.pages import filled, open_page as open_insight_page
from tests.support.runs import model_entry, save_tiny_run

PAGE = "pages/reconstruct.py"


def open_page(**state) -> AppTest:
    return open_insight_page(PAGE, **state)


def session_with(tiny, run_name):
    return dict(model=model_entry(tiny, run_name), train_chips=tiny.result.train_chips,
                heldout_chips=tiny.result.heldout_chips)


def panel_images(at):
    """The seven panels by title (thumbnails have no caption; the colour bar's starts 'mean')."""
    return {img.captions[0].split(" ·")[0].split(" (")[0]: img.value[0]
            for img in at.image if img.captions and img.captions[0]
            and not img.captions[0].startswith("mean |RGB error|")}


def metrics(at):
    return {m.label: m.value for m in at.metric}


def curve(at):
    charts = [c for c in at.get("plotly_chart") if c.key == "recon_curve"]
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def test_without_any_run_the_page_sends_you_to_train():
    at = open_page()
    assert any("no trained model yet" in i.value for i in at.info)
    assert [link.proto.page for link in at.get("page_link")][-1] == "train"
    assert not at.slider and not at.image and not at.error


def test_pick_a_saved_run_then_load_its_chips(trained, worldcover_dir):
    save_tiny_run(trained, "picked")
    at = open_page()
    assert any("choose a saved run" in i.value for i in at.info)
    at.selectbox(key="reconstruct_saved_run").select("picked").run()
    assert at.session_state.model.run == "picked"
    assert any("no chips in this session" in i.value for i in at.info)
    at.button(key="reconstruct_load_run_chips").click().run()
    assert not at.exception and not at.error
    chips = at.session_state.train_chips
    assert results.chips_fingerprint(chips) == results.chips_fingerprint(trained.result.train_chips)
    assert at.session_state.heldout_chips is not None
    assert len(panel_images(at)) == 6  # the raw model output waits for its toggle
    assert set(metrics(at)) == {"Masked MAE (this chip)", "Patch accuracy (this chip)"}


def test_slider_and_new_mask_change_the_panels_and_metrics(trained):
    at = open_page(**session_with(trained, None))
    before, m_before = panel_images(at), metrics(at)
    assert "75% masked input" in before
    assert any(f"{num_masked(64, 0.75)} of 64 patches hidden" in c.value for c in at.caption)

    at.slider(key="recon_mask_ratio").set_value(0.25).run()
    after, m_after = panel_images(at), metrics(at)
    assert "25% masked input" in after
    assert any(f"{num_masked(64, 0.25)} of 64 patches hidden" in c.value for c in at.caption)
    assert after["25% masked input"] != before["75% masked input"]
    assert after["abs RGB error on hidden patches"] != before["abs RGB error on hidden patches"]
    assert after["target RGB"] == before["target RGB"]  # same chip
    assert m_after != m_before

    at.button(key="recon_new_mask").click().run()
    reseeded = panel_images(at)
    assert at.session_state.recon_mask_seed == 1
    assert reseeded["25% masked input"] != after["25% masked input"]
    assert reseeded["target RGB"] == after["target RGB"]


def test_choose_chip_by_thumbnail_and_switch_to_held_out(trained):
    at = open_page(**session_with(trained, None))
    first = panel_images(at)["target RGB"]
    at.button(key="recon_thumb_train_3").click().run()
    assert at.number_input(key="recon_chip_train").value == 3
    assert any("chip 3" in img.captions[0] for img in at.image if img.captions)
    assert panel_images(at)["target RGB"] != first
    filled(at.radio(key="recon_split").set_value("held").run())
    assert not at.exception
    assert at.number_input(key="recon_chip_held").value == 0  # other chips: from the first
    assert at.number_input(key="recon_chip_held").label == \
        f"Chip (0–{len(trained.result.heldout_chips) - 1})"
    assert "held-out region mathura_belt" in curve(at)["layout"]["title"]["text"]
    assert len(panel_images(at)) == 6


def test_curve_marks_the_ratio_and_rises_with_the_mask_and_is_stored_beside_the_run(trained):
    run = save_tiny_run(trained, "curved")
    at = open_page(**session_with(trained, "curved"))
    fig = curve(at)
    mae = {round(x, 2): y for x, y in zip(fig["data"][0]["x"], fig["data"][0]["y"])}
    acc = fig["data"][1]["y"]
    assert sorted(mae) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9] and len(acc) == 9
    assert mae[0.9] >= mae[0.1]
    lines = {round(s["x0"], 2) for s in fig["layout"]["shapes"]}
    assert lines == {0.75, 0.25}  # now (0.75) and trained-at (0.25)
    files = list(run.path.glob("ratio_curve_*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())["result"]
    assert [r["masked_mae"] for r in stored] == fig["data"][0]["y"]

    at.slider(key="recon_mask_ratio").set_value(0.5).run()
    assert {round(s["x0"], 2) for s in curve(at)["layout"]["shapes"]} == {0.5, 0.25}
    assert curve(at)["data"] == fig["data"]  # computed once, not per slider move


def test_chips_of_another_size_show_an_error_not_a_traceback(trained):
    small, _ = build_chip_sets(trained.rois, ChipConfig(n_chips=4, chip_size=64))
    at = open_page(model=model_entry(trained, None), train_chips=small, heldout_chips=None)
    assert any("trained on 128 px chips, these are 64 px" in e.value for e in at.error)
    assert at.button(key="reconstruct_load_run_chips")  # offers the way out
    assert not at.image and not at.slider


def test_every_choice_survives_a_visit_to_another_page(trained):
    """Mask ratio, chips split, chip and mask draw come back as left (issue 10, section 6)."""
    at = open_page(**session_with(trained, None))
    at.slider(key="recon_mask_ratio").set_value(0.4).run()
    at.radio(key="recon_split").set_value("held").run()
    at.button(key="recon_thumb_held_3").click().run()
    at.button(key="recon_new_mask").click().run()
    at.toggle(key="recon_raw_output").set_value(True).run()
    at.switch_page("pages/train.py").run()
    for key in {"recon_mask_ratio", "recon_split", "recon_chip_held", "recon_raw_output"} & \
            set(at.session_state):
        del at.session_state[key]  # what a browser session does to widgets a page didn't draw
    at.switch_page("pages/reconstruct.py").run()
    assert not at.exception
    assert at.slider(key="recon_mask_ratio").value == pytest.approx(0.4)
    assert at.radio(key="recon_split").value == "held"
    assert at.number_input(key="recon_chip_held").value == 3
    assert at.session_state.recon_mask_seed == 1
    assert "40% masked input" in panel_images(at)
    assert at.toggle(key="recon_raw_output").value and pictures.RAW in panel_images(at)


def test_a_chip_number_out_of_range_says_so_instead_of_showing_another_chip(trained):
    """Typed past the end, the field used to turn red while the panels kept the last chip."""
    at = open_page(**session_with(trained, None))
    widget = at.number_input(key="recon_chip_train")
    assert widget.max is None or widget.max > 1e9  # the browser sends what was typed
    last = len(trained.result.train_chips) - 1
    for bad in (last + 1, 999, -1):
        widget.set_value(bad).run()
        assert not at.exception
        assert [e.value for e in at.error] == [
            f"There is no chip {bad}: these {last + 1} chips are numbered 0 to {last}. Type a "
            "number in that range, or click a thumbnail."]
        assert not panel_images(at)
    at.number_input(key="recon_chip_train").set_value(last).run()
    assert not at.error and any(f"chip {last}" in img.captions[0] for img in at.image if img.captions)


@pytest.mark.parametrize("arch", ["notebook", "mae"])
def test_reconstruction_pastes_the_visible_patches_and_keeps_the_raw_output_a_toggle_away(
        trained, shown, arch):
    """The MAE paper's figure: visible patches from the input, hidden ones from the model, pixel
    for pixel; the raw output (speckled on the untrained visible patches) behind a toggle."""
    tiny = trained
    if arch == "mae":  # an untrained mae model of the same size: the paste is the page's, not the model's
        config = replace(trained.config, model=replace(trained.config.model, arch="mae"))
        model = build_model(config.model).eval()
        entry = CurrentModel(model, "mae (untrained)", config, None)
    else:
        model, entry = trained.result.model, model_entry(trained, None)
    chips = tiny.result.train_chips
    at = open_page(model=entry, train_chips=chips, heldout_chips=tiny.result.heldout_chips)
    at.button(key="recon_thumb_train_3").click().run()
    at.slider(key="recon_mask_ratio").set_value(0.5).run()
    assert pictures.PASTED in panel_images(at) and pictures.RAW not in panel_images(at)
    at.toggle(key="recon_raw_output").set_value(True).run()
    assert not at.exception and pictures.RAW in panel_images(at)

    rec = ev.reconstruct_chip(model, chips, 3, 0.5, seed=0)
    scale = pictures.PANEL_SIDE // chips.chip_size
    hidden = np.kron(rec.mask, np.ones((chips.patch_size * scale,) * 2, dtype=bool))
    target, masked = shown(at, "target RGB · chip 3"), shown(at, "50% masked input")
    pasted, raw = shown(at, pictures.PASTED), shown(at, pictures.RAW)
    assert target.shape == pasted.shape == raw.shape == hidden.shape + (3,)
    np.testing.assert_array_equal(masked[hidden], np.broadcast_to(
        pictures.to_uint8(ev.MASK_GREY), masked[hidden].shape))  # the page hides these patches
    np.testing.assert_array_equal(pasted[~hidden], target[~hidden])  # visible: the input
    np.testing.assert_array_equal(pasted[hidden], raw[hidden])  # hidden: the model's output
    assert not np.array_equal(raw[~hidden], target[~hidden])  # the paste is what hides the noise
    assert metrics(at)["Masked MAE (this chip)"] == f"{rec.masked_mae:.3f}"  # hidden patches only


def test_chip_accuracy_and_curve_stand_beside_their_baselines(trained):
    at = open_page(**session_with(trained, None))
    chip = next(m for m in at.metric if m.label == "Patch accuracy (this chip)")
    assert chip.proto.delta.endswith(" pts")
    assert any("would score" in c.value and "balanced accuracy" in c.value for c in at.caption)
    fig = curve(at)
    names = [t.get("name") for t in fig["data"]]
    assert "balanced accuracy" in names and any(n and n.startswith("majority baseline") for n in names)
    rows = ev.mask_ratio_curve(trained.result.model, trained.result.train_chips)
    baseline = next(t for t in fig["data"] if t.get("name", "").startswith("majority baseline"))
    assert baseline["y"] == [rows[0]["majority_acc"]] * 2
    assert any("majority baseline" in c.value for c in at.caption)


# --- issue 22.6: the lesson link follows the mask-ratio slider ----------------------------------
def test_the_mask_ratio_slider_updates_the_address_from_its_fragment(trained):
    """The slider lives in a fragment: moved to 0.60 it left recon=train,1,0.75 in the address
    until the next full run, so a fresh browser opened at 75 %. The page file is run alone here,
    as a fragment rerun runs it: without app.py, whose writes would hide the fault."""
    from tests.support.paths import REPO

    at = AppTest.from_file(str(REPO / PAGE), default_timeout=90)
    for key, value in session_with(trained, None).items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    assert dict(at.query_params).get("recon") == "train,0,0.75"
    at.slider(key="recon_mask_ratio").set_value(0.6).run()
    assert not at.exception
    assert dict(at.query_params)["recon"] == "train,0,0.60"


def test_every_fragment_on_a_page_writes_the_lesson_address():
    """A control inside a bare st.fragment reaches the address only at the next full run."""
    from tests.support.paths import REPO

    bare = [str(p.relative_to(REPO)) for p in (REPO / "pages").glob("*.py")
            if "@st.fragment" in p.read_text()]
    assert bare == [], f"use bharateo.app.lesson.lesson_fragment in {bare}"


def test_while_this_session_trains_its_first_run_the_page_says_so_not_train_one():
    class Running:  # what choose_model reads of a jobs.TrainingJob
        done, run_name = False, "first-run"
    at = open_page(job=Running())
    infos = " ".join(i.value for i in at.info)
    assert "training (run 'first-run') has not ended yet" in infos and "no trained model" not in infos
    assert not at.exception
