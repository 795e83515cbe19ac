"""Training inside the app vs the core pipeline at the same config.

Measures, on a synthetic fixture tile (notebook default config, fewer epochs):
  - time from pressing Train (AppTest click) to the first chart point being available, with the
    app open for a few seconds first (as in class: the idle training worker has started), and
  - median epoch time inside the app (a job relaying a worker process) vs `run_experiment` (what
    `python -m bharateo train` runs), run alternately, several times each.
Target: the app adds no more than 10 % per epoch; first point within 2 s (plus the live chart's
1 s polling interval).

usage: python bench/app_overhead.py [--epochs 4] [--rounds 2]
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import ROOT as REPO, fixture_lab  # noqa: E402


def epoch_times(epochs: list[dict]) -> list[float]:
    elapsed = [0.0] + [e["elapsed"] for e in epochs]
    return [b - a for a, b in zip(elapsed, elapsed[1:])]


def app_run(epochs: int) -> dict:
    from streamlit.testing.v1 import AppTest

    from bharateo.data.roi import NOTEBOOK_ROIS, load_roi
    from bharateo.jobs.worker import spare_worker_ready

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.session_state["rois"] = [load_roi(s) for s in NOTEBOOK_ROIS]
    at.switch_page("pages/train.py").run()
    at.session_state["knob_epochs"] = epochs
    at.run()
    assert spare_worker_ready(timeout=60), "the idle training worker did not start"
    train = next(b for b in at.button if b.label == "Train")
    clicked = time.perf_counter()
    train.click().run()
    job = at.session_state["job"]
    while not job.snapshot()["steps"]:
        time.sleep(0.005)
    first_point = time.perf_counter() - clicked
    job.join()
    assert job.status == "finished", job.status
    return {"first_point_s": first_point, "epoch_s": epoch_times(job.snapshot()["epochs"])}


def core_run(epochs: int) -> dict:
    from dataclasses import replace

    from bharateo.training.experiment import RunConfig, load_rois, run_experiment

    config = RunConfig()
    config = replace(config, train=replace(config.train, epochs=epochs))
    result = run_experiment(config, rois=load_rois(config.rois))
    return {"epoch_s": epoch_times(result.history)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        fixture_lab(Path(tmp))
        app_epochs, core_epochs, first_points = [], [], []
        core_run(1)  # warm the ROI cache and torch
        for _ in range(args.rounds):
            res = app_run(args.epochs)
            first_points.append(res["first_point_s"])
            app_epochs += res["epoch_s"][1:]  # the first epoch includes warm-up in both
            core_epochs += core_run(args.epochs)["epoch_s"][1:]
    app_med, core_med = statistics.median(app_epochs), statistics.median(core_epochs)
    report = {"epochs": args.epochs, "rounds": args.rounds,
              "first_point_s_median": round(statistics.median(first_points), 3),
              "app_epoch_s_median": round(app_med, 3), "core_epoch_s_median": round(core_med, 3),
              "app_overhead_pct": round(100 * (app_med / core_med - 1), 1)}
    print(json.dumps(report))
    print(f"\nTrain click -> first chart point (data ready): {report['first_point_s_median']} s "
          "(+ up to 1 s until the live chart polls; target <= 2 s)")
    print(f"epoch time: app {app_med:.3f} s vs core {core_med:.3f} s -> "
          f"{report['app_overhead_pct']:+.1f} % (target <= +10 %)")


if __name__ == "__main__":
    main()
