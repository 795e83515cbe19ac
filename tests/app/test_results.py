"""Reconstruct and Evaluate run the model under its run's precision policy (issue 12.5), as the
CLI's evaluate does, and the chip picker's logic lives in bharateo/app/results.py (issue 12.1)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from bharateo.training import evaluate as ev
from bharateo.app import results
from bharateo.app.state import CurrentModel
from tests.support.pages import open_page
from tests.support.runs import save_tiny_run


@pytest.fixture
def precisions(monkeypatch):
    """Every precision the pages ask evaluate.py for; the work itself is done in fp32 (the only
    policy this lab has so far), so the pages draw as usual."""
    seen = []

    def recording(real):
        def call(*args, precision="fp32", **kwargs):
            seen.append(precision)
            return real(*args, precision="fp32", **kwargs)
        return call

    for name in ("evaluate", "mask_ratio_curve", "reconstruct_chip"):
        monkeypatch.setattr(ev, name, recording(getattr(ev, name)))
    return seen


def session_of(tiny, precision: str) -> dict:
    config = replace(tiny.config, train=replace(tiny.config.train, precision=precision))
    return dict(model=CurrentModel(tiny.result.model, "run (trained here)", config),
                train_chips=tiny.result.train_chips, heldout_chips=tiny.result.heldout_chips)


@pytest.mark.parametrize("page, calls", [
    ("pages/evaluate.py", None),  # training and held-out chips, the patch viewer's predictions
    # and its chips' reconstructions (how many depends on the cell shown)
    ("pages/reconstruct.py", 3)])  # the chip (drawn while the curve fills in, and once it is
    # in), the curve
def test_results_pages_evaluate_under_the_runs_precision(trained, precisions, page, calls):
    results.clear_memory()
    open_page(page, **session_of(trained, "bf16"))
    assert precisions == ["bf16"] * (calls or max(len(precisions), 3))


def test_fp32_results_keep_the_file_names_they_had(trained, precisions):
    """Results stored before precision policies existed were fp32: they are still found."""
    run = save_tiny_run(trained, "stored-fp32")
    chips = trained.result.train_chips
    results.clear_memory()
    stored = results.evaluation(trained.result.model, chips, 0.75, run)
    before = results.result_filename("evaluation", results.chips_fingerprint(chips),
                                     {"mask_ratio": 0.75, "seed": ev.EVAL_MASK_SEED})
    assert stored.filename == before and (run.path / before).is_file()
    other = results.evaluation(trained.result.model, chips, 0.75, run, precision="bf16")
    assert other.filename != before and other.source == "computed"


@pytest.mark.parametrize("typed, count, index, shown", [
    (0, 64, 0, range(0, 10)), (23, 64, 23, range(20, 30)), (63, 64, 63, range(54, 64)),
    (64, 64, None, range(0, 10)), (-1, 64, None, range(0, 10)), (None, 64, None, range(0, 10)),
    (2, 5, 2, range(0, 5))])
def test_a_typed_chip_number_picks_a_chip_and_its_thumbnails(typed, count, index, shown):
    assert results.chip_choice(typed, count) == (index, shown)
