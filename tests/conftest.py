"""Shared pytest fixtures: per-test data/checkpoint dirs, synthetic WorldCover fixture tiles, the
tiny trained run, the Sentinel-2 folders, a setting declared by a test; and the tier markers.
Helpers that are not fixtures live in tests/support/ (bench/ imports them too)."""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import settings

from tests.support.fixture_tiles import FixtureInfo, notebook_fixture

# Property tests (hypothesis): the same examples on every run (derandomized, no example
# database), a bounded number of them and no per-example deadline (a loaded machine is slow, not
# wrong). A test may ask for fewer or more examples with its own @settings.
settings.register_profile("bharateo", derandomize=True, database=None, deadline=None,
                          max_examples=40)
settings.load_profile("bharateo")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Per-test BHARATEO_DATA_DIR / BHARATEO_CHECKPOINT_DIR; no WorldCover source unless set.

    Tests that need a source set BHARATEO_WORLDCOVER_DIR / _URL themselves (monkeypatch) or use
    the `worldcover_dir` fixture.
    """
    data = tmp_path / "data"
    checkpoints = tmp_path / "checkpoints"
    data.mkdir()
    checkpoints.mkdir()
    monkeypatch.setenv("BHARATEO_DATA_DIR", str(data))
    monkeypatch.setenv("BHARATEO_CHECKPOINT_DIR", str(checkpoints))
    monkeypatch.delenv("BHARATEO_WORLDCOVER_DIR", raising=False)
    monkeypatch.delenv("BHARATEO_WORLDCOVER_URL", raising=False)
    # Training workers at the tests' own priority. At the app's nice 10, beside busy processes
    # of the same session (tools/test_busy.sh's loops: one scheduler autogroup) a worker got a
    # tenth of their share and Train page tests timed out waiting for it; no test checks the nice.
    monkeypatch.setenv("BHARATEO_WORKER_NICE", "0")
    return {"data": data, "checkpoints": checkpoints}


@pytest.fixture(scope="session")
def fixture_tiles_dir(tmp_path_factory) -> FixtureInfo:
    """N27E075 + N27E078 synthetic fixture tiles (see tests.support.fixture_tiles.notebook_fixture),
    written once per session. Treat the folder as read-only."""
    return notebook_fixture(tmp_path_factory.mktemp("worldcover_fixture"))


@pytest.fixture
def worldcover_dir(isolated_env, fixture_tiles_dir, monkeypatch) -> FixtureInfo:
    """Point BHARATEO_WORLDCOVER_DIR at the fixture tiles; returns the FixtureInfo."""
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(fixture_tiles_dir.folder))
    return fixture_tiles_dir


@pytest.fixture(scope="session")
def trained(fixture_tiles_dir, tmp_path_factory):
    """The tiny run (tests/support/runs.py TINY_CONFIG) trained once per session, not saved
    (tests.support.runs.save_tiny_run saves it) -> TinyRun. Read it; never train it further."""
    from tests.support.runs import train_tiny_run

    return train_tiny_run(fixture_tiles_dir.folder, tmp_path_factory.mktemp("tiny-data"))


@pytest.fixture
def s2_env(tmp_path, monkeypatch):
    """The shared scene as a BHARATEO_S2_DIR folder, label fixtures in a WorldCover folder, and
    empty data/checkpoint folders."""
    from tests.support.s2_fixtures import VARIED, sahara_labels, scene_folder

    scene_folder(tmp_path / "s2")
    sahara_labels(tmp_path / "wc", weights=VARIED)
    for key, sub in (("BHARATEO_S2_DIR", "s2"), ("BHARATEO_WORLDCOVER_DIR", "wc"),
                     ("BHARATEO_DATA_DIR", "data"), ("BHARATEO_CHECKPOINT_DIR", "runs")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.delenv("BHARATEO_S2_STAC_URL", raising=False)
    return tmp_path


def _warmup_train_config():
    from bharateo.config.settings import setting
    from bharateo.training.loop import TrainConfig

    # one line: the whole declaration of a new hyperparameter (and one for the page: its widget)
    return dataclasses.make_dataclass(
        "WarmupTrainConfig",
        [("warmup_epochs", int, setting(0, label="warmup epochs", bounds=(0, 10), limits=(0, 10),
                                        help="epochs of linear learning-rate warm-up"))],
        bases=(TrainConfig,), frozen=True)


@pytest.fixture
def warmup(monkeypatch):
    """A TrainConfig with one more setting (warmup_epochs), declared in one line and put in
    RunConfig's sections for one test, with its widget in the app's knob table -> that class."""
    from bharateo.app.knobs import DRAWN, Drawn
    from bharateo.training.experiment import SECTIONS

    config = _warmup_train_config()
    monkeypatch.setitem(SECTIONS, "train", config)
    monkeypatch.setitem(DRAWN, "warmup_epochs", Drawn("number", "Optimiser", step=1))
    return config


# --- tiers -------------------------------------------------------------------------------------
# Every test gets one tier marker, from where it is and what it drives, so a tier runs alone:
#   pytest -m unit          the science (tests/config, data, models, storage, training, jobs and
#                           tests/*.py, laid out like the package), no page, no browser, no
#                           torchrun: quick (under a minute on 2 idle cores)
#   pytest -m app           the app (tests/app/): pages through streamlit.testing.v1.AppTest and
#                           the app's own logic; a science test that drives a page is here too
#                           (AppTest in its source, or marked @pytest.mark.app where a helper
#                           of tests/support/pages.py opens the page)
#   pytest -m browser       the real UI in headless Chromium (tests/app/test_browser.py)
#   pytest -m distributed   DDP under torchrun (tests/test_distributed.py)
TIERS = ("unit", "app", "browser", "distributed")


def _tier(item) -> str:
    import inspect

    path = item.path.as_posix()
    if path.endswith("/tests/app/test_browser.py"):
        return "browser"
    if path.endswith("/tests/test_distributed.py"):
        return "distributed"
    if "/tests/app/" in path:
        return "app"
    try:
        drives_a_page = "AppTest" in inspect.getsource(item.function)
    except (OSError, TypeError):
        drives_a_page = False
    return "app" if drives_a_page else "unit"


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(item.get_closest_marker(name) for name in TIERS):
            item.add_marker(_tier(item))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Torch computes on one thread in the tests, as the app's training worker does on a 2-core
    laptop (bharateo.jobs.worker.worker_threads: the cores less one). The tests' models are tiny:
    a second OpenMP thread only waits, and on a loaded machine two threads fighting other
    processes made a training 10x slower (45 s instead of 4 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
