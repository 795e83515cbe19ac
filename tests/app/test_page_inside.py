"""The Inside-the-model page (AppTest) and its logic (bharateo.app.inside): attention overlay,
the embedding map stored once per run, a click on the map opening its chip, downloads."""
from __future__ import annotations

import base64
import io
import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from bharateo.training import inspect_model as im
from bharateo.app import inside, pictures, results
from bharateo.app.state import CurrentModel
from bharateo.models.registry import build_model
from tests.support.pages import open_page as open_insight_page
from tests.support.runs import model_entry, save_tiny_run

PAGE = "pages/inside.py"


def open_page(tiny, run_name, entry=None):
    return open_insight_page(PAGE, model=entry or model_entry(tiny, run_name),
                             train_chips=tiny.result.train_chips,
                             heldout_chips=tiny.result.heldout_chips)


def mae_entry(tiny) -> CurrentModel:
    """An untrained `mae` model of the tiny run's size (two encoder layers, its decoder)."""
    config = replace(tiny.config, model=replace(tiny.config.model, arch="mae", depth=2))
    return CurrentModel(build_model(config.model).eval(), "mae (untrained)", config, None)


def count(array) -> int:
    """Length of a plotly JSON array: a list, or a typed array {"dtype", "bdata" (base64)}."""
    if isinstance(array, dict):
        return len(np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]))
    return len(array)


def test_attention_overlay_and_the_embedding_map_are_drawn(trained):
    save_tiny_run(trained, "inside-run")
    at = open_page(trained, "inside-run")
    assert not at.exception and not at.error
    captions = [img.captions[0] for img in at.image if img.captions]
    assert any(c.startswith("chip 0:") and "patches hidden" in c for c in captions)
    assert any("where token" in c for c in captions)
    # the map's reading claims no learning: palette colours alone separate the classes
    intro = " ".join(c.value for c in at.caption)
    assert "balanced accuracy" in intro and "has learned" not in intro
    charts = [c for c in at.get("plotly_chart") if c.key == "inside_map"]
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    chips = trained.result.train_chips
    assert sum(count(t["x"]) for t in spec["data"]) == len(chips) * 64  # one point per token
    # coloured by class: one trace per patch label present
    labels = set(chips.patch_targets().numpy().ravel().tolist())
    assert {t["name"] for t in spec["data"]} == {inside.class_name(v) for v in labels}


def test_the_embedding_map_is_stored_once_per_run_and_chips(trained, monkeypatch):
    run = save_tiny_run(trained, "stored-map")
    results.clear_memory()
    calls = []
    real = im.embedding_map
    monkeypatch.setattr(im, "embedding_map", lambda *a, **k: calls.append(1) or real(*a, **k))
    model, chips = trained.result.model, trained.result.train_chips
    first = inside.embedding_map(model, chips, run)
    assert first.source == "computed" and first.filename.startswith("embedding_map_")
    assert (run.path / first.filename).exists()
    assert inside.embedding_map(model, chips, run).source == "memory"
    results.clear_memory()
    again = inside.embedding_map(model, chips, run)
    assert again.source == "file" and again.value == first.value and len(calls) == 1
    # a damaged file is computed again, not drawn
    stored = json.loads((run.path / first.filename).read_text())
    stored["result"]["x"] = stored["result"]["x"][:3]
    (run.path / first.filename).write_text(json.dumps(stored))
    results.clear_memory()
    assert inside.embedding_map(model, chips, run).source == "computed" and len(calls) == 2
    # other chips: another map
    held = trained.result.heldout_chips
    assert inside.embedding_map(model, held, run).filename != first.filename


def test_clicking_a_point_opens_its_chip_and_chips_like_it(trained, shown):
    at = open_page(trained, None)
    at.session_state["inside_map_chip"] = 5
    at.session_state["inside_map_token"] = 9
    at.run()
    assert not at.exception
    captions = [img.captions[0] for img in at.image if img.captions]
    assert "chip 5, token 9 outlined" in captions
    # the clicked patch enlarged beside its chip: its own pixels, 8x
    chips = trained.result.train_chips
    label = inside.class_name(int(chips.patch_labels[5][1, 1]))
    patch = shown(at, f"token 9 enlarged (row 1, col 1): {label}")
    own = pictures.labels_image(chips.labels[5])[16:32, 16:32]
    np.testing.assert_array_equal(patch, pictures.upscale(own, 8))
    value = im.embedding_map(trained.result.model, trained.result.train_chips)
    near = [hit["chip"] for hit in inside.neighbours(value, 5, 9)]
    assert [c.split(" ·")[0] for c in captions if c.startswith("chip ") and " · " in c][:len(near)] \
        == [f"chip {j}" for j in near]
    why = [c for c in captions if c.startswith(f"chip {near[0]} · ")][0]
    assert "nearest;" in why and "%" in why  # its nearest patch and its class shares
    at.button(key=f"inside_near_{near[0]}").click().run()
    assert at.session_state["inside_map_chip"] == near[0]
    at.button(key="inside_open_chip").click().run()
    assert at.session_state["inside_chip"] == near[0]


def test_a_selection_event_gives_its_chip_and_malformed_ones_nothing():
    assert inside.selected_point({"selection": {"points": [{"customdata": [3, 17]}]}}) == (3, 17)
    lasso = {"selection": {"points": [{"customdata": {"0": 193, "1": 3}}]}}  # as a lasso sends it
    assert inside.selected_point(lasso) == (193, 3)
    assert inside.selected_point({"selection": {"points": [{"customdata": {"0": 1}}]}}) is None
    for bad in (None, {}, {"selection": {"points": [{"customdata": "x"}]}},
                {"selection": {"points": [{"customdata": ["a", 1]}]}}, {"selection": 5}):
        assert inside.selected_point(bad) is None


def test_a_picked_patch_from_session_state_is_checked_against_these_chips():
    """The picked chip and token outlive a chip rebuild in session state: out of range is no
    pick (chip) or token 0, never an IndexError on the page."""
    assert inside.picked_patch(3, 17, n_chips=10, n_tokens=64) == (3, 17)
    assert inside.picked_patch(3, 64, 10, 64) == (3, 0) and inside.picked_patch(3, "7", 10, 64) == (3, 0)
    for chip in (None, 10, -1, "3", 2.0):
        assert inside.picked_patch(chip, 5, 10, 64) is None


def test_attention_picture_is_brightest_where_the_weight_is(trained):
    chips = trained.result.train_chips
    weights = np.zeros((8, 8))
    weights[2, 5] = 1.0
    picture = pictures.attention_picture(chips, 0, weights, query=0)
    assert picture.shape == (256, 256, 3)
    cell = picture[2 * 32 + 8:3 * 32 - 8, 5 * 32 + 8:6 * 32 - 8].astype(int)
    base = pictures.hidden_patches_picture(chips, 0, np.zeros((8, 8), bool), None)
    assert not np.array_equal(cell, base[2 * 32 + 8:3 * 32 - 8, 5 * 32 + 8:6 * 32 - 8])
    untouched = picture[6 * 32 + 8:7 * 32 - 8, 6 * 32 + 8:7 * 32 - 8]
    assert np.array_equal(untouched, base[6 * 32 + 8:7 * 32 - 8, 6 * 32 + 8:7 * 32 - 8])


def test_the_run_zip_downloads_the_runs_files(trained):
    save_tiny_run(trained, "zip-run")
    at = open_page(trained, "zip-run")
    at.button(key="inside_run_zip_prepare").click().run()
    assert not at.exception
    data = at.session_state["_zip_inside_run_zip"][1]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert {"zip-run/model.pt", "zip-run/config.json", "zip-run/history.json",
                "zip-run/metrics.json"} <= set(archive.namelist())


def test_every_chart_page_offers_its_data_as_csv(trained):
    """Reconstruct's curve, Evaluate's confusion matrices and class tables (both splits)."""
    save_tiny_run(trained, "csv-run")
    state = dict(model=model_entry(trained, "csv-run"), train_chips=trained.result.train_chips,
                 heldout_chips=trained.result.heldout_chips)
    recon = open_insight_page("pages/reconstruct.py", **state)
    evaluate = open_insight_page("pages/evaluate.py", **state)
    for at, wanted in ((recon, ["the curve (CSV)"]),
                       (evaluate, ["confusion matrix (CSV)", "per-class table (CSV)"] * 2)):
        assert not at.exception
        labels = sorted(e.proto.label.split(": ", 1)[-1] for e in at.get("download_button"))
        assert labels == sorted(wanted), labels


def layer_box(at):
    return next(box for box in at.selectbox if box.label == "Layer")


def reading(at) -> str:
    return " ".join(m.value for m in at.markdown if "Token **" in m.value)


@pytest.mark.parametrize("arch", ["notebook", "mae"])
def test_the_attention_opens_on_an_encoder_layer_with_a_token_it_computed(trained, arch):
    """An `mae` run used to open on its last decoder layer, where a hidden token's attention is
    near even: it now opens on its last encoder layer and a visible token, the notebook's model
    on its last (encoder) layer and a hidden token; the words say which."""
    entry = mae_entry(trained) if arch == "mae" else model_entry(trained, None)
    at = open_page(trained, None, entry)
    assert not at.exception and not at.info
    maps = im.attention_maps(entry.model, trained.result.train_chips, 0, entry.config.train.mask_ratio)
    layer = layer_box(at).value
    encoder = [i for i, name in enumerate(maps.layers) if name.startswith("encoder")]
    assert layer == encoder[-1]
    query = next(s.value for s in at.select_slider if s.key.startswith("inside_query_"))
    hidden = bool(maps.mask.ravel()[query])
    words = reading(at)
    assert f"Encoder layer {len(encoder)} is in the **encoder**" in words
    if arch == "mae":
        assert len(maps.layers) > len(encoder)  # it has decoder layers to avoid
        assert not hidden and "a **visible** patch" in words and "sees only the" in words
        layer_box(at).set_value(len(maps.layers) - 1).run()
        assert "is in the **decoder**" in reading(at) and "a **visible** patch" in reading(at)
    else:
        assert hidden and "a **hidden** patch" in words and "as a shared mask token" in words


def test_the_attention_words_say_when_a_map_is_nearly_even():
    g, n = 2, 4
    mask = np.array([[True, False], [False, False]])  # token 0 hidden
    weights = np.zeros((2, 1, n, n), np.float32)
    weights[0, 0, 1:, 1:] = 1 / 3  # encoder layer over the three visible tokens: even
    weights[1, 0] = [0.85, 0.05, 0.05, 0.05]  # decoder layer: all look at token 0
    queries = np.array([~mask.ravel(), np.ones(n, bool)])
    maps = im.AttentionMaps(weights, queries, ["encoder layer 1", "decoder layer 1"], mask)
    assert maps.grid_size == g and not maps.sees_hidden(0) and maps.sees_hidden(1)
    assert (inside.default_layer(maps), inside.default_query(maps, 0), inside.default_query(maps, 1)) \
        == (0, 1, 0)
    even = inside.attention_reading(maps, 0, 1, maps.grid(0, None, 1))
    assert "nearly even over the 3 patches this layer sees (even would be 33% each)" in even
    assert "sees only the 3 visible patches" in even
    peaked = inside.attention_reading(maps, 1, 0, maps.grid(1, None, 0))
    assert "nearly even" not in peaked and "0 (85%, hidden)" in peaked and "a **hidden** patch" in peaked


def open_with_recon(tiny, split, chip):
    """Inside the model in a session where Reconstruct's chip is `split`, `chip`, as a lesson
    link's `recon=` puts it (teacher.apply_recon: the widget's key and its kept copy)."""
    return open_insight_page(PAGE, model=model_entry(tiny, None),
                             train_chips=tiny.result.train_chips,
                             heldout_chips=tiny.result.heldout_chips, recon_split=split,
                             _kept_recon_split=split, **{f"recon_chip_{split}": chip,
                                                         f"_kept_recon_chip_{split}": chip})


def chip_caption(at) -> str:
    return next(c for img in at.image for c in img.captions if " patches hidden" in c)


def test_inside_starts_on_the_lessons_reconstruct_chip_until_one_is_picked_here(trained):
    """The walkthrough's lesson link set Reconstruct's chip 4 and Inside the model opened on chip
    0: it starts on Reconstruct's split and chip; a chip picked on Inside then stays."""
    at = open_with_recon(trained, "held", 3)
    assert not at.exception
    assert at.radio(key="inside_split").value == "held"
    assert at.number_input(key="inside_chip").value == 3 and chip_caption(at).startswith("chip 3:")
    at.number_input(key="inside_chip").set_value(1).run()  # the user picks another here
    at = at.switch_page("app.py").run().switch_page(PAGE).run()
    assert at.number_input(key="inside_chip").value == 1 and chip_caption(at).startswith("chip 1:")
    assert at.session_state["recon_chip_held"] == 3  # Reconstruct keeps its own


def test_a_reconstruct_chip_these_chips_lack_leaves_inside_on_the_first_chip(trained):
    at = open_with_recon(trained, "held", len(trained.result.heldout_chips))  # one past the end
    assert not at.exception
    assert at.radio(key="inside_split").value == "train" and at.number_input(key="inside_chip").value == 0
