"""Training studio (AppTest): presets, a live run saved to disk, Stop, divergence, comparing runs,
and several sessions sharing one server's training slots."""
import json
import math

import pytest

from streamlit.testing.v1 import AppTest

from bharateo.jobs.service import QUEUE
from bharateo.app.knobs import HOLDOUT_KNOBS, knobs_from_config
from bharateo.training.experiment import PRESETS
from bharateo.data.roi import load_roi
from bharateo.storage.runs import list_runs, load_run
from bharateo.app.state import CurrentModel
from tests.support.pages import SMALL_ROIS, button, set_knobs, train_page, wait
from tests.support.paths import APP
from tests.support.models import TINY_MODEL
from tests.support.waiting import wait_until


def start_training(at, name, **knobs):
    """Set `knobs`, name the run `name` and press Train; returns the session's job."""
    set_knobs(at, **knobs)
    at.text_input[0].input(name).run()
    button(at, "Train").click().run()
    return at.session_state["job"]


SLOW = dict(epochs=200, embed_dim=32, depth=1, heads=2)  # a small model that trains until stopped


def test_without_regions_the_page_says_what_to_do():
    at = AppTest.from_file(APP, default_timeout=60).run().switch_page("pages/train.py").run()
    assert not at.exception
    assert "Regions" in at.info[0].value


def test_notebook_default_preset_is_the_notebooks_config(worldcover_dir):
    at = train_page()
    assert not at.exception
    assert [m.value for m in at.metric] == ["0.80M", "492k", "123k", "369k", "94.4M"]  # short,
    assert [m.help.split()[0] for m in at.metric][1:] == [  # the notebook's exact table in the help
        "491,520", "122,880", "368,640", "94,371,840"]
    assert "notebook default" in at.caption[0].value
    knobs = {k.removeprefix("knob_"): at.session_state[k] for k in at.session_state if k.startswith("knob_")}
    nb = PRESETS["notebook default"]
    assert (knobs["n_chips"], knobs["batch_size"], knobs["epochs"], knobs["lr"], knobs["weight_decay"],
            knobs["mask_ratio"], knobs["patch_loss_weight"], knobs["embed_dim"], knobs["depth"],
            knobs["heads"], knobs["cosine"], knobs["seed"]) == \
        (384, 16, 20, 4e-4, 0.05, 0.75, 0.2, 128, 3, 4, True, 42)
    assert nb.train.lr == 4e-4 and nb.chips.n_chips == 384
    button(at, "quick demo").click().run()
    assert at.metric[0].value == "0.20M" and "quick demo" in at.caption[0].value


def test_quick_run_draws_charts_saves_run_and_becomes_current_model(worldcover_dir):
    at = train_page()
    button(at, "quick demo").click().run()
    job = start_training(at, "demo-run", n_chips=32, epochs=1, holdout_roi="mathura_belt")
    wait(job)
    at.run()
    assert not at.exception
    assert job.status == "finished" and "demo-run" in at.success[0].value
    assert len(at.get("plotly_chart")) >= 2
    run = load_run("demo-run")
    assert run.config["train"]["epochs"] == 1 and run.config["chips"]["holdout_roi"] == "mathura_belt"
    assert len(run.history) == 1 and run.history[0]["heldout_rec_mae"] is not None
    assert run.config["data"][0]["synthetic"] is True and run.config["saved_at"]
    assert at.session_state["model"].run == "demo-run"
    assert "demo-run" in at.dataframe[0].value["run"].tolist()
    # every accuracy beside its baselines: the live chart's baseline lines, the runs table
    chart = json.loads(at.get("plotly_chart")[1].proto.spec)["data"]
    names = [t.get("name", "") for t in chart]
    assert any(n.startswith("demo-run: majority baseline") for n in names)
    assert any(n.startswith("demo-run: held-out majority baseline") for n in names)
    assert "demo-run: ESA balanced acc" in names
    row = at.dataframe[0].value.set_index("run").loc["demo-run"]
    m = run.metrics
    assert row["majority"] == f"{m['train_majority_acc']:.3f}"
    assert row["balanced"] == f"{m['train_balanced_acc']:.3f}"
    assert row["held-out majority"] == f"{m['heldout_majority_acc']:.3f}"
    assert row["reading"] in ("learned", "majority", "no gain")
    assert any("majority" in c.value and "balanced" in c.value for c in at.caption)
    assert "class_weighting" in [s.key.removeprefix("knob_") for s in at.selectbox if s.key]


def test_stop_keeps_partial_history(worldcover_dir):
    at = train_page()
    job = start_training(at, "stopped-run", n_chips=64, batch_size=16, **SLOW)
    wait_until(lambda: len(job.snapshot()["epochs"]) >= 2)
    button(at.run(), "Stop").click().run()
    wait(job)
    run = load_run("stopped-run")
    assert job.status == "stopped" and 2 <= len(run.history) < 200
    assert run.metrics["end_reason"] == "stopped"


def test_huge_learning_rate_stops_with_explanation(worldcover_dir):
    at = train_page()
    button(at, "quick demo").click().run()
    set_knobs(at, lr=1.0, n_chips=32)
    button(at, "Train").click().run()
    job = at.session_state["job"]
    wait(job)
    at.run()
    assert job.status == "diverged"
    message = at.error[0].value
    assert "learning rate of 1" in message and "4e-4" in message
    assert at.session_state["model"] is None  # a diverged run doesn't become the pages' model


def test_impossible_settings_show_an_error_not_a_traceback(worldcover_dir):
    at = train_page()
    set_knobs(at, embed_dim=64, heads=6)
    assert not at.exception and "divisible" in at.error[0].value


def test_comparing_two_runs_overlays_both(worldcover_dir):
    for name in ("mask-050", "mask-090"):  # saved runs: what the comparison reads (no training)
        saved_tiny_run(name)
    at = train_page()
    at.multiselect[0].set_value(["mask-050", "mask-090"]).run()
    charts = at.get("plotly_chart")
    names = " ".join(t.get("name", "") for c in charts for t in json.loads(c.proto.spec)["data"])
    assert "mask-050: total" in names and "mask-090: total" in names


def test_rename_and_delete_with_confirmation(worldcover_dir):
    saved_tiny_run("to-rename")  # a saved run, made the pages' model: what renaming must follow
    at = train_page()
    button(at, "Use this run for Reconstruct / Evaluate").click().run()
    assert at.session_state["model"].run == "to-rename"
    at.text_input(key="rename_to").input("renamed").run()
    button(at, "Rename").click().run()
    assert [r.name for r in list_runs()] == ["renamed"]
    assert button(at, "Delete").disabled
    at.checkbox(key="confirm_delete").check().run()
    button(at, "Delete").click().run()
    assert list_runs() == [] and not at.exception


TINY = dict(embed_dim=32, depth=1, heads=2)  # the tests' model. A training here is mostly its
# worker's start-up (~2 CPU s importing torch): a test that only reads runs uses saved ones


def test_three_sessions_share_one_slot_in_queue_order(worldcover_dir, monkeypatch):
    """One running, two queued behind it: each waits its turn, in the order Train was clicked."""
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "1")
    sessions = []
    for i in range(3):
        at = train_page()
        button(at, "quick demo").click().run()
        start_training(at, f"queued-{i}", n_chips=32, epochs=1, **TINY)
        sessions.append(at)
    jobs = [at.session_state["job"] for at in sessions]
    seen_running = []  # the queue's running count, sampled every poll until all three end
    wait_until(lambda: seen_running.append(QUEUE.running()) or all(j.done for j in jobs),
               "all three queued trainings ended")
    assert all(j.status == "finished" for j in jobs), [j.status for j in jobs]
    assert max(seen_running) == 1
    starts = [j.started_at for j in jobs]
    assert starts == sorted(starts)
    for at in sessions:
        at.run()
        assert not at.exception
    assert sorted(r.name for r in list_runs()) == [f"queued-{i}" for i in range(3)]


def test_waiting_session_sees_its_queue_position(worldcover_dir, monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "1")
    first, second = train_page(), train_page()
    for at, name in [(first, "long"), (second, "waiting")]:
        start_training(at, name, n_chips=32, **SLOW)
    wait_until(lambda: first.session_state["job"].status == "running")
    second.run()
    snapshots = [at.session_state["job"].snapshot() for at in (first, second)]
    assert any("number 1 in the queue" in i.value for i in second.info), \
        [(s["status"], s["queue_position"], s["error"]) for s in snapshots]
    first.session_state["job"].stop()
    second.session_state["job"].stop()
    wait(first.session_state["job"])
    wait(second.session_state["job"])
    assert second.session_state["job"].status in ("cancelled", "stopped")


def test_dataset_knobs_start_from_the_chips_page(worldcover_dir):
    from bharateo.data.chips import ChipConfig, build_chip_sets

    at = AppTest.from_file(APP, default_timeout=60).run()
    rois = [load_roi(s) for s in SMALL_ROIS]
    config = ChipConfig(n_chips=48, min_classes=3, seed=7, holdout_roi="shekhawati",
                        holdout_block="east", n_holdout_chips=16)
    at.session_state["rois"] = rois
    at.session_state["chip_config"] = config
    at.session_state["train_chips"], at.session_state["heldout_chips"] = build_chip_sets(rois, config)
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert (at.session_state["knob_n_chips"], at.session_state["knob_min_classes"],
            at.session_state["knob_holdout_roi"], at.session_state["knob_holdout_block"],
            at.session_state["knob_seed"]) == (48, 3, "shekhawati", "east", 7)
    assert "custom" in at.caption[0].value


def test_chips_built_after_opening_train_set_its_dataset_knobs(worldcover_dir):
    """Train opened first, then chips with a held-out region built on Chips: Train trains on them."""
    from bharateo.data.chips import ChipConfig, build_chip_sets

    at = train_page()
    set_knobs(at, epochs=3)
    assert at.session_state["knob_holdout_roi"] == ""
    config = ChipConfig(n_chips=48, holdout_roi="mathura_belt", n_holdout_chips=16)
    at.session_state["chip_config"] = config
    at.session_state["train_chips"], at.session_state["heldout_chips"] = build_chip_sets(
        at.session_state["rois"], config)
    at.run()
    assert not at.exception
    assert (at.session_state["knob_n_chips"], at.session_state["knob_holdout_roi"],
            at.session_state["knob_epochs"]) == (48, "mathura_belt", 3)


def test_knobs_survive_a_visit_to_another_page(worldcover_dir):
    at = train_page()
    button(at, "quick demo").click().run()
    set_knobs(at, epochs=3, holdout_roi="shekhawati")
    before = dict(at.session_state["train_knobs"])
    at.switch_page("pages/chips.py").run()
    for key in [k for k in at.session_state if k.startswith("knob_")]:
        del at.session_state[key]  # what a browser session does to widgets a page didn't draw
    at.switch_page("pages/train.py").run()
    assert not at.exception
    after = {k: at.session_state[f"knob_{k}"] for k in before}
    assert after == before and after["epochs"] == 3 and after["embed_dim"] == 64
    assert at.selectbox[0].value == "shekhawati"


def test_estimate_shown_and_a_training_over_the_servers_budget_refused(worldcover_dir, monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAINING_S", "3600")
    at = train_page()
    assert not at.exception and not at.error
    caption = next(c.value for c in at.caption if "Estimated training time" in c.value)
    assert "an estimate" in caption and "60 min per training" in caption
    assert not button(at, "Train").disabled
    set_knobs(at, n_chips=4096, epochs=500, embed_dim=256, depth=8, heads=8)  # ~20 h on 2 cores
    message = at.error[0].value
    assert "BHARATEO_MAX_TRAINING_S" in message and "Reduce the epochs" in message
    assert " h (an estimate)" in message
    assert button(at, "Train").disabled and at.session_state["job"] is None


def test_any_session_can_cancel_a_queued_or_running_job_from_the_queue(worldcover_dir, monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAININGS", "1")
    student, other = train_page(), train_page()
    first, second = (start_training(at, name, n_chips=32, **SLOW)
                     for at, name in [(student, "long-run"), (other, "waiting-run")])
    wait_until(lambda: first.status == "running")
    teacher = train_page()
    names = " ".join(m.value for m in teacher.markdown)
    assert "**long-run**" in names and "**waiting-run**" in names and "queued, number 1" in names
    cancels = [b for b in teacher.button if b.label == "Cancel"]
    assert len(cancels) == 2 and all(b.disabled for b in cancels)  # others' jobs: tick the box first
    teacher.checkbox(key="cancel_others").check().run()
    [b for b in teacher.button if b.label == "Cancel"][1].click().run()  # the queued one
    wait(second)
    assert second.status == "cancelled" and "another session" in second.error
    [b for b in student.run().button if b.label == "Cancel"][0].click().run()  # own job: no box
    wait(first)
    assert first.status == "stopped" and load_run("long-run").history is not None
    assert not teacher.exception and not student.exception


# --- bad input and lost state (issue 10, section 6) -----------------------------------------------
def test_invalid_typed_settings_block_train_and_name_the_field(worldcover_dir):
    """Chips 99999, epochs -3, learning rate 0 (fields the browser used to turn red and silently
    replace by the last valid value): each blocks Train with a message naming it."""
    at = train_page()
    for key in ("knob_n_chips", "knob_epochs", "knob_lr", "knob_seed", "knob_min_classes",
                "knob_weight_decay"):  # no min/max: the browser sends what was typed
        widget = at.number_input(key=key)
        assert widget.min is None or widget.min < -1e9, key
        assert widget.max is None or widget.max > 1e9, key
    for key, value, words in [("n_chips", 99999, "Chips must be a whole number from 16 to 4,096 (got 99999)"),
                              ("epochs", -3, "Epochs must be a whole number from 1 to 500 (got -3)"),
                              ("lr", 0.0, "Learning rate must be a number from 1e-06 to 10 (got 0)"),
                              ("min_classes", 9, "Min classes per chip must be a whole number from 1 to 8 (got 9)"),
                              ("weight_decay", 1.5, "Weight decay must be a number from 0 to 1 (got 1.5)"),
                              ("seed", -1, "Seed must be a whole number from 0 to 2,147,483,647 (got -1)")]:
        good = dict(at.session_state["train_knobs"])
        set_knobs(at, **{key: value})
        assert not at.exception
        assert any(words in e.value and "blocked" in e.value for e in at.error), \
            (key, [e.value for e in at.error])
        assert button(at, "Train").disabled  # AppTest, like a browser, can't click it
        assert at.session_state["job"] is None and list_runs() == []
        set_knobs(at, **{key: good[key]})
        assert not at.error and not button(at, "Train").disabled


def test_a_bad_run_name_error_stays_until_the_user_acts(worldcover_dir):
    at = train_page()
    at.text_input(key="run_name").input("../../etc").run()
    button(at, "Train").click().run()
    message = "'../../etc' can't be a run name"
    assert any(message in e.value for e in at.error) and at.session_state["job"] is None
    at.run()  # any rerun (a fragment, the sidebar's training status) keeps it
    assert any(message in e.value for e in at.error)
    at.text_input(key="run_name").input("fine-name").run()  # the user acts: the error goes
    assert not any(message in e.value for e in at.error)


def test_a_run_stopped_before_its_first_epoch_never_becomes_the_model(worldcover_dir):
    at = train_page()
    previous = CurrentModel(None, "saved run 'trained-before'", None)
    at.session_state["model"] = previous
    set_knobs(at, n_chips=1024, epochs=1, batch_size=4, embed_dim=32, depth=1, heads=2)
    at.text_input(key="run_name").input("too-early").run()
    button(at, "Train").click().run()
    job = at.session_state["job"]
    wait_until(lambda: job.status != "queued")
    job.stop()
    wait(job)
    at.run()
    assert not at.exception
    assert job.status == "stopped" and job.end.epochs_done == 0
    assert at.session_state["model"] == previous
    assert any("keep using the model they had" in w.value for w in at.warning)
    assert load_run("too-early").metrics["epochs_done"] == 0  # saved all the same
    at.selectbox(key="train_manage_run").select("too-early").run()
    button(at, "Use this run for Reconstruct / Evaluate").click().run()
    assert any("before its first epoch finished" in e.value for e in at.error)
    assert at.session_state["model"] == previous


def test_a_finished_run_joins_the_comparison(worldcover_dir):
    """A teacher's report: after a second run finished, "compare runs" kept the old selection and
    left the new run out. Every run this session saves joins it; the kept choice stays too."""
    saved_tiny_run("before")  # saved earlier (no training): the page's first choice to compare
    at = train_page()
    button(at, "quick demo").click().run()
    assert at.multiselect(key="train_compare").value == ["before"]
    wait(start_training(at, "first", n_chips=32, epochs=1, **TINY))
    at.run()
    assert at.multiselect(key="train_compare").value == ["before", "first"]  # kept, and joined
    at.multiselect(key="train_compare").set_value([]).run()  # compare nothing for now
    wait(start_training(at, "second", n_chips=32, epochs=1, **TINY))
    at.run()
    assert at.multiselect(key="train_compare").value == ["second"]
    assert not at.exception


def test_run_name_and_run_choices_survive_a_visit_to_another_page(worldcover_dir):
    for name in ("first", "second", "third"):  # saved runs to choose from (no training)
        saved_tiny_run(name)
    at = train_page()
    at.text_input(key="run_name").input("next-one").run()
    at.multiselect(key="train_compare").set_value(["first"]).run()
    at.selectbox(key="train_manage_run").select("second").run()
    at.switch_page("pages/chips.py").run()
    for key in {"run_name", "train_compare", "train_manage_run"} & set(at.session_state):
        del at.session_state[key]  # what a browser session does to widgets a page didn't draw
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert at.text_input(key="run_name").value == "next-one"
    assert at.multiselect(key="train_compare").value == ["first"]
    assert at.selectbox(key="train_manage_run").value == "second"


# --- issue 11: damaged runs, names, failed saves (saved-runs part of the page) ----------------
def saved_tiny_run(name):
    """A run saved straight to disk (no training): a 32-dim model, one epoch of history."""
    from bharateo.models.notebook import TinyRGBMAE
    from bharateo.training.experiment import RunConfig
    from bharateo.storage.runs import save_run

    config = RunConfig(rois=tuple(SMALL_ROIS), model=TINY_MODEL)
    history = [{"epoch": 1, "loss": 0.5, "rec": 0.4, "esa": 0.5, "rec_mae": 0.3, "esa_acc": 0.6}]
    metrics = {"end_reason": "finished", "epochs_done": 1, "train_rec_mae": 0.3}
    return save_run(name, TinyRGBMAE(config.model), config.to_dict(), history, metrics)


def damage(path, filename, change):
    (path / filename).write_text(json.dumps(change(json.loads((path / filename).read_text()))))


def test_damaged_runs_are_listed_with_reasons_and_deletable_and_break_no_page(worldcover_dir):
    saved_tiny_run("good")
    damage(saved_tiny_run("no-train"), "config.json", lambda d: {k: v for k, v in d.items() if k != "train"})
    damage(saved_tiny_run("bad-date"), "config.json", lambda d: {**d, "saved_at": 20261130})
    damage(saved_tiny_run("as-list"), "config.json", lambda d: [d])
    damage(saved_tiny_run("text-score"), "metrics.json", lambda d: {**d, "train_rec_mae": "0.3x"})
    at = train_page()
    assert not at.exception
    assert at.dataframe[0].value["run"].tolist() == ["good", "as-list", "bad-date", "no-train", "text-score"]
    warning = " ".join(w.value for w in at.warning)
    assert "config.json: 'train' is missing" in warning and "saved_at" in warning
    assert "list, not an object" in warning and "train_rec_mae" in warning
    at.selectbox(key="train_manage_run").select("bad-date").run()
    assert button(at, "Use this run for Reconstruct / Evaluate").disabled
    at.checkbox(key="confirm_delete").check().run()
    button(at, "Delete").click().run()
    assert not at.exception and "bad-date" not in at.dataframe[0].value["run"].tolist()
    for page in ("pages/evaluate.py", "pages/reconstruct.py"):  # list_runs: only usable runs
        at.switch_page(page).run()
        assert not at.exception, page
        options = at.selectbox(key=f"{page[6:-3]}_saved_run").options
        assert len(options) == 1 and options[0].startswith("good ·")


def test_use_this_run_on_a_malicious_model_pt_shows_the_plain_message(worldcover_dir):
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))
    path = saved_tiny_run("evil")
    (path / "model.pt").write_bytes(pickle.dumps({"patch_embed.weight": Payload()}))
    at = train_page()
    button(at, "Use this run for Reconstruct / Evaluate").click().run()
    assert not at.exception and at.session_state["model"] is None
    message = " ".join(e.value for e in at.error)
    assert "can't be loaded" in message and "weights_only" not in message


def test_two_sessions_choosing_the_same_name_both_keep_their_runs(worldcover_dir):
    sessions = []
    for _ in range(2):
        at = train_page()
        button(at, "quick demo").click().run()
        set_knobs(at, n_chips=32, epochs=1, **TINY)
        at.text_input(key="run_name").input("same").run()
        button(at, "Train").click().run()
        sessions.append(at)
    for at in sessions:
        wait(at.session_state["job"])
    names = sorted(at.session_state["job"].run_name for at in sessions)
    assert names == ["same", "same-2"] and all(at.session_state["job"].status == "finished"
                                               for at in sessions)
    assert sorted(r.name for r in list_runs()) == ["same", "same-2"]


def test_a_full_disk_at_save_keeps_the_model_and_save_again_works(worldcover_dir, monkeypatch):
    import errno

    from bharateo.storage import runs

    real_write = runs._write_file

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(runs, "_write_file", full)
    at = train_page()
    button(at, "quick demo").click().run()
    set_knobs(at, n_chips=32, epochs=1, **TINY)
    at.text_input(key="run_name").input("full-disk").run()
    button(at, "Train").click().run()
    job = at.session_state["job"]
    wait(job)
    at.run()
    assert not at.exception and job.status == "failed"
    message = " ".join(e.value for e in at.error)
    assert "disk is full" in message and str(runs.checkpoint_root()) in message
    assert list_runs() == []
    monkeypatch.setattr(runs, "_write_file", real_write)  # space freed
    button(at, "Save again").click().run()
    assert not at.exception and job.status == "finished"
    assert [r.name for r in list_runs()] == ["full-disk"]
    assert at.session_state["model"].run == "full-disk"


def test_a_read_only_checkpoints_folder_is_reported_at_train_click(worldcover_dir, monkeypatch):
    import errno

    from bharateo.storage import runs

    def read_only(folder, filename, data):
        raise PermissionError(errno.EACCES, "Permission denied", str(folder / filename))
    monkeypatch.setattr(runs, "_write_into", read_only)
    at = train_page()
    button(at, "quick demo").click().run()
    at.text_input(key="run_name").input("nowhere").run()
    button(at, "Train").click().run()
    assert not at.exception and at.session_state["job"] is None  # nothing trains to be lost
    message = " ".join(e.value for e in at.error)
    assert "read-only" in message and str(runs.checkpoint_root()) in message
    assert not any(runs.checkpoint_root().iterdir())


def test_fast_preset_offers_the_mae_variant_and_shows_the_flops_of_each_choice(worldcover_dir):
    at = train_page()
    table = at.table[0].value  # every variant at these sizes, before training
    assert table.loc["notebook", "chosen"] == "✓" and table.loc["mae", "chosen"] == ""
    assert table.loc["notebook", "MFLOP per chip"] == 284 and table.loc["mae", "MFLOP per chip"] == 104
    assert table.loc["mae", "vs notebook"] == "2.7x fewer" and "16 visible" in table.loc["mae", "what runs"]
    assert at.selectbox(key="knob_arch").value == "notebook"
    assert at.select_slider(key="knob_decoder_dim").disabled  # the notebook model has no decoder
    button(at, "fast (MAE encoder)").click().run()
    assert not at.exception and "fast (MAE encoder)" in at.caption[0].value
    assert (at.session_state["knob_arch"], at.session_state["knob_precision"]) == ("mae", "auto")
    # every knob shows the preset's one declaration (bharateo/training/experiment.py), its batch size and
    # scaled learning rate included (issue 23)
    declared = {k: v for k, v in knobs_from_config(PRESETS["fast (MAE encoder)"]).items()
                if k not in HOLDOUT_KNOBS}  # the held-out choice belongs to the dataset
    assert {k: at.session_state[f"knob_{k}"] for k in declared} == declared
    assert declared["batch_size"] != PRESETS["notebook default"].train.batch_size
    assert at.table[0].value.loc["mae", "chosen"] == "✓" and at.metric[0].value == "0.81M"
    assert not at.select_slider(key="knob_decoder_dim").disabled
    assert any("Precision: auto picks" in c.value for c in at.caption)
    set_knobs(at, mask_ratio=0.9)  # more hidden: the visible-only encoder does even less
    assert at.table[0].value.loc["mae", "MFLOP per chip"] < 104
    assert at.table[0].value.loc["notebook", "MFLOP per chip"] == 284
    reduced = at.table[0].value.loc["mae", "MFLOP per chip"]
    set_knobs(at, decoder_depth=2)  # a deeper decoder: more work, and the table says so
    assert at.table[0].value.loc["mae", "MFLOP per chip"] > reduced
    at.selectbox(key="knob_precision").set_value("bf16").run()
    assert any("Precision: **bf16**" in c.value for c in at.caption)


def test_a_notebook_run_and_an_mae_run_compare_side_by_side_with_their_speeds(worldcover_dir):
    at = train_page()
    button(at, "quick demo").click().run()
    for arch, name in [("notebook", "nb-run"), ("mae", "mae-run")]:
        wait(start_training(at, name, n_chips=32, epochs=1, arch=arch, precision="auto"))
        at.run()
    assert load_run("mae-run").config["model"]["arch"] == "mae"
    runs = at.dataframe[0].value
    assert runs.set_index("run").loc["mae-run", "model"].startswith("mae ")
    at.multiselect[0].set_value(["nb-run", "mae-run"]).run()
    table = at.dataframe[1].value.set_index("run")  # the compared runs side by side
    for name in ("nb-run", "mae-run"):
        run = load_run(name)
        assert table.loc[name, "model"] == f"{run.config['model']['arch']} {run.metrics['precision']}"
        assert table.loc[name, "chips/s"] > 0
    assert table.loc["nb-run", "speed vs first"] == "1.00x"
    at.radio(key="train_compare_x").set_value("time").run()
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")][-2:]  # the compare charts
    assert all("over training time" in c["layout"]["title"]["text"] for c in charts)
    xs = [t["x"] for c in charts for t in c["data"] if t["name"] == "mae-run: total"]
    assert xs and xs[0] == [e["elapsed"] for e in load_run("mae-run").history]


def test_pause_then_step_advances_exactly_one_step_and_the_history_says_so(worldcover_dir):
    at = train_page()
    job = start_training(at, "paused-run", n_chips=64, batch_size=16, **SLOW)

    def until(condition):
        assert wait_until(condition), job.snapshot()["control_state"]

    until(lambda: len(job.snapshot()["steps"]) >= 2)
    button(at.run(), "Pause").click().run()
    until(lambda: job.snapshot()["paused"])
    at.run()
    assert not at.exception
    n = len(job.snapshot()["steps"])
    assert any(f"Paused after step {n} " in i.value for i in at.info)
    assert button(at, "Resume") and button(at, "Step")
    charts = len(at.get("plotly_chart"))
    button(at, "Step").click().run()
    until(lambda: job.snapshot()["paused"] and len(job.snapshot()["steps"]) > n)
    at.run()
    assert len(job.snapshot()["steps"]) == n + 1  # one optimiser step, then paused again
    assert any(f"Paused after step {n + 1} " in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == charts  # the live charts stay, one step longer
    button(at, "Step epoch").click().run()
    until(lambda: job.snapshot()["paused"] and job.snapshot()["controls"][-1].get("by") == "epoch")
    steps, end_of_epoch = job.snapshot()["steps"], -(-(n + 1) // 4) * 4  # 64 chips / 16 a step
    assert len(steps) == end_of_epoch and steps[-1]["step"] == 4  # to the end of that epoch
    assert len(job.snapshot()["epochs"]) == end_of_epoch // 4
    button(at.run(), "Resume").click().run()
    until(lambda: len(job.snapshot()["steps"]) > 6)
    button(at.run(), "Stop").click().run()
    wait(job)
    run = load_run("paused-run")
    assert run.metrics["end_reason"] == "stopped"
    assert [(c["action"], c["after_step"]) for c in run.config["controls"]][:6] == [
        ("pause", c0 := run.config["controls"][0]["after_step"]), ("paused", n), ("step", n),
        ("paused", n + 1), ("epoch", n + 1), ("paused", end_of_epoch)]
    assert c0 <= n


def test_a_run_training_now_is_not_listed_as_a_damaged_folder(worldcover_dir):
    """The walkthrough saw the running training's reservation in the 'can't be used; rename or
    delete them' list, inviting a student to delete the run that is training."""
    from bharateo.storage.runs import reserve_run_name

    reserve_run_name("training-now")  # a reservation by this (live) process, as a worker's is
    at = train_page()
    assert not at.exception
    assert any("Training now" in c.value and "training-now" in c.value for c in at.caption)
    assert not any("training-now" in w.value for w in at.warning)


def test_every_token_accounting_figure_is_short_and_exact_in_its_help(worldcover_dir, monkeypatch):
    """The walkthrough saw '283,115,…': a metric a fifth of the page wide cut its value off.
    At the largest chips x epochs the knobs allow, every figure fits (at most 6 characters) and
    its help holds the exact number config.tokens() computed."""
    from bharateo.models.notebook import num_masked
    from bharateo.app.knobs import knob_settings

    settings = knob_settings()
    monkeypatch.setenv("BHARATEO_MAX_TRAINING_S", "none")  # the figures, not the 30-min default
    at = set_knobs(train_page(), n_chips=settings["n_chips"].high, epochs=settings["epochs"].high)
    assert not at.exception and not at.error
    knobs = {k: at.session_state[f"knob_{k}"] for k in ("n_chips", "epochs", "mask_ratio")}
    total = knobs["n_chips"] * knobs["epochs"] * 64  # 64 tokens per 128 px chip of 16 px patches
    masked = knobs["n_chips"] * knobs["epochs"] * num_masked(64, knobs["mask_ratio"])
    metrics = {m.label: m for m in at.metric}
    tokens_row = ["token presentations", "visible tokens", "masked tokens", "masked pixel targets"]
    assert set(tokens_row) <= set(metrics)
    for label in ["parameters", *tokens_row]:
        assert len(metrics[label].value) <= 6, (label, metrics[label].value)
    exact = {m.label: int(m.help.split()[0].replace(",", "")) for m in at.metric}
    assert exact["token presentations"] == total and exact["masked tokens"] == masked
    assert exact["visible tokens"] == total - masked
    assert exact["masked pixel targets"] == masked * 16 * 16 > 10**9  # patches of 16 x 16 px


def test_settings_changed_while_paused_train_from_the_next_step_and_show_on_the_chart(worldcover_dir):
    at = train_page()
    job = start_training(at, "changed-run", n_chips=64, batch_size=16, **SLOW)
    assert wait_until(lambda: len(job.snapshot()["steps"]) >= 2)
    button(at.run(), "Pause").click().run()
    assert wait_until(lambda: job.snapshot()["paused"])
    at.run()
    n = len(job.snapshot()["steps"])
    assert at.number_input(key="live_lr").value == 4e-4  # the run's own settings
    at.number_input(key="live_mask_ratio").set_value(1.0)
    button(at, "Apply from the next step").click().run()
    assert any("mask ratio" in e.value.lower() for e in at.error)  # refused, in words
    assert job.snapshot()["pending_changes"] == {}
    at.number_input(key="live_mask_ratio").set_value(0.5)
    at.number_input(key="live_lr").set_value(2e-3)
    button(at, "Apply from the next step").click().run()
    assert not at.exception and not at.error
    assert job.snapshot()["pending_changes"] == {"lr": 2e-3, "mask_ratio": 0.5}
    assert at.session_state["knob_lr"] == 2e-3  # the lesson link carries what the run goes on with
    button(at, "Step").click().run()
    assert wait_until(lambda: job.snapshot()["paused"] and len(job.snapshot()["steps"]) > n)
    at.run()
    last = job.snapshot()["steps"][-1]  # the new base rate, cosine over 200 epochs
    assert last["lr"] == pytest.approx(2e-3 * (1 + math.cos(math.pi * (last["epoch"] - 1) / 200)) / 2)
    loss_chart = json.loads(next(c for c in at.get("plotly_chart")
                                 if "losses" in c.proto.spec).proto.spec)
    marks = [a["text"] for a in loss_chart["layout"].get("annotations", [])]
    assert marks == ["learning rate 0.002 · mask ratio 0.5"]
    assert loss_chart["layout"]["shapes"][0]["x0"] == job.snapshot()["steps"][n - 1]["progress"]
    button(at.run(), "Stop").click().run()
    wait(job)
    run = load_run("changed-run")
    assert run.config["train"]["lr"] == 2e-3 and run.config["train"]["mask_ratio"] == 0.5
    assert [c["from_step"] for c in run.config["controls"] if c["action"] == "changed"] == [n + 1]
    params = dict(at.switch_page("app.py").run().query_params)  # app.py writes the address
    assert params.get("lr") == "0.002" and params.get("mask_ratio") == "0.5"


def test_change_marks_read_only_numbers_of_live_settings_from_a_saved_config():
    from bharateo.app.train import change_marks

    controls = [{"action": "paused", "after_step": 3},
                {"action": "changed", "from_step": 4, "progress": 0.75, "lr": 2e-3,
                 "settings": {"lr": 2e-3, "embed_dim": 64, "mask_ratio": "<a href='x'>0.5</a>"}},
                {"action": "changed", "from_step": "4", "progress": 0.75, "settings": {}},
                "junk"]
    steps = [{"global_step": 3, "elapsed": 1.5}]
    assert change_marks(controls, steps) == [{"progress": 0.75, "text": "learning rate 0.002",
                                              "elapsed": 1.5}]
    assert change_marks(None) == [] and change_marks({"a": 1}) == []


# --- issue 20.4: sane defaults for a server -----------------------------------------------------
def test_the_form_refuses_chips_the_chips_page_cannot_cut(worldcover_dir):
    """A session's chip settings from outside the Chips form (8 px patches, 512 px chips) were
    trained as given."""
    from bharateo.data.chips import ChipConfig

    for chips, words in ((ChipConfig(patch_size=8), "**patch size (px)** is 8"),
                         (ChipConfig(chip_size=512), "**Chip size (px)** is 512"),
                         (ChipConfig(n_holdout_chips=5000),
                          "Held-out chips must be a whole number from 1 to 1,024 (got 5000)")):
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.session_state["rois"] = [load_roi(s) for s in SMALL_ROIS]
        at.session_state["chip_config"] = chips
        at = at.switch_page("pages/train.py").run()
        assert not at.exception
        errors = " ".join(e.value for e in at.error)
        assert "not ones the Chips page can cut" in errors and words in errors, errors
        assert button(at, "Train").disabled and at.session_state["job"] is None


def test_a_server_without_a_budget_set_limits_a_training_to_30_minutes(worldcover_dir, monkeypatch):
    """Unset, BHARATEO_MAX_TRAINING_S was no limit: a 1,884-hour training took the only slot."""
    monkeypatch.delenv("BHARATEO_MAX_TRAINING_S", raising=False)
    at = train_page()
    caption = next(c.value for c in at.caption if "Estimated training time" in c.value)
    assert "this server's limit is 30 min per training" in caption and "peak memory about" in caption
    set_knobs(at, n_chips=4096, epochs=500, embed_dim=256, depth=8, heads=8)
    assert "over this server's limit of 30 min" in at.error[0].value
    assert button(at, "Train").disabled


def test_a_training_that_cannot_fit_in_memory_is_refused_saying_what_to_reduce(worldcover_dir,
                                                                            monkeypatch):
    monkeypatch.setenv("BHARATEO_MAX_TRAINING_S", "none")
    monkeypatch.setenv("BHARATEO_MEMORY_BYTES", str(300 * 2**20))  # less than a process needs
    at = train_page()
    message = " ".join(e.value for e in at.error)
    assert "more than the 315 MB this machine has free" in message, message
    assert "Reduce chips, chip size or model size" in message
    assert button(at, "Train").disabled
