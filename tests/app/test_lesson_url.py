"""A browser refresh keeps the lesson: regions, chips and the current model ride in the page address
(st.query_params), are checked on the way back in, and are restored from the ROI cache, the chip
config (seeded) and the saved run."""
from __future__ import annotations


from streamlit.testing.v1 import AppTest

from bharateo.chips import ChipConfig, build_chip_sets
from bharateo.roi import NOTEBOOK_ROIS, RoiSpec, load_roi
from tests.test_inputs import save_untrained_run
from tests.paths import APP

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
    at.session_state["model"] = {"model": None, "label": "saved run 'lesson-run'", "config": None,
                                 "run": "lesson-run"}
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
    assert state["model"]["run"] == "lesson-run" and state["model"]["model"] is not None
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
    assert "held-out region 'nowhere'" in notes
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
