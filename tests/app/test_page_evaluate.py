"""The Evaluate page through AppTest: confusion matrices, scores, reading, results stored beside the run."""
from __future__ import annotations

import json

import numpy as np
from streamlit.testing.v1 import AppTest

from bharateo.training import evaluate as ev
from bharateo.app import results
from bharateo.data.chips import ChipConfig, build_chip_sets
from tests.support.pages import open_page as open_insight_page
from tests.support.runs import model_entry, save_tiny_run

PAGE = "pages/evaluate.py"


def open_page(**state) -> AppTest:
    return open_insight_page(PAGE, **state)


def session_with(tiny, run_name, held=True):
    return dict(model=model_entry(tiny, run_name), train_chips=tiny.result.train_chips,
                heldout_chips=tiny.result.heldout_chips if held else None)


def confusion_z(at, split):
    charts = [c for c in at.get("plotly_chart") if c.key == f"eval_confusion_{split}"]
    assert len(charts) == 1
    heatmap = json.loads(charts[0].proto.spec)["data"][0]
    assert heatmap["y"][0] == "tree" and heatmap["x"][3] == "built_up"  # rows target, cols predicted
    return np.array(heatmap["z"], dtype=float)


def metric_values(at, label):
    return [m.value for m in at.metric if m.label == label]


def test_confusion_counts_sum_to_patches_and_normalised_rows_to_one(trained):
    at = open_page(**session_with(trained, None))
    train, held = trained.result.train_chips, trained.result.heldout_chips
    counts_t, counts_h = confusion_z(at, "train"), confusion_z(at, "held")
    assert counts_t.sum() == len(train) * 64 and counts_h.sum() == len(held) * 64
    np.testing.assert_array_equal(counts_t.sum(axis=1), train.patch_class_counts())
    direct = ev.evaluate(trained.result.model, train, trained.config.train.mask_ratio)
    np.testing.assert_array_equal(counts_t, direct["confusion"])
    held_direct = ev.evaluate(trained.result.model, held, trained.config.train.mask_ratio)
    assert metric_values(at, "Patch accuracy") == [f"{direct['accuracy']:.1%}",
                                                   f"{held_direct['accuracy']:.1%}"]

    at.toggle(key="eval_normalised").set_value(True).run()
    for split, counts in (("train", counts_t), ("held", counts_h)):
        shares = confusion_z(at, split)
        has_targets = counts.sum(axis=1) > 0
        np.testing.assert_allclose(shares.sum(axis=1)[has_targets], 1.0)
        assert np.all(shares[~has_targets] == 0)

    tables = at.dataframe
    assert len(tables) == 2
    table = tables[0].value.set_index("class")
    assert table["support"].sum() == len(train) * 64
    assert list(table.columns) == ["precision", "recall", "F1", "support", "predicted", "masked MAE"]
    assert (table.loc[table["support"] == 0, "recall"] == "—").all()  # undefined, not 0 or None
    assert (table.loc[table["predicted"] == 0, "precision"] == "—").all()
    report = {r["class"]: r for r in direct["per_class"]}
    assert table.loc["cropland", "recall"] == f"{report['cropland']['recall']:.2f}"
    assert any(c.key == "eval_class_mae" for c in at.get("plotly_chart"))


def test_reading_is_built_from_the_numbers(trained):
    at = open_page(**session_with(trained, None))
    train = ev.evaluate(trained.result.model, trained.result.train_chips, 0.25)
    held = ev.evaluate(trained.result.model, trained.result.heldout_chips, 0.25)
    reading = [i.value for i in at.info if "training chips" in i.value]
    assert reading == [results.gap_reading(train, held, "mathura_belt")]
    assert f"{train['accuracy']:.2f}" in reading[0] and f"{held['accuracy']:.2f}" in reading[0]


def test_results_are_stored_beside_the_run_and_reused(trained, monkeypatch):
    run = save_tiny_run(trained, "evaluated")
    calls = []
    real = ev.evaluate
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    results.clear_memory()
    at = open_page(**session_with(trained, "evaluated"))
    files = sorted(run.path.glob("evaluation_*.json"))
    assert len(files) == 2 and len(calls) == 2
    fps = {results.chips_fingerprint(c)[:12] for c in (trained.result.train_chips,
                                                      trained.result.heldout_chips)}
    assert {f.name.split("_")[1] for f in files} == fps
    assert any("computed earlier, stored in" in c.value for c in at.caption)  # off the page

    # next time (fresh server memory): read back from the files, not computed again
    train_fp = results.chips_fingerprint(trained.result.train_chips)[:12]
    train_file = next(f for f in files if train_fp in f.name)
    stored = json.loads(train_file.read_text())
    stored["result"]["accuracy"] = 0.4242
    train_file.write_text(json.dumps(stored))
    results.clear_memory()
    at = open_page(**session_with(trained, "evaluated"))
    assert len(calls) == 2
    assert metric_values(at, "Patch accuracy")[0] == "42.4%"
    assert any("read back from" in c.value for c in at.caption)


def test_without_held_out_chips_the_page_says_how_to_get_them(trained):
    at = open_page(**session_with(trained, None, held=False))
    assert len(metric_values(at, "Patch accuracy")) == 1
    assert any("hold out a region" in i.value and "Chips page" in i.value for i in at.info)
    assert "chips" in [link.proto.page for link in at.get("page_link")]
    assert any("hold out a region to find out" in i.value for i in at.info)


def test_chips_of_another_size_show_an_error_not_a_traceback(trained):
    small, _ = build_chip_sets(trained.rois, ChipConfig(n_chips=4, chip_size=64))
    at = open_page(model=model_entry(trained, None), train_chips=small, heldout_chips=None)
    assert any("doesn't match the current chips" in e.value and "64 px" in e.value for e in at.error)
    assert not at.get("plotly_chart") and not at.metric


def test_without_any_run_the_page_sends_you_to_train():
    at = open_page()
    assert any("no trained model yet" in i.value for i in at.info)
    assert [link.proto.page for link in at.get("page_link")][-1] == "train"
    assert not at.get("plotly_chart")


def test_row_normalised_choice_survives_a_visit_to_another_page(trained):
    at = open_page(**session_with(trained, None))
    at.toggle(key="eval_normalised").set_value(True).run()
    normalised = confusion_z(at, "train")
    at.switch_page("pages/train.py").run()
    if "eval_normalised" in set(at.session_state):
        del at.session_state["eval_normalised"]  # what a browser session does to undrawn widgets
    at.switch_page(PAGE).run()
    assert not at.exception and at.toggle(key="eval_normalised").value is True
    np.testing.assert_allclose(confusion_z(at, "train"), normalised)


def test_row_normalised_toggle_says_rows_are_the_true_class(trained):
    """Rows are the true class and each sums to 100 % (it described column normalisation)."""
    at = open_page(**session_with(trained, None))
    help_text = at.toggle(key="eval_normalised").help
    assert "true (target) class" in help_text and "sums to 100 %" in help_text
    assert "given each answer" not in help_text + at.toggle(key="eval_normalised").label


def test_classes_without_target_patches_get_no_score_in_the_table_chart_or_csv(trained):
    """The walkthrough saw cropland 0.322 and wetland 0.109 (masked MAE) in rows with 0 target
    patches: every per-class figure of such a class is '—' in the table, absent from the chart
    and empty in the CSV, with a note saying why; classes with patches keep their numbers."""
    from bharateo.storage.export import csv_bytes

    at = open_page(**session_with(trained, None))
    direct = ev.evaluate(trained.result.model, trained.result.train_chips,
                         trained.config.train.mask_ratio)
    absent = [r["class"] for r in direct["per_class"] if r["support"] == 0]
    assert absent  # the fixture's regions lack some of the 8 classes
    table = at.dataframe[0].value.set_index("class")
    for name in absent:
        assert table.loc[name, ["recall", "F1", "masked MAE"]].tolist() == ["—"] * 3, name
    present = table[table["support"] > 0]
    assert (present["masked MAE"] != "—").all()
    assert any(all(n in c.value for n in absent) and "no target patches" in c.value
               for c in at.caption)
    (chart,) = [c for c in at.get("plotly_chart") if c.key == "eval_class_mae"]
    bars = json.loads(chart.proto.spec)["data"][0]  # training chips
    for name in absent:
        assert bars["y"][bars["x"].index(name)] is None, name
    rows = csv_bytes(ev.class_table(direct).to_dict("records")).decode().splitlines()
    header = rows[0].split(",")
    for line in rows[1:]:
        cells = dict(zip(header, line.split(",")))
        assert (cells["masked MAE"] == "") == (cells["support"] == "0"), line


def test_every_accuracy_stands_beside_its_majority_baseline_and_balanced_accuracy(trained):
    at = open_page(**session_with(trained, None))
    ratio = trained.config.train.mask_ratio
    expected = [ev.quality_of(ev.evaluate(trained.result.model, chips, ratio))
                for chips in (trained.result.train_chips, trained.result.heldout_chips)]
    assert metric_values(at, "Majority baseline") == [f"{q['majority_accuracy']:.1%}"
                                                      for q in expected]
    assert metric_values(at, "Balanced accuracy") == [f"{q['balanced_accuracy']:.1%}"
                                                      for q in expected]
    words = {"learned": "learned", "majority": "majority", "no_gain": "no gain"}
    assert metric_values(at, "Reading") == [words[q["verdict"]] for q in expected]
    deltas = [m.proto.delta for m in at.metric if m.label == "Patch accuracy"]
    assert deltas == [f"{100 * (q['accuracy'] - q['majority_accuracy']):+.1f} pts" for q in expected]
    reading = next(i.value for i in at.info if "training chips" in i.value)
    assert f"always '{expected[1]['majority_class']}'" in reading or \
        f"always answering '{expected[1]['majority_class']}'" in reading


def test_a_majority_only_model_is_never_read_as_learning_on_the_page(trained, monkeypatch):
    """A patch head that answers the training chips' majority class everywhere (its bias set far
    above the others) gets a reading that says so and claims nothing."""
    import copy

    import torch

    support = trained.result.train_chips.patch_class_counts()
    majority = int(np.argmax(support))
    name = ev.CLASS_NAMES[majority]
    tiny = copy.copy(trained)
    model = copy.deepcopy(trained.result.model)
    with torch.no_grad():
        linear = model.patch_head[-1]
        linear.weight.zero_()
        linear.bias.fill_(-10.0)
        linear.bias[majority] = 10.0
    tiny.result = copy.copy(trained.result)
    tiny.result.model = model
    results.clear_memory()
    at = open_page(**session_with(tiny, None))
    reading = next(i.value for i in at.info if "training chips" in i.value)
    assert f"little more than answer '{name}'" in reading
    for claim in ("learned carries over", "fits what", "carries over to new land"):
        assert claim not in reading, reading
    assert "learned" not in metric_values(at, "Reading")


def test_a_heatmap_click_and_a_table_row_name_a_cell():
    """The event handling AppTest can't click: plotly's selection state and st.dataframe's."""
    import pandas as pd
    from bharateo.data.worldcover import CLASS_NAMES

    click = {"selection": {"points": [{"x": "tree", "y": "water", "z": 12,
                                       "point_index": [1, 0]}], "point_indices": [], "box": [],
                           "lasso": []}}
    assert results.clicked_cell(click) == (CLASS_NAMES.index("water"), CLASS_NAMES.index("tree"))
    assert results.clicked_cell({"selection": {"points": []}}) is None
    assert results.clicked_cell({"selection": {"points": [{"x": "sea?", "y": "tree"}]}}) is None
    assert results.clicked_cell(None) is None
    table = pd.DataFrame({"class": list(CLASS_NAMES)})
    assert results.selected_class({"selection": {"rows": [3], "columns": []}}, table) == 3
    assert results.selected_class({"selection": {"rows": []}}, table) is None
    seen = {}
    assert results.new_pick(seen, "cell_train", (1, 0))
    assert not results.new_pick(seen, "cell_train", (1, 0))  # the same selection on a rerun
    assert not results.new_pick(seen, "cell_train", None)  # cleared: nothing to show
    spread = results.spread_over_chips(np.array([[0, 1], [0, 5], [0, 9], [2, 3], [4, 0], [4, 7]]))
    assert spread.tolist() == [[0, 1], [2, 3], [4, 0], [0, 5], [4, 7], [0, 9]]
    cells = np.arange(50).reshape(25, 2)
    rows, page, pages = results.patch_page(cells, 9)
    assert (pages, page, len(rows)) == (3, 2, 1) and rows[0].tolist() == [48, 49]


def patches(n: int) -> str:
    return f"{n:,} patch" if n == 1 else f"{n:,} patches"


def test_a_picked_cell_shows_exactly_its_patches_a_page_at_a_time(trained):
    at = open_page(**session_with(trained, None))
    train = trained.result.train_chips
    direct = ev.evaluate(trained.result.model, train, trained.config.train.mask_ratio)
    confusion = np.asarray(direct["confusion"])
    off = confusion - np.diag(np.diag(confusion))
    a, b = np.unravel_index(off.argmax(), off.shape)
    names = results.CLASS_NAMES
    at.selectbox(key="eval_mistake_target").set_value(names[a]).run()
    at.selectbox(key="eval_mistake_predicted").set_value(names[b]).run()
    assert not at.exception
    title = [m.value for m in at.markdown if "patch" in m.value and names[a] in m.value]
    assert title and title[0].startswith(f"**{patches(int(confusion[a, b]))} of")
    shown = [c.value for c in at.caption if c.value.startswith("chip ")]
    assert len(shown) == min(int(confusion[a, b]), results.PATCHES_PER_PAGE)
    assert all(s.endswith(f"{names[a]} called {names[b]}") for s in shown)
    # a class's misses: its row less the diagonal, over as many pages as it takes
    at.selectbox(key="eval_mistake_predicted").set_value(results.MISSES).run()
    misses = int(confusion[a].sum() - confusion[a, a])
    title = [m.value for m in at.markdown if "its misses" in m.value]
    assert title and title[0].startswith(f"**{patches(misses)} of")
    if misses > results.PATCHES_PER_PAGE:
        pages = -(-misses // results.PATCHES_PER_PAGE)
        at.number_input(key="eval_mistake_page").set_value(pages).run()
        shown = [c.value for c in at.caption if c.value.startswith("chip ")]
        assert len(shown) == misses - (pages - 1) * results.PATCHES_PER_PAGE
    assert not at.exception


def test_a_new_click_moves_the_patch_viewer_and_an_old_one_does_not(monkeypatch):
    import pandas as pd
    from bharateo.data.worldcover import CLASS_NAMES

    state = {}
    monkeypatch.setattr(results.st, "session_state", state)
    table = pd.DataFrame({"class": list(CLASS_NAMES)})
    click = {"selection": {"points": [{"x": "tree", "y": "water"}]}}
    results.follow_clicks("held", click, {"selection": {"rows": []}}, table)
    assert (state["eval_mistake_split"], state["eval_mistake_target"],
            state["eval_mistake_predicted"]) == ("held", "water", "tree")
    state["eval_mistake_predicted"] = results.MISSES  # the viewer's own choice
    results.follow_clicks("held", click, {"selection": {"rows": []}}, table)  # a rerun
    assert state["eval_mistake_predicted"] == results.MISSES
    results.follow_clicks("held", click, {"selection": {"rows": [2]}}, table)  # a table row
    assert (state["eval_mistake_target"], state["eval_mistake_predicted"]) == (
        CLASS_NAMES[2], results.MISSES)
