"""Set-up the benchmarks share: a throw-away lab on the synthetic fixture tiles
(tests/support/fixture_tiles.py), so a benchmark never reads the network or touches the user's data,
tile or checkpoint folders. Run benchmarks from the repo root: `python bench/<name>.py`."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bharateo/ and tests.support importable from bench/


def fixture_lab(folder: Path | None = None, threads: int | None = None) -> Path:
    """Point the lab into `folder` (None: a new temp folder, left for a look afterwards): the
    notebook's synthetic fixture tiles written to `folder/tiles` (BHARATEO_WORLDCOVER_DIR; any
    BHARATEO_WORLDCOVER_URL dropped), empty `data/` and `checkpoints/` (BHARATEO_DATA_DIR,
    BHARATEO_CHECKPOINT_DIR); torch on `threads` threads (None: torch's own choice).
    Call it before anything reads those variables. Returns `folder`."""
    folder = Path(folder or tempfile.mkdtemp(prefix="bharateo-bench-"))
    for name in ("data", "checkpoints"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    os.environ.update(BHARATEO_DATA_DIR=str(folder / "data"),
                      BHARATEO_CHECKPOINT_DIR=str(folder / "checkpoints"))
    os.environ.pop("BHARATEO_WORLDCOVER_URL", None)

    import torch

    from tests.support.fixture_tiles import notebook_fixture

    if threads:
        torch.set_num_threads(threads)
    os.environ["BHARATEO_WORLDCOVER_DIR"] = str(notebook_fixture(folder / "tiles").folder)
    return folder
