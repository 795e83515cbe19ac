"""Shared pytest fixtures: per-test data/checkpoint dirs and synthetic WorldCover fixture tiles."""
from __future__ import annotations

import pytest

from tests.fixture_tiles import FixtureInfo, notebook_fixture


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
    """N27E075 + N27E078 synthetic fixture tiles (see tests.fixture_tiles.notebook_fixture),
    written once per session. Treat the folder as read-only."""
    return notebook_fixture(tmp_path_factory.mktemp("worldcover_fixture"))


@pytest.fixture
def worldcover_dir(isolated_env, fixture_tiles_dir, monkeypatch) -> FixtureInfo:
    """Point BHARATEO_WORLDCOVER_DIR at the fixture tiles; returns the FixtureInfo."""
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(fixture_tiles_dir.folder))
    return fixture_tiles_dir


# --- tiers -------------------------------------------------------------------------------------
# Every test gets one tier marker, from where it is and what it drives, so a tier runs alone:
#   pytest -m unit          the science (tests/*.py), no page, no browser, no torchrun: quick
#   pytest -m app           the app (tests/app/): pages through streamlit.testing.v1.AppTest and
#                           the app's own logic; science tests that drive a page are here too
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
