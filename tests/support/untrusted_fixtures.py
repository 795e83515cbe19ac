"""Helpers of the untrusted-input tests: what the interpreter opens, and a run saved by today's
code."""
from __future__ import annotations

import os
import sys
from pathlib import Path


class Opened:
    """Paths the interpreter opens (sys.addaudithook "open") while `watching` is set."""

    watching = False
    paths: list[str] = []


def _audit(event, args):
    if Opened.watching and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        Opened.paths.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # an audit hook can't be removed: it records only while watching


def save_tiny_run(root: Path, name: str = "today") -> Path:
    """A tiny run (2 synthetic regions, 8 chips of 64 px, embed 32, 1 epoch) trained and saved by
    today's code under `root` -> its folder."""
    from bharateo.data.chips import ChipConfig
    from bharateo.training.experiment import RunConfig, run_experiment, save_experiment
    from bharateo.data.roi import Roi, RoiSpec
    from bharateo.training.loop import TrainConfig
    from tests.support.fixture_tiles import synthetic_native
    from tests.support.models import TINY_MODEL

    rois = [Roi(RoiSpec(n, 0.0, 0.0, 256), synthetic_native(256, 256, seed=i, class_weights=k))
            for i, (n, k) in enumerate([("a", "urban"), ("b", "arid")])]
    config = RunConfig(rois=tuple(r.spec for r in rois), chips=ChipConfig(n_chips=8, chip_size=64),
                       model=TINY_MODEL,
                       train=TrainConfig(epochs=1, batch_size=4))
    old = os.environ.get("BHARATEO_CHECKPOINT_DIR")
    os.environ["BHARATEO_CHECKPOINT_DIR"] = str(root)
    try:
        save_experiment(name, config, run_experiment(config, rois=rois), rois)
    finally:
        if old is None:
            os.environ.pop("BHARATEO_CHECKPOINT_DIR", None)
        else:
            os.environ["BHARATEO_CHECKPOINT_DIR"] = old
    return Path(root) / name
