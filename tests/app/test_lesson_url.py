"""A browser refresh keeps the lesson: regions, chips and the current model ride in the page address
(st.query_params), are checked on the way back in, and are restored from the ROI cache, the chip
config (seeded) and the saved run."""
from __future__ import annotations


from streamlit.testing.v1 import AppTest

from bharateo.data.chips import ChipConfig, build_chip_sets
from bharateo.data.roi import NOTEBOOK_ROIS, RoiSpec, load_roi
from bharateo.app.state import CurrentModel
from tests.support.runs import save_untrained_run
from tests.support.paths import APP

SMALL_ROIS = [RoiSpec(s.name, s.lon, s.lat, 512) for s in NOTEBOOK_ROIS]


def lesson_session():
    """A session with three regions, chips with a held-out region and a saved run in use."""
    at = AppTest.from_file(APP, default_timeout=90).run()
    rois = [load_roi(s) for s in SMALL_ROIS]
    config = ChipConfig(n_chips=48, min_classes=3, seed=7, holdout_roi="mathura_belt",
                        holdout_block="east", n_holdout_chips=16)
    save_untrained_run("lesson-run")
    at.session_state["rois"] = rois
    at.session_state["chip_config"] = config
    at.session_state["train_chips"], at.session_state["heldout_chips"] = build_chip_sets(rois, config)
    at.session_state["model"] = CurrentModel(None, "saved run 'lesson-run'", None, "lesson-run")
    return at.run()


def refreshed(params: dict) -> AppTest:
    """A new browser session opened on an address with these query parameters."""
    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params.update(params)
    return at.run()


def test_a_refresh_restores_regions_chips_and_model(worldcover_dir):
    before = lesson_session()
    params = dict(before.query_params)
    assert params["run"] == "lesson-run" and len(params["roi"]) == 3 and params["chips"]
    after = refreshed(params)
    # no restore note: the only warning is the banner naming the fixture pixels for what they are
    assert not after.exception
    assert [w.value for w in after.warning if "synthetic test fixture" not in w.value] == []
    state = after.session_state
    assert [r.spec for r in state["rois"]] == SMALL_ROIS
    assert state["chip_config"] == before.session_state["chip_config"]
    for split in ("train_chips", "heldout_chips"):
        old, new = before.session_state[split], state[split]
        assert (old.labels == new.labels).all() and (old.origins == new.origins).all()
        assert (old.patch_labels == new.patch_labels).all() and old.roi_names == new.roi_names
    assert state["model"].run == "lesson-run" and state["model"].model is not None
    assert dict(after.query_params) == params  # and the address still holds the lesson


def test_malformed_or_unsafe_values_are_ignored_with_a_notice(worldcover_dir):
    params = dict(lesson_session().query_params)
    bad = {"roi": [params["roi"][0], "77.5,not-a-latitude,512,x", "77.5,27.3,999999,huge",
                   "1,2,3"],
           "chips": "48,128,16,3,7,16,nowhere,east", "run": "../../etc"}
    at = refreshed(bad)
    assert not at.exception
    notes = " ".join(w.value for w in at.warning)
    assert "not-a-latitude" in notes and "must be numbers" in notes
    assert "huge" in notes and "ROI size must be between" in notes
    assert "'1,2,3'" in notes and "expected longitude,latitude,size,name" in notes
    assert "**held-out region** is 'nowhere'" in notes
    assert "'../../etc' can't be a run name" in notes
    assert [r.spec.name for r in at.session_state["rois"]] == ["delhi_ncr"]
    assert at.session_state["train_chips"] is None and at.session_state["model"] is None


def test_a_run_stopped_before_its_first_epoch_is_not_restored(worldcover_dir):
    save_untrained_run("no-epochs", epochs_done=0)
    at = refreshed({"run": "no-epochs"})
    assert not at.exception and at.session_state["model"] is None
    assert any("before its first epoch finished" in w.value for w in at.warning)


def test_an_address_cannot_ask_for_chips_or_regions_beyond_what_the_pages_offer(worldcover_dir):
    """chips=4096,4000,1,... asked for 82 GB of candidate windows and killed the server; and an
    address could list any number of 4096 px regions."""
    params = dict(lesson_session().query_params)
    for chips in ("48,4000,1,3,7,16,,", "48,128,1,3,7,16,,", "48,128,16,9,7,16,,",
                  "48,128,16,3,-5,16,,"):
        at = refreshed({"roi": params["roi"][:1], "chips": chips})
        assert not at.exception
        notes = " ".join(w.value for w in at.warning)
        assert "chip settings" in notes.lower() or "chips" in notes, notes
        assert at.session_state["train_chips"] is None
    many = [f"{77.18 + 0.01 * k:.2f},28.61,64,r{k}" for k in range(10)]  # inside the fixture
    at = refreshed({"roi": many})
    assert not at.exception
    assert len(at.session_state["rois"]) == 8
    assert any("names 10 regions; only the first 8" in w.value for w in at.warning)


# --- issue 14: training knobs, the Reconstruct chip and ratio, teacher mode ---------------------
KNOB_WIDGETS = ("number_input", "slider", "select_slider", "selectbox", "checkbox")


def knob_widgets(at) -> set[str]:
    """The Train knobs drawn on the page (widget keys without the knob_ prefix)."""
    return {w.key.removeprefix("knob_") for kind in KNOB_WIDGETS for w in at.get(kind)
            if w.key and w.key.startswith("knob_")}


def test_the_address_restores_every_listed_setting(worldcover_dir):
    """A lesson set up on Train and Reconstruct, opened in a new session from its address."""
    before = lesson_session().switch_page("pages/train.py").run()
    changes = dict(mask_ratio=0.9, lr=0.002, epochs=3, embed_dim=64, depth=2, heads=2,
                   batch_size=8, cosine=False, patch_loss_weight=0.5, weight_decay=0.1, seed=11,
                   n_chips=32, min_classes=2, holdout_roi="mathura_belt", holdout_block="west")
    for key, value in changes.items():
        before.session_state[f"knob_{key}"] = value
    before.run()
    before.session_state["recon_split"], before.session_state["recon_chip_held"] = "held", 5
    before.session_state["recon_mask_ratio"] = 0.6
    before.run()
    params = dict(before.switch_page("app.py").run().query_params)  # app.py writes the address
    assert params["mask_ratio"] == "0.9" and params["cosine"] == "0" and params["recon"] == "held,5,0.60"
    assert "show" not in params  # teacher mode is off

    after = refreshed(params)
    assert not after.exception
    assert [w.value for w in after.warning if "synthetic test fixture" not in w.value] == []
    state = after.session_state
    for key, value in changes.items():
        assert state[f"knob_{key}"] == value, key
    assert (state["recon_split"], state["recon_chip_held"], state["recon_mask_ratio"]) == ("held", 5, 0.6)
    assert state["model"].run == "lesson-run"
    train = after.switch_page("pages/train.py").run()
    assert not train.exception
    config = train.session_state["train_knobs"]
    assert {k: config[k] for k in changes} == changes  # the page keeps them (chips didn't reset them)
    recon = after.switch_page("pages/reconstruct.py").run()
    assert recon.session_state["recon_split"] == "held" and recon.session_state["recon_chip_held"] == 5
    assert recon.slider(key="recon_mask_ratio").value == 0.6


def test_malformed_settings_are_ignored_with_a_notice(worldcover_dir):
    params = dict(lesson_session().query_params)
    bad = {"roi": params["roi"], "chips": params["chips"],
           "mask_ratio": "0.93", "lr": "abc", "embed_dim": "100", "cosine": "maybe",
           "epochs": "1e9", "holdout_roi": "../x", "recon": "train,999,0.5", "show": "lr,bogus",
           "foo": "1", "heads": "2"}
    at = refreshed(bad)
    assert not at.exception
    notes = " ".join(w.value for w in at.warning)
    for what in ("mask ratio", "learning rate", "embed dim", "cosine schedule", "epochs",
                 "held-out region"):
        assert f"'{what}'" in notes, what
    assert "not on the slider's steps" in notes and "must be a number (got 'abc')" in notes
    assert "there is no chip 999" in notes and "'bogus'" in notes and "'foo'" in notes
    state = at.session_state
    assert state["knob_heads"] == 2 and state["knob_mask_ratio"] == 0.75  # good kept, bad default
    assert state["teacher_show"] == ["lr"] and state["teacher_on"]


def test_a_teacher_mode_naming_no_real_control_does_not_lock_the_train_page(worldcover_dir):
    """show=nonsense used to turn teacher mode on with nothing shown: every knob hidden."""
    params = {"roi": lesson_roi_params(), "show": "nonsense"}
    at = refreshed(params)
    assert not at.exception
    assert "names no control students could see" in " ".join(w.value for w in at.warning)
    assert not at.session_state["teacher_on"] if "teacher_on" in at.session_state else True
    at = at.switch_page("pages/train.py").run()
    assert {"mask_ratio", "lr", "epochs"} <= knob_widgets(at)  # every setting shows


def lesson_roi_params() -> list[str]:
    return [f"{s.lon!r},{s.lat!r},{s.size},{s.name}" for s in SMALL_ROIS]


def test_teacher_mode_hides_exactly_the_chosen_controls_and_their_values_still_train(worldcover_dir):
    params = {"roi": lesson_roi_params(), "show": "mask_ratio,lr", "epochs": "2", "embed_dim": "32",
              "depth": "1", "heads": "2", "n_chips": "16", "mask_ratio": "0.5", "seed": "9"}
    at = refreshed(params).switch_page("pages/train.py").run()
    assert not at.exception
    assert knob_widgets(at) == {"mask_ratio", "lr"}  # exactly the chosen ones
    assert not [b for b in at.button if b.label in ("quick demo", "notebook default")]  # no presets
    assert not [e for e in at.expander if "Teacher mode" in e.label]  # a student's view
    note = next(c.value for c in at.caption if c.value.startswith(":material/school: Teacher mode"))
    assert "set by the teacher for this lesson" in note  # not "fixed"/a lock: teacher mode isn't one
    assert "lock" not in note and "fixed" not in note
    at.slider(key="knob_mask_ratio").set_value(0.6).run()  # a student moves a shown control
    assert not at.exception
    next(b for b in at.button if b.label == "Train").click().run()
    job = at.session_state["job"]
    try:
        t, m, c = job.config.train, job.config.model, job.config.chips
        assert (t.epochs, t.mask_ratio, t.seed, m.embed_dim, m.depth, m.heads, c.n_chips) == \
            (2, 0.6, 9, 32, 1, 2, 16)  # the hidden values reached the config, the shown one too
    finally:
        job.stop()
        job.join(60)
    assert dict(at.switch_page("app.py").run().query_params)["show"] == "mask_ratio,lr"  # kept


def test_a_teacher_chooses_the_controls_and_the_link_carries_the_choice(worldcover_dir):
    at = lesson_session().switch_page("pages/train.py").run()
    assert len(knob_widgets(at)) > 10 and "show" not in dict(at.query_params)
    at.multiselect(key="teacher_show").set_value(["epochs", "mask_ratio"]).run()
    at.toggle(key="teacher_on").set_value(True).run()
    assert knob_widgets(at) == {"epochs", "mask_ratio"}
    assert [e for e in at.expander if "Teacher mode" in e.label]  # the teacher keeps the panel
    home = at.switch_page("app.py").run()  # another page: the choice is kept, and in the address
    assert dict(home.query_params)["show"] == "mask_ratio,epochs"  # in page order
    at = home.switch_page("pages/train.py").run()
    assert knob_widgets(at) == {"epochs", "mask_ratio"}
    at.toggle(key="teacher_on").set_value(False).run()
    assert len(knob_widgets(at)) > 10
    assert "show" not in dict(at.switch_page("app.py").run().query_params)


# --- polish: the address keeps only the valid lesson; teacher mode hides run management --------
def lesson_notes(at) -> list[str]:
    """The restore notes on the page (the fixture banner aside)."""
    return [w.value for w in at.warning if "synthetic test fixture" not in w.value]


def test_bad_values_leave_the_address_once_their_notice_is_shown(worldcover_dir):
    """The notice was right, but the bad values stayed in the address: a refresh showed it again
    and a re-shared link carried them on. Every kind: unknown keys, bad knobs (with no good one
    beside them), a bad region among good ones, run, Reconstruct chip, pixel source, teacher mode."""
    good = dict(lesson_session().query_params)
    bad = {"roi": [*good["roi"], "1,2,3"], "chips": good["chips"], "run": "../../etc",
           "foo": "1", "lr": "abc", "mask_ratio": "0.93", "recon": "train,999,0.5",
           "show": "lr,bogus", "src": "nope,x,1"}
    at = refreshed(bad)
    assert not at.exception
    notes = " ".join(lesson_notes(at))
    for what in ("'1,2,3'", "'../../etc'", "'foo'", "'abc'", "0.93", "no chip 999", "'bogus'",
                 "'nope'"):
        assert what in notes, what
    address = dict(at.query_params)
    assert address == {"roi": good["roi"], "chips": good["chips"], "show": "lr"}  # the valid lesson
    assert lesson_notes(at.run()) == []  # the notice shows once in this session
    again = refreshed(address)  # a refresh, or the link shared again
    assert not again.exception and lesson_notes(again) == []
    assert dict(again.query_params) == address


def run_management(at) -> set[str]:
    """The run-management controls the Train page draws."""
    return ({b.label for b in at.button if b.label in ("Rename", "Delete")}
            | {c.label.split(" '")[0] for c in at.checkbox
               if c.label.startswith(("yes, delete '", "allow cancelling"))})


def test_teacher_mode_hides_rename_delete_and_cancelling_others_unless_chosen(worldcover_dir):
    from bharateo.jobs import service as jobs
    from tests.app.test_jobs import ROIS, config, wait_until

    other = jobs.TrainingJob(config(epochs=500), ROIS, "another-session").start()  # the queue
    try:
        wait_until(lambda: other.snapshot()["steps"], timeout=120)
        every = {"Rename", "Delete", "yes, delete",
                 "allow cancelling other sessions' trainings (teacher)"}
        teacher = lesson_session().switch_page("pages/train.py").run()  # a saved run: lesson-run
        assert run_management(teacher) == every  # no teacher mode: everything shows
        panel = " ".join(m.value for m in teacher.markdown)
        assert "Teacher mode is not a lock" in panel and "without `show=`" in panel
        student = refreshed({"roi": lesson_roi_params(), "show": "mask_ratio,lr"})
        student = student.switch_page("pages/train.py").run()
        assert not student.exception and run_management(student) == set()
        assert [b for b in student.button if b.label.startswith("Use this run")]  # loading stays
        chosen = refreshed({"roi": lesson_roi_params(),
                            "show": "mask_ratio,manage_runs,cancel_others"})
        chosen = chosen.switch_page("pages/train.py").run()
        assert not chosen.exception and run_management(chosen) == every
        assert knob_widgets(chosen) == {"mask_ratio"}
        address = dict(chosen.switch_page("app.py").run().query_params)
        assert address["show"] == "mask_ratio,manage_runs,cancel_others"  # it travels in the link
    finally:
        other.stop()
        other.join(60)


def test_values_typed_out_of_range_stay_out_of_the_address(worldcover_dir):
    """Typed on Train, an absurd value blocks Train with a message; the link keeps only the valid
    lesson (the walkthrough found lr=-5.0&epochs=100000&n_chips=99999999 in it)."""
    at = lesson_session().switch_page("pages/train.py").run()
    for key, value in dict(lr=-5.0, epochs=100000, n_chips=99999999, mask_ratio=0.9).items():
        at.session_state[f"knob_{key}"] = value
    at.run()
    assert any("blocked" in e.value for e in [*at.error, *at.warning])  # the page says so
    params = dict(at.switch_page("app.py").run().query_params)
    assert params["mask_ratio"] == "0.9"  # the valid change is there
    assert not {"lr", "epochs", "n_chips"} & set(params), params
    assert not refreshed(params).exception


# --- issue 21.8 / 20.4: an address is bounded, and says what it dropped -----------------------
def test_an_address_too_long_for_streamlit_gets_a_note_and_is_cleaned(worldcover_dir):
    """Over 1,000 parameters or 512 KiB, Streamlit read none of the address, with no note, and the
    junk stayed in it."""
    refreshed({})  # the server's first session (app.py installs the guard for the process)
    junk = {f"junk{k}": "x" for k in range(1200)}
    for params in (junk, {"roi": lesson_roi_params()[:1], "foo": "y" * (600 * 1024)}):
        at = refreshed(params)
        assert not at.exception
        notes = " ".join(lesson_notes(at))
        assert "too long to read" in notes and "1,000 parameters and 512 KiB" in notes, notes
        assert dict(at.query_params) == {}, "the address is cleaned"
        assert lesson_notes(at.run()) == []  # once


def test_an_over_long_value_is_left_out_with_a_note(worldcover_dir):
    params = {"roi": [*lesson_roi_params()[:1], "1," * 400], "show": "lr," * 300, "lr": "0.002"}
    at = refreshed(params)
    assert not at.exception
    notes = " ".join(lesson_notes(at))
    assert "'roi'" in notes and "'show'" in notes and "over the 512" in notes, notes
    assert [r.spec.name for r in at.session_state["rois"]] == [SMALL_ROIS[0].name]
    assert dict(at.query_params) == {"roi": lesson_roi_params()[0], "lr": "0.002"}


def test_a_link_cannot_ask_for_chips_the_chips_page_cannot_cut(worldcover_dir):
    """chips=4096,256,8,...: 8 px patches (1,024 tokens a chip, a 10,525-hour estimate) were
    accepted, though the Chips page never cuts them."""
    at = refreshed({"roi": lesson_roi_params()[:1], "chips": "4096,256,8,2,42,64,,"})
    assert not at.exception and at.session_state["train_chips"] is None
    notes = " ".join(lesson_notes(at))
    assert "**patch size (px)** is 8: the Chips page cuts chips with 16 only" in notes, notes
    assert "chips" not in dict(at.query_params)
    # each value is checked by its setting's one check, with the sentence the Chips page shows
    at = refreshed({"roi": lesson_roi_params()[:1], "chips": "5000,128,16,2,42,64,,"})
    from bharateo.app.chips import chip_field_problems

    page_sentence = chip_field_problems({"n_chips": 5000, "chip_size": 128, "min_classes": 2,
                                         "seed": 42, "n_holdout_chips": 64})[0]
    assert page_sentence.rstrip(".") in " ".join(lesson_notes(at)), page_sentence


def test_many_unknown_keys_are_counted_in_the_note_and_a_long_one_is_shortened():
    params = {"k" * 300: "1", **{f"junk{i}": "1" for i in range(12)}}
    notes = " ".join(lesson_notes(refreshed(params)))
    assert "'junk3' and 8 more" in notes, notes  # 13 unknown: the first 5 named
    assert "k" * 40 + "…'" in notes and "k" * 41 not in notes and "junk4" not in notes
