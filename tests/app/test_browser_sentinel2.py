"""A Sentinel-2 lesson in a real browser (issue 15): Regions (source, dates, the local folder's
scene) -> Chips (true and false colour) -> Train (quick demo) -> Reconstruct (true and false
colour rows), on the real shared L2A crop with fixture labels, which the app labels as such.

Screenshots go to docs/screenshots/sentinel2_*.png when BHARATEO_UPDATE_SCREENSHOTS=1, else to
pytest's tmp_path. Needs /usr/bin/chromium (tools/test.sh installs it); skipped elsewhere.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests import browser as b
from tests.s2_fixtures import SCENE_DIR, sahara_labels, scene_folder

pytestmark = pytest.mark.skipif(not SCENE_DIR.is_dir(), reason="needs ../shared/data/sentinel2")
TRAIN_TIMEOUT = 240.0
N_CHIPS = 32
VARIED = {40: .35, 60: .3, 20: .2, 50: .1, 30: .05}


@pytest.fixture(scope="module")
def s2_server(tmp_path_factory):
    """The app reading Sentinel-2 scenes from a local folder (the shared crop) with label
    fixtures for its place; yields (server, the folder's first preset region)."""
    root = tmp_path_factory.mktemp("browser_s2")
    scene_folder(root / "s2")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BHARATEO_")}
    env.update({"BHARATEO_S2_DIR": str(root / "s2"), "BHARATEO_WORLDCOVER_DIR": str(root / "wc"),
                "BHARATEO_DATA_DIR": str(root / "data"),
                "BHARATEO_CHECKPOINT_DIR": str(root / "checkpoints"),
                "BHARATEO_MAX_TRAININGS": "1", "PYTHONUNBUFFERED": "1"})
    from bharateo.sentinel2 import S2Source, folder_presets

    spec = folder_presets(S2Source("folder", str(root / "s2")))[0]
    sahara_labels(root / "wc", spec, weights=VARIED)
    for sub in ("data", "checkpoints"):
        (root / sub).mkdir(exist_ok=True)
    with b.StreamlitServer(env, root / "streamlit.log") as server:
        yield server, spec
    assert b.TRACEBACK not in server.log_text(), server.log_tail(80)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("BHARATEO_UPDATE_SCREENSHOTS") == "1":
        return b.REPO / "docs" / "screenshots"
    return tmp_path_factory.mktemp("screenshots_s2")


def test_sentinel2_lesson_in_a_browser(s2_server, shots, tmp_path):
    from playwright.sync_api import sync_playwright

    server, spec = s2_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=b.require_chromium(), args=b.CHROMIUM_ARGS)
        context = browser.new_context(viewport=b.VIEWPORT)
        context.set_default_timeout(30_000)
        b.block_foreign_hosts(context)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        started = time.monotonic()
        try:
            lesson(page, server, spec, shots)
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"))
            print(f"\nfailed on {page.url}; screenshot {tmp_path / 'failure.png'}\n"
                  f"server log:\n{server.log_tail(40)}")
            raise
        finally:
            browser.close()
    assert not errors, errors
    print(f"Sentinel-2 lesson walked in {time.monotonic() - started:.1f} s")


def lesson(page, server, spec, shots):
    page.goto(server.url)
    page.wait_for_selector('h1:has-text("BharatEO Lab")')
    b.go_to(page, "Regions")
    page.locator(f'{b.MAIN} [data-testid="stRadio"]', has_text="Pixels").get_by_text(
        "Sentinel-2 4 band").click()
    dates = page.get_by_role("textbox", name="Scene dates (first/last day)")
    dates.wait_for()
    dates.fill("2020-01-01/2020-03-01")
    dates.press("Enter")
    b.settle(page, "Regions after choosing Sentinel-2")
    page.get_by_role("button", name=spec.name).click()
    page.wait_for_selector(f"{b.MAIN} h4:has-text('{spec.name}')", timeout=60_000)
    b.wait_images_loaded(page, f'{b.MAIN} [data-testid="stImage"] img', 1)
    b.settle(page, "Regions after reading the scene")
    text = page.locator(b.MAIN).inner_text()
    assert "True colour (B4 B3 B2" in text and "S2A_29RKH_20200219_0_L2A" in text
    assert "synthetic test fixture" in text and "reflectance is real" in text
    b.scroll_to(page, f"{b.MAIN} h4:has-text('{spec.name}')")
    b.screenshot(page, shots, "sentinel2_regions", height=1300)

    b.go_to(page, "Chips")
    page.get_by_role("spinbutton", name="Training chips").fill(str(N_CHIPS))
    page.get_by_role("spinbutton", name="Training chips").press("Tab")
    page.get_by_role("button", name="Build chips").click()
    page.wait_for_selector(f'{b.MAIN} [data-testid="stAlert"]:has-text("Built {N_CHIPS} training")',
                           timeout=60_000)
    b.settle(page, "Chips after Build chips")
    assert "4 × 16 × 16 = 1,024 values" in page.locator(b.MAIN).inner_text()
    b.wait_images_loaded(page, f'{b.MAIN} [data-testid="stImage"] img', 24)
    b.screenshot(page, shots, "sentinel2_chips_true", height=1100)
    page.get_by_text("false colour (B8 B4 B3)").click()
    b.settle(page, "Chips in false colour")
    b.wait_images_loaded(page, f'{b.MAIN} [data-testid="stImage"] img', 24)
    b.screenshot(page, shots, "sentinel2_chips_false", height=1100)

    b.go_to(page, "Train")
    page.get_by_role("button", name="quick demo").click()
    page.wait_for_function(
        "() => document.querySelector('input[aria-label=\"chips\"]')?.value == '192'")
    b.settle(page, "Train after the quick demo preset")
    assert "4 × 16 × 16 = 1,024 values" in page.locator(b.MAIN).inner_text()  # 4 bands
    page.get_by_role("button", name="Train", exact=True).click()
    saved = page.locator(f'{b.MAIN} [data-testid="stAlert"]', has_text="Saved as run")
    saved.wait_for(timeout=TRAIN_TIMEOUT * 1000)
    b.settle(page, "Train finished")
    run_name = re.search(r"Saved as run '([^']+)'", saved.inner_text()).group(1)

    b.go_to(page, "Reconstruct")
    page.locator(f'{b.MAIN} [data-testid="stMetric"]').first.wait_for(timeout=60_000)
    b.settle(page, "Reconstruct")
    b.wait_images_loaded(page, f'{b.MAIN} [data-testid="stImage"] img', 11)
    text = page.locator(b.MAIN).inner_text()
    assert "target true colour (B4 B3 B2)" in text and "target false colour (B8 B4 B3)" in text
    b.scroll_to(page, f'{b.MAIN} [data-testid="stSlider"]')
    b.screenshot(page, shots, "sentinel2_reconstruct", height=1500)
    print(f"\nSentinel-2 run {run_name} reconstructed in true and false colour")
