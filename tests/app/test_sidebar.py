"""The sidebar (and every other place that says what is being trained) during a training: the
job's own run name, chips, settings and state, not the Chips page's chips or the Train knobs."""
import os
import signal

from bharateo.jobs import service as jobs
from bharateo.data.chips import ChipConfig, build_chip_sets
from tests.app.test_jobs import thaw_and_end, wait_until
from tests.support.pages import button, set_knobs, sidebar_text, train_page, wait


def sidebar(at) -> str:
    """The sidebar's text as Home (app.py, which draws it for every page) shows it now; `at`
    (on another page) is left on Home."""
    home = at.switch_page("app.py").run()
    assert not home.exception
    return sidebar_text(home)


def test_the_sidebar_describes_a_running_paused_and_stopping_training_from_its_own_config(
        worldcover_dir, monkeypatch):
    """The walkthrough saw 'Chips: 32 train' in the sidebar while the job trained on 64, and no
    word of a pause."""
    at = train_page()
    rois = at.session_state["rois"]
    chip_config = ChipConfig(n_chips=32, chip_size=64)  # the Chips page's chips
    at.session_state["chip_config"] = chip_config
    at.session_state["train_chips"], at.session_state["heldout_chips"] = \
        build_chip_sets(rois, chip_config)
    assert "**Chips:** 32 train" in sidebar(at)
    at = at.switch_page("pages/train.py").run()
    set_knobs(at, n_chips=64, epochs=200, embed_dim=32, depth=1, heads=2, batch_size=16, lr=0.002)
    at.text_input[0].input("sidebar-run").run()
    button(at, "Train").click().run()
    job = at.session_state["job"]
    try:
        wait_until(lambda: len(job.snapshot()["steps"]) >= 2, timeout=120)
        text = sidebar(at)
        assert "64 train chips of 64 px" in text and "32 train" not in text
        assert "run 'sidebar-run', running, epoch" in text
        assert "200 epochs" in text and "learning rate 0.002" in text and "embed dim 32" in text
        at = at.switch_page("pages/train.py").run()
        assert any("Trains on 64 train chips" in c.value for c in at.caption)  # the Train page
        job.pause()
        wait_until(lambda: job.snapshot()["paused"], timeout=120)
        n = job.snapshot()["steps"][-1]["global_step"]
        assert any(f"paused at step {n} " in m.value for m in at.run().markdown)  # the queue table
        text = sidebar(at)
        assert f"run 'sidebar-run', paused at step {n} (epoch" in text and "64 train" in text
        chips_page = at.switch_page("pages/chips.py").run()
        assert not chips_page.exception
        assert any("training on chips cut with its own settings: 64 train" in i.value
                   and "this page's 32" in i.value for i in chips_page.info)
        at = chips_page.switch_page("pages/train.py").run()
        monkeypatch.setattr(jobs, "STOP_GRACE_S", 600.0)  # a frozen worker stays 'stopping'
        os.kill(job.worker.process.pid, signal.SIGSTOP)
        job.stop()
        assert any("Stopping after the current step" in i.value for i in at.run().info)
        assert "run 'sidebar-run', stopping after the current step" in sidebar(at)
    finally:
        thaw_and_end(job)  # the job fails: its worker is gone
        wait(job)
    text = sidebar_text(at.run())  # (on Home)
    assert "**Chips:** 32 train" in text and "Training:** failed (sidebar-run)" in text
