"""A lesson in a real browser: `streamlit run app.py` in a subprocess, driven with Chromium.

One session walks the pages as a teacher would (Home -> Regions -> Chips -> Train -> Reconstruct
-> Evaluate) on the synthetic fixture tiles, failing on any Streamlit exception box or traceback.
Each page URL is also opened cold in a fresh browser (and /train as a fresh server's very first
request), and the Train page's settings are checked after a visit to another page (Streamlit
drops the state of widgets it did not draw). Screenshots of every page go to docs/screenshots/
when BHARATEO_UPDATE_SCREENSHOTS=1, else to pytest's tmp_path. About 80 s on 2 cores (the lesson ~50 s, most of it the quick-demo training).

Needs /usr/bin/chromium (tools/test.sh installs it): missing, the test fails under CI and is
skipped elsewhere.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from bharateo.data.worldcover import CLASS_NAMES, SAMPLE_TILES, bundled_tile_path
from tests import browser as b
from tests.support.s2_fixtures import SCENE_DIR, sahara_labels, scene_folder

TRAIN_TIMEOUT = 150.0  # the quick demo takes ~20 s on 2 idle cores; generous for a busy machine
PAGES = {  # url path -> page title
    "regions": "Regions", "chips": "Chips", "train": "Train",
    "reconstruct": "Reconstruct", "evaluate": "Evaluate",
}
N_CHIPS = 32
N_HELD = 16


# --- fixtures ------------------------------------------------------------------------------------
def server_env(fixture_tiles_dir, root: Path) -> dict[str, str]:
    """Environment for an app reading the fixture tiles, with data/checkpoint dirs under root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BHARATEO_")}
    env.update({
        "BHARATEO_WORLDCOVER_DIR": str(fixture_tiles_dir.folder),
        "BHARATEO_DATA_DIR": str(root / "data"),
        "BHARATEO_CHECKPOINT_DIR": str(root / "checkpoints"),
        "BHARATEO_MAX_TRAININGS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    (root / "data").mkdir(exist_ok=True)
    (root / "checkpoints").mkdir(exist_ok=True)
    return env


@pytest.fixture(scope="session")
def app_server(fixture_tiles_dir, tmp_path_factory):
    """The app on a free port, reading the fixture tiles, with its own data/checkpoint dirs."""
    root = tmp_path_factory.mktemp("browser_app")
    with b.StreamlitServer(server_env(fixture_tiles_dir, root), root / "streamlit.log") as server:
        yield server
    # after every test: a background exception (e.g. in the training thread) is a failure too
    log = server.log_text()
    assert b.TRACEBACK not in log, f"the server logged a traceback:\n{server.log_tail(80)}"


@pytest.fixture(scope="session")
def chromium():
    path = b.require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=b.CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("BHARATEO_UPDATE_SCREENSHOTS") == "1":
        return b.REPO / "docs" / "screenshots"
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def context(chromium, app_server):
    """A fresh browser context (a new Streamlit session) that records every request and any
    uncaught JavaScript error, and never reaches the internet."""
    ctx = chromium.new_context(viewport=b.VIEWPORT)
    ctx.set_default_timeout(30_000)
    ctx.requests, ctx.js_errors = [], []
    ctx.on("request", lambda request: ctx.requests.append(request.url))
    b.block_foreign_hosts(ctx)
    try:
        yield ctx
    finally:
        ctx.close()


def new_page(context):
    page = context.new_page()
    page.on("pageerror", lambda exc: context.js_errors.append(f"{page.url}: {exc}"))
    return page


# --- the lesson ----------------------------------------------------------------------------------
def test_lesson_in_a_browser(context, app_server, shots, tmp_path):
    page = new_page(context)
    started = time.monotonic()
    try:
        home(page, app_server, shots)
        regions(page, context, shots)
        chips(page, shots)
        run_name = train(page, shots)
        reconstruct(page, shots)
        evaluate(page, shots)
    except BaseException:
        failure = tmp_path / "failure.png"
        page.screenshot(path=str(failure))
        print(f"\nfailed on {page.url}; screenshot {failure}\nserver log:\n{app_server.log_tail(40)}")
        raise
    assert not context.js_errors, "JavaScript errors:\n" + "\n".join(context.js_errors)
    print(f"lesson walked in {time.monotonic() - started:.1f} s; run {run_name}")


def home(page, server, shots):
    page.goto(server.url)
    page.wait_for_selector('h1:has-text("BharatEO Lab")')
    b.settle(page, "Home")
    # the token calculator: 384 chips x 20 epochs x 64 tokens = 491,520 token presentations
    b.wait_dataframe_text(page, "491,520")
    assert "total token presentations" in b.dataframe_cells(page)
    b.screenshot(page, shots, "home", height=1300)


def regions(page, context, shots):
    b.go_to(page, "Regions")
    page.get_by_role("button", name="Add the notebook's three regions").click()
    main_images = f'{b.MAIN} [data-testid="stImage"] img'
    b.wait_images_loaded(page, main_images, 3)
    page.wait_for_selector(f"{b.MAIN} h4:has-text('mathura_belt')")
    b.settle(page, "Regions after adding the presets")
    for name in ("delhi_ncr", "shekhawati", "mathura_belt"):
        assert page.locator(f"{b.MAIN} h4", has_text=name).count() == 1, name
    b.wait_count(page, f"{b.MAIN} .js-plotly-plot", 3)  # a class chart per region
    page.wait_for_selector(f'{b.MAIN} [data-testid="stAlert"]:has-text("synthetic test fixture")')
    assert page.get_by_role("button", name="Add the notebook's three regions").is_disabled()

    # the map: Leaflet from static/, fitted to the three ROI rectangles, the tile names in view,
    # and each cached region's land cover drawn offline as a picture (no data clear)
    frame = b.map_locator(page)
    frame.locator(".leaflet-container").wait_for()
    frame.locator(".bharateo-roi-label", has_text="mathura_belt").wait_for()
    assert frame.locator("path.leaflet-interactive").count() >= 3
    for tile in ("N27E075", "N27E078"):  # drawn by the map's script once its view settles
        frame.locator(".bharateo-tile-label", has_text=tile).first.wait_for(timeout=30_000)
        assert frame.locator(".bharateo-tile-label", has_text=tile).count() == 1
    assert sorted(frame.locator(".bharateo-roi-label").all_inner_texts()) == [
        "delhi_ncr", "mathura_belt", "shekhawati"]
    # the three cached regions, plus the bundled real sample tile's overview (off-screen here)
    bundled = [t for t in SAMPLE_TILES if bundled_tile_path(t) is not None]
    assert frame.locator("img.leaflet-image-layer.bharateo-overview").count() == 3 + len(bundled)
    zoom, lat, lon = b.map_view(page)
    assert zoom >= 8 and 27.3 < lat < 28.6 and 75.8 < lon < 77.5  # fitted, not north India at 6

    # nothing but basemap tiles may come from the internet: no CDN for leaflet/jquery/bootstrap
    foreign = b.foreign_requests(context.requests)
    cdn = [u for u in foreign if b.CDN_LIBRARIES.search(u)]
    assert not cdn, f"the map asked a CDN for libraries: {cdn}"
    others = [u for u in foreign if not b.BASEMAP_HOSTS.match(b.host_of(u))]
    assert not others, f"requests to hosts other than the app and the basemap: {others}"
    assert any("/app/static/vendor/leaflet-1.9.3/leaflet.js" in u for u in context.requests)
    b.screenshot(page, shots, "regions", height=1700)  # the map and, as it fits, the regions

    # the native counts table shows every column inside its card (it was cut off on the right)
    page.locator(f"{b.MAIN} summary", has_text="Provenance and native class counts").first.click()
    table = page.locator(f"{b.MAIN} table.bharateo-native-counts").first
    table.wait_for()
    overflow = table.evaluate("t => t.getBoundingClientRect().right - "
                              "t.closest('[data-testid=\"stExpander\"]').getBoundingClientRect().right")
    assert overflow <= 0, f"the native counts table sticks out of its card by {overflow:.0f} px"
    assert table.locator("th").all_inner_texts()[-1].strip() == "collapsed to"

    # zoom in, then click: the proposal is drawn and the map stays where the user put it
    for step in (1, 2):
        frame.locator(".leaflet-control-zoom-in").click()
        b.wait_map_zoom(page, zoom + step)
    b.settle(page, "Regions after zooming in")
    zoomed = zoom + 2
    box = frame.locator(".leaflet-container").bounding_box()
    frame.locator(".leaflet-container").click(
        position={"x": box["width"] * 0.5, "y": box["height"] * 0.7})
    b.map_locator(page).locator(".bharateo-roi-label", has_text="(proposed)").wait_for()
    b.settle(page, "Regions after a map click")
    assert b.map_view(page)[0] == zoomed, "a click reset the map's zoom"
    page.get_by_role("button", name="Discard").click()
    b.settle(page, "Regions after discarding the proposal")


def chips(page, shots):
    b.go_to(page, "Chips")
    page.get_by_role("spinbutton", name="Training chips").fill(str(N_CHIPS))
    page.get_by_role("spinbutton", name="Held-out chips").fill(str(N_HELD))
    page.get_by_role("spinbutton", name="Held-out chips").press("Tab")
    page.locator('[data-testid="stSelectbox"]', has_text="Held-out region").click()
    page.get_by_role("option", name="all of mathura_belt").click()
    page.get_by_role("button", name="Build chips").click()
    page.wait_for_selector(f'{b.MAIN} [data-testid="stAlert"]:has-text("Built {N_CHIPS} training")',
                           timeout=b.LOAD_MS)
    page.wait_for_selector(f"{b.MAIN} h5:has-text('Token')")  # the detail view, at the bottom
    b.settle(page, "Chips after Build chips")
    alert = page.locator(f'{b.MAIN} [data-testid="stAlert"]', has_text="Built").inner_text()
    assert f"+ {N_HELD} held-out" in alert, alert
    # the grid: 24 chips a page, then the detail view's chip, mean-RGB and token pictures
    b.wait_images_loaded(page, f'{b.MAIN} [data-testid="stImage"] img', 24 + 3)
    assert "24 of the 32 training chips" in page.locator(b.MAIN).inner_text()
    b.wait_count(page, f"{b.MAIN} .js-plotly-plot", 3)  # per-ROI, balance, token variance
    page.get_by_text("Inside one chip").wait_for()
    assert page.get_by_text("Patch label:").count() == 1
    assert "Chips: 32 train + 16 held-out" in page.locator('[data-testid="stSidebar"]').inner_text()
    b.screenshot(page, shots, "chips", height=1500)
    b.scroll_to(page, f"{b.MAIN} h3:has-text('Inside one chip')")
    b.screenshot(page, shots, "chips_detail", height=1300)


def train(page, shots) -> str:
    b.go_to(page, "Train")
    page.get_by_role("button", name="quick demo").click()
    page.wait_for_function(  # the preset set the knobs
        "() => document.querySelector('input[aria-label=\"chips\"]')?.value == '192'")
    b.settle(page, "Train after the quick demo preset")
    print("\nTrain after 'quick demo': " + page.locator(
        f'{b.MAIN} [data-testid="stCaptionContainer"]', has_text="Settings:").inner_text())
    page.get_by_role("button", name="Train", exact=True).click()

    # the live charts appear and grow while it runs
    progress = page.locator(f'{b.MAIN} [data-testid="stProgress"]')
    first_points = b.wait_plot_points(page, 1, timeout=TRAIN_TIMEOUT)
    b.assert_clean(page, "Train, first chart point")
    saved = page.locator(f'{b.MAIN} [data-testid="stAlert"]', has_text="Saved as run")
    assert b.wait_plot_points(page, first_points + 1, timeout=TRAIN_TIMEOUT) > first_points

    # leave for Home while it runs, come back: the charts and the progress are there and current
    before_leaving = max(b.plot_points(page))
    step_before = progress_step(progress)
    running = saved.count() == 0
    page.locator('[data-testid="stSidebarNav"] a', has_text="Home").click()
    page.wait_for_selector('h1:has-text("BharatEO Lab")')
    b.assert_clean(page, "Home during training")
    page.wait_for_selector('[data-testid="stSidebar"] :text("Training:")')  # on every page
    page.locator('[data-testid="stSidebarNav"] a', has_text="Train").click()
    page.wait_for_selector('h1:has-text("Train")')
    b.wait_plot_points(page, before_leaving, timeout=30)
    b.assert_clean(page, "Train after coming back")
    step_after = progress_step(progress)
    if step_before and step_after:  # still running: at least as far as before leaving
        assert step_after >= step_before, (step_before, step_after)
    print(f"\nTrain: left for Home at {before_leaving} chart points, epoch/step {step_before} "
          f"({'running' if running else 'already finished'}); back at {step_after or 'the end'}")

    # the end: saved, listed, and the session's model
    saved.wait_for(timeout=TRAIN_TIMEOUT * 1000)
    b.settle(page, "Train finished")
    run_name = re.search(r"Saved as run '([^']+)'", saved.inner_text()).group(1)
    b.wait_dataframe_text(page, run_name)
    page.wait_for_selector(f'[data-testid="stSidebar"] :text("{run_name}")')
    b.scroll_to(page, "h1")
    b.screenshot(page, shots, "train", height=1900)  # the knobs, then the run's charts
    return run_name


def progress_step(progress) -> tuple[int, int] | None:
    """(epoch, step) from the run's progress bar text, None without one (e.g. finished)."""
    for text in progress.all_inner_texts():
        if m := re.search(r"epoch (\d+)/\d+ · step (\d+)/", text):
            return int(m.group(1)), int(m.group(2))
    return None


def reconstruct(page, shots):
    b.go_to(page, "Reconstruct")
    metrics = page.locator(f'{b.MAIN} [data-testid="stMetric"]')
    metrics.first.wait_for(timeout=b.LOAD_MS)
    page.locator(f"{b.MAIN} .js-plotly-plot").first.wait_for(timeout=b.LOAD_MS)  # the ratio curve
    b.settle(page, "Reconstruct")
    panels = f'{b.MAIN} [data-testid="stImage"] img'
    b.wait_images_loaded(page, panels, 7)
    before = b.wait_text_stable(metrics)
    assert "Masked MAE" in before and "Patch accuracy" in before, before
    caption = page.locator(f'{b.MAIN} [data-testid="stCaptionContainer"]', has_text="Mask #")
    assert "at 75%: 48 of 64 patches hidden" in caption.inner_text()
    sources_before = page.locator(panels).evaluate_all("imgs => imgs.map(i => i.src)")
    text = page.locator(b.MAIN).inner_text()  # visible patches pasted; the raw output a toggle away
    assert "reconstruction + visible (" in text and "model output, all patches (" not in text
    panels_top = f'{b.MAIN} [data-testid="stSlider"]'
    b.scroll_to(page, panels_top)
    b.screenshot(page, shots, "reconstruct_before", height=1300)

    slider = page.get_by_role("slider", name="Mask ratio: share of the 64 patches hidden")
    slider.focus()
    for _ in range(3):  # 0.75 -> 0.90
        slider.press("ArrowRight")
    page.wait_for_function(
        "(s) => [...document.querySelectorAll(s)].some("
        "e => /at 90%: \\d+ of 64 patches hidden/.test(e.innerText))",
        arg=f'{b.MAIN} [data-testid="stCaptionContainer"]')
    b.settle(page, "Reconstruct after moving the slider")
    b.wait_images_loaded(page, panels, 7)
    after = b.wait_text_stable(metrics)
    assert slider.get_attribute("value") == "0.9"
    # the lesson link follows the slider, though it reran only its fragment (issue 22.6)
    page.wait_for_function("() => /recon=[a-z]+,\\d+,0\\.90/.test(decodeURIComponent(location.search))",
                           timeout=20_000)
    sources_after = page.locator(panels).evaluate_all("imgs => imgs.map(i => i.src)")
    changed = sum(x != y for x, y in zip(sources_before, sources_after))
    assert changed >= 3, f"only {changed} panels changed with the mask ratio"
    assert after != before, f"the metrics did not change with the mask ratio: {before!r}"
    raw = page.locator(f'{b.MAIN} [data-testid="stImage"]', has_text="model output, all patches (")
    for _ in range(3):  # a click during a rerun can be lost: check, and click again
        page.get_by_test_id("stCheckbox").get_by_text("Raw model output").click()
        b.settle(page, "Reconstruct after showing the raw model output")
        try:
            raw.wait_for(timeout=20_000)
            break
        except Exception:  # the toggle is back off (lost click): click it again
            if page.get_by_role("switch", name="Raw model output").is_checked():
                raise
    raw.wait_for(timeout=60_000)
    b.wait_images_loaded(page, panels, 8)
    b.scroll_to(page, panels_top)
    b.screenshot(page, shots, "reconstruct_after", height=1300)


def evaluate(page, shots):
    b.go_to(page, "Evaluate")
    page.locator(f"{b.MAIN} .js-plotly-plot").first.wait_for(timeout=b.LOAD_MS)
    b.settle(page, "Evaluate")
    b.wait_plot_type(page, "heatmap")  # the confusion matrix
    page.locator(f'{b.MAIN} [data-testid="stDataFrame"]').first.wait_for()
    b.wait_dataframe_text(page, "cropland")
    headers = page.locator(f'{b.MAIN} [data-testid="stDataFrame"] th').all_inner_texts()
    assert {"class", "precision", "recall", "F1"} <= set(headers), headers
    page.locator(f'{b.MAIN} [data-testid="stMetric"]', has_text="Patch accuracy").first.wait_for()
    b.screenshot(page, shots, "evaluate", height=1700)
    # click a mistake, see it: the biggest off-diagonal cell of the training chips' matrix
    chart = ".st-key-eval_confusion_train"
    b.scroll_to(page, chart)
    row, col, x, y = b.heatmap_cell(page, "eval_confusion_train")
    page.mouse.click(x, y)
    target, predicted = CLASS_NAMES[row], CLASS_NAMES[col]
    title = page.locator(f"{b.MAIN} p", has_text=f"of {target} were called {predicted}")
    title.first.wait_for(timeout=60_000)
    b.settle(page, "Evaluate, a clicked cell")
    viewer = f'{b.MAIN} [data-testid="stImage"] img'
    b.wait_images_loaded(page, viewer, 2)
    b.scroll_to(page, ".st-key-eval_mistake_split")
    b.screenshot(page, shots, "evaluate_patches", height=1300)


def knob_value(page, label: str) -> str:
    return page.locator(f'{b.MAIN} input[aria-label="{label}"]').first.input_value()


def knob_values_shown(page, values: dict[str, str], timeout: float = 60.0) -> dict[str, str]:
    """The knobs' values once each shows its value in `values`, or after `timeout` s (the caller
    asserts and names what fell back): a page drawn again fills its inputs after its script
    run ends, which a loaded 2-core machine can make a read right after settling miss."""
    try:
        page.wait_for_function(
            """([main, values]) => Object.entries(values).every(([label, value]) =>
                document.querySelector(`${main} input[aria-label="${label}"]`)?.value === value)""",
            arg=[b.MAIN, values], timeout=timeout * 1000)
    except Exception as exc:  # playwright's TimeoutError: the assertion after says which differ
        if "Timeout" not in type(exc).__name__:
            raise
    return {label: knob_value(page, label) for label in values}


def train_with_notebook_regions(context, app_server):
    """A new page: Regions opened by its URL, the notebook's three regions added, then Train."""
    page = new_page(context)
    page.goto(f"{app_server.url}/regions")
    page.wait_for_selector('h1:has-text("Regions")', timeout=b.LOAD_MS)
    b.settle(page, "Regions")
    page.get_by_role("button", name="Add the notebook's three regions").click()
    page.wait_for_selector(f"{b.MAIN} h4:has-text('mathura_belt')", timeout=b.LOAD_MS)
    b.go_to(page, "Train")
    return page


def test_train_settings_survive_a_visit_to_another_page(context, app_server):
    """Pick 'quick demo' on Train, look at Home, come back: the knobs still say 'quick demo'."""
    page = train_with_notebook_regions(context, app_server)
    page.get_by_role("button", name="quick demo").click()
    page.wait_for_function("() => document.querySelector('input[aria-label=\"chips\"]')?.value == '192'")
    b.settle(page, "Train after the quick demo preset")
    settings = page.locator(f'{b.MAIN} [data-testid="stCaptionContainer"]', has_text="Settings:")
    assert settings.inner_text().startswith("Settings: quick demo"), settings.inner_text()
    chosen = {label: knob_value(page, label) for label in ("chips", "epochs", "learning rate")}

    b.go_to(page, "Home", heading="BharatEO Lab")
    b.go_to(page, "Train")
    back = knob_values_shown(page, chosen)
    assert back == chosen, f"the knobs fell back from {chosen} to {back} after a visit to Home"
    assert settings.inner_text().startswith("Settings: quick demo"), settings.inner_text()
    b.assert_clean(page, "Train after a visit to Home")


# --- a page URL opened cold ----------------------------------------------------------------------
def test_page_url_as_the_first_request_of_a_fresh_server(chromium, fixture_tiles_dir, tmp_path):
    """Before app.py has ever run, Streamlit serves /train from pages/ alone; the lab must still
    open the Train page (with its navigation), not drop the visitor on Home. An unknown key in
    that address gets its notice on the Train page (it was drawn on the run that switched page,
    and lost), then leaves the address."""
    env = server_env(fixture_tiles_dir, tmp_path)
    with b.StreamlitServer(env, tmp_path / "streamlit.log") as server:
        ctx = chromium.new_context(viewport=b.VIEWPORT)
        b.block_foreign_hosts(ctx)
        try:
            page = ctx.new_page()
            page.goto(f"{server.url}/train?bogus_key=1")
            page.wait_for_selector('h1:has-text("Train")', timeout=b.LOAD_MS)
            b.settle(page, "/train as the server's first request")
            assert page.url.split("?")[0].rstrip("/").endswith("/train")
            assert page.locator('[data-testid="stSidebarNav"]').count() == 1
            page.locator(f'{b.MAIN} [data-testid="stAlert"]', has_text="'bogus_key'").wait_for()
            page.wait_for_function("() => !location.search.includes('bogus_key')",
                                   timeout=b.LOAD_MS)
        finally:
            ctx.close()
        assert b.TRACEBACK not in server.log_text(), server.log_tail(40)


@pytest.mark.parametrize("path", list(PAGES))
def test_page_url_opened_directly(context, app_server, path):
    """The first request of a fresh browser is a page's own URL: the page, no exception."""
    page = new_page(context)
    page.goto(f"{app_server.url}/{path}")
    page.wait_for_selector(f'h1:has-text("{PAGES[path]}")', timeout=b.LOAD_MS)
    b.settle(page, f"/{path} opened directly")
    assert page.url.rstrip("/").endswith(f"/{path}")
    assert page.locator('[data-testid="stSidebarNav"]').count() == 1  # the lab's navigation
    page.get_by_text("Lab state").wait_for()
    assert not context.js_errors, "JavaScript errors:\n" + "\n".join(context.js_errors)


def test_bad_typed_settings_block_train_and_a_refresh_keeps_the_lesson(context, app_server):
    """Typed out of range, a field used to turn red while the last valid value trained silently:
    now the value reaches the page, which names the field and disables Train. Then a browser
    refresh: the regions come back from the page address."""
    page = train_with_notebook_regions(context, app_server)
    train = page.get_by_role("button", name="Train", exact=True)
    for label, bad in [("chips", "99999"), ("epochs", "-3"), ("learning rate", "0")]:
        field = page.locator(f'{b.MAIN} input[aria-label="{label}"]').first
        good = field.input_value()
        field.fill(bad)
        field.press("Enter")
        page.locator(f'{b.MAIN} [data-testid="stAlert"]', has_text=f"{label} must be").wait_for()
        b.settle(page, f"Train with {label} = {bad}")
        assert train.is_disabled(), f"Train still enabled with {label} = {bad}"
        field.fill(good)
        field.press("Enter")
        page.wait_for_function("() => ![...document.querySelectorAll('[data-testid=\"stAlert\"]')]"
                               ".some(a => a.innerText.includes('blocked'))", timeout=b.LOAD_MS)
        b.settle(page, f"Train with {label} = {good} again")
        assert not train.is_disabled()

    assert "roi=" in page.url, page.url
    page.reload()
    page.wait_for_selector('h1:has-text("Train")', timeout=b.LOAD_MS)
    b.settle(page, "Train after a refresh")
    page.wait_for_selector('[data-testid="stSidebar"] :text("mathura_belt")')
    page.locator(f'{b.MAIN} input[aria-label="chips"]').wait_for()  # regions back: knobs shown
    assert not context.js_errors, "JavaScript errors:\n" + "\n".join(context.js_errors)

# --- a Sentinel-2 lesson (issue 15): the real shared L2A crop, fixture labels -----------------
S2_TRAIN_TIMEOUT = 240.0
S2_CHIPS = 32
S2_LABEL_CLASSES = {40: .35, 60: .3, 20: .2, 50: .1, 30: .05}  # fixture label classes


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
    from bharateo.data.sentinel2 import S2Source, folder_presets

    spec = folder_presets(S2Source("folder", str(root / "s2")))[0]
    sahara_labels(root / "wc", spec, weights=S2_LABEL_CLASSES)
    for sub in ("data", "checkpoints"):
        (root / sub).mkdir(exist_ok=True)
    with b.StreamlitServer(env, root / "streamlit.log") as server:
        yield server, spec
    assert b.TRACEBACK not in server.log_text(), server.log_tail(80)


@pytest.mark.skipif(not SCENE_DIR.is_dir(), reason="needs ../shared/data/sentinel2")
def test_sentinel2_lesson_in_a_browser(chromium, s2_server, shots, tmp_path):
    """Issue 15: Regions (source, dates, the local folder's scene) -> Chips (true and false
    colour) -> Train (quick demo) -> Reconstruct (true and false colour rows), on the real shared
    L2A crop with fixture labels, which the app labels as such. Screenshots: sentinel2_*.png."""
    server, spec = s2_server
    context = chromium.new_context(viewport=b.VIEWPORT)
    context.set_default_timeout(30_000)
    b.block_foreign_hosts(context)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    started = time.monotonic()
    try:
        s2_lesson(page, server, spec, shots)
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"))
        print(f"\nfailed on {page.url}; screenshot {tmp_path / 'failure.png'}\n"
              f"server log:\n{server.log_tail(40)}")
        raise
    finally:
        context.close()
    assert not errors, errors
    print(f"Sentinel-2 lesson walked in {time.monotonic() - started:.1f} s")


def s2_lesson(page, server, spec, shots):
    page.goto(server.url)
    page.wait_for_selector('h1:has-text("BharatEO Lab")')
    b.go_to(page, "Regions")
    page.locator(f'{b.MAIN} [data-testid="stRadio"]', has_text="Pixels").get_by_text(
        "Sentinel-2 4 band").click()
    dates = page.get_by_role("textbox", name="Scene dates (first/last day)")
    dates.wait_for()
    assert dates.input_value() == "2020-01-01/2020-12-31"  # starts covering the folder's scene
    dates.fill("2020-01-01/2020-03-01")
    dates.press("Enter")
    b.settle(page, "Regions after choosing Sentinel-2")
    text = page.locator(b.MAIN).inner_text()  # only what the folder can serve, and where it is
    assert "Add the offline sample" not in text and "Add the notebook's" not in text
    assert "Sentinel-2 L2A pixels (4 bands" in text and "whose scenes are at S2A_29RKH" in text
    b.map_locator(page).locator(".bharateo-roi-label", has_text="Sentinel-2 scene S2A_29RKH").wait_for()
    _, lat, lon = b.map_view(page)  # the map opens on the folder's scene, not on São Tomé
    assert -11.98 < lon < -10.87 and 24.30 < lat < 25.30, (lat, lon)
    page.get_by_role("button", name=spec.name).click()
    page.wait_for_selector(f"{b.MAIN} h4:has-text('{spec.name}')", timeout=b.LOAD_MS)
    b.wait_images_loaded(page, f'{b.MAIN} [data-testid="stImage"] img', 1)
    b.settle(page, "Regions after reading the scene")
    text = page.locator(b.MAIN).inner_text()
    assert "True colour (B4 B3 B2" in text and "S2A_29RKH_20200219_0_L2A" in text
    assert "synthetic test fixture" in text and "reflectance is real" in text
    b.scroll_to(page, f"{b.MAIN} h4:has-text('{spec.name}')")
    b.screenshot(page, shots, "sentinel2_regions", height=1300)

    b.go_to(page, "Chips")
    page.get_by_role("spinbutton", name="Training chips").fill(str(S2_CHIPS))
    page.get_by_role("spinbutton", name="Training chips").press("Tab")
    page.get_by_role("button", name="Build chips").click()
    page.wait_for_selector(f'{b.MAIN} [data-testid="stAlert"]:has-text("Built {S2_CHIPS} training")',
                           timeout=b.LOAD_MS)
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
    saved.wait_for(timeout=S2_TRAIN_TIMEOUT * 1000)
    b.settle(page, "Train finished")
    run_name = re.search(r"Saved as run '([^']+)'", saved.inner_text()).group(1)

    b.go_to(page, "Reconstruct")
    page.locator(f'{b.MAIN} [data-testid="stMetric"]').first.wait_for(timeout=b.LOAD_MS)
    b.settle(page, "Reconstruct")
    b.wait_images_loaded(page, f'{b.MAIN} [data-testid="stImage"] img', 11)
    text = page.locator(b.MAIN).inner_text()
    assert "target true colour (B4 B3 B2)" in text and "target false colour (B8 B4 B3)" in text
    b.scroll_to(page, f'{b.MAIN} [data-testid="stSlider"]')
    b.screenshot(page, shots, "sentinel2_reconstruct", height=1500)
    print(f"\nSentinel-2 run {run_name} reconstructed in true and false colour")

# --- issue 14: pause / step / resume, inside the model, the share link and teacher mode ---------
LESSON_CHIPS = "32,128,16,3,7,16,mathura_belt,"  # CHIP_PARAMS: 32 chips, mathura_belt held out


def lesson_address(server, page_path: str = "", **knobs) -> str:
    """A lesson link: the notebook's three regions at 1024 px, 32 chips, and these Train knobs."""
    from urllib.parse import urlencode

    from bharateo.data.roi import NOTEBOOK_ROIS

    params = [("roi", f"{r.lon!r},{r.lat!r},1024,{r.name}") for r in NOTEBOOK_ROIS]
    params += [("chips", LESSON_CHIPS), *((k, str(v)) for k, v in knobs.items())]
    return f"{server.url}/{page_path}?{urlencode(params)}"


def run_chart_points(page) -> int:
    """Points of the first trace of the page's first chart: the run's live loss chart (charts of
    saved runs compared further down are left out)."""
    return page.evaluate(
        """(scope) => { const gd = document.querySelector(scope + ' .js-plotly-plot');
            return (gd && gd.data && gd.data.length && gd.data[0].x) ? gd.data[0].x.length : 0; }""",
        b.MAIN)


def wait_run_chart_points(page, at_least: int, timeout: float) -> int:
    b.wait_until(lambda: run_chart_points(page) >= at_least,
                 f"the run's chart with {at_least} points", timeout, poll=0.2)
    return run_chart_points(page)


def paused_alert(page):
    return page.locator(f'{b.MAIN} [data-testid="stAlert"]', has_text="Paused after step")


def paused_step(page) -> int:
    paused_alert(page).first.wait_for(timeout=TRAIN_TIMEOUT * 1000)
    return int(re.search(r"Paused after step (\d+)", paused_alert(page).first.inner_text()).group(1))


def sidebar_as_main_shows(page, texts: list[str]) -> tuple[str, str]:
    """(the first of `texts` an alert in the main area shows, the sidebar's text at that same
    moment), read in one evaluation so nothing redraws between the two."""
    found = page.wait_for_function(
        """([main, side, texts]) => {
            const alerts = [...document.querySelectorAll(main + ' [data-testid="stAlert"]')];
            const hit = texts.find(t => alerts.some(a => a.innerText.includes(t)));
            const bar = document.querySelector(side);
            return hit && bar ? [hit, bar.innerText] : null; }""",
        arg=[b.MAIN, b.SIDEBAR, texts], timeout=TRAIN_TIMEOUT * 1000).json_value()
    return found[0], found[1]


def test_pause_step_resume_and_inside_the_model_in_a_browser(context, app_server, shots, tmp_path):
    page = new_page(context)
    b.count_frames(page)  # the server's messages: each redraw of the live parts
    try:
        # 256 chips x 500 epochs at batch 8 = 16,000 steps: far more than the seconds a loaded
        # machine can take between Train and the Pause click (300 x 4 steps once ran out first)
        page.goto(lesson_address(app_server, "train", epochs=500, embed_dim=32, depth=1, heads=2,
                                 batch_size=8, n_chips=256, min_classes=3, seed=7,
                                 holdout_roi="mathura_belt"))
        page.wait_for_selector('h1:has-text("Train")', timeout=b.LOAD_MS)
        b.settle(page, "Train opened from a lesson link")
        page.get_by_role("button", name="Train", exact=True).click()
        wait_run_chart_points(page, 2, TRAIN_TIMEOUT)
        page.get_by_role("button", name="Pause").click()
        shown, side = sidebar_as_main_shows(page, ["Pausing after", "Paused after step"])
        assert re.search(r"(pausing after|paused at) step \d+", side), (shown, side)  # not 'running'
        n = paused_step(page)
        b.settle(page, "Train paused")
        points = wait_run_chart_points(page, n, 30)
        assert points == n, (points, n)  # the chart shows every step up to the pause
        b.wait_redrawn(page, 3 * 3)  # three refreshes of its 3 live fragments: nothing new drawn
        assert run_chart_points(page) == n, "the chart grew while paused"
        b.scroll_to(page, "h1")
        b.screenshot(page, shots, "train_paused", height=1500)

        page.get_by_role("button", name="Step", exact=True).click()
        page.wait_for_function(
            "(n) => [...document.querySelectorAll('[data-testid=\"stAlert\"]')].some("
            "a => a.innerText.includes('Paused after step ' + n + ' '))", arg=n + 1,
            timeout=TRAIN_TIMEOUT * 1000)
        assert wait_run_chart_points(page, n + 1, 30) == n + 1  # exactly one step more
        b.wait_redrawn(page, 2 * 3)  # two refreshes
        assert run_chart_points(page) == n + 1

        page.get_by_role("button", name="Resume").click()
        wait_run_chart_points(page, n + 4, TRAIN_TIMEOUT)  # it trains on
        page.get_by_role("button", name="Stop").click()
        shown, side = sidebar_as_main_shows(page, ["Stopping after", "Saved as run"])
        # the sidebar no longer says 'running' (never behind the page: train.live_progress)
        assert re.search(r"stopping after the current step|stopped", side), (shown, side)
        page.locator(f'{b.MAIN} [data-testid="stAlert"]', has_text="Saved as run").wait_for(
            timeout=TRAIN_TIMEOUT * 1000)
        b.settle(page, "Train stopped")

        b.go_to(page, "Inside the model")
        b.wait_images_loaded(page, f'{b.MAIN} [data-testid="stImage"] img', 2)
        b.wait_plot_type(page, "scattergl", timeout=60)
        b.settle(page, "Inside the model")
        assert page.get_by_text("where token").count() >= 1
        assert "is in the encoder" in page.locator(b.MAIN).inner_text()  # the words say which
        b.screenshot(page, shots, "inside_attention", height=1300)
        b.scroll_to(page, f"{b.MAIN} h3:has-text('Token-embedding map')")
        # click one point of the WebGL map: its chip opens with the patch enlarged beside it
        for attempt in range(3):  # a click during a rerun can be lost: check, and click again
            x, y = b.plot_point_position(page, "scattergl", 100 + attempt)
            page.mouse.move(x, y)
            page.mouse.click(x, y)
            b.settle(page, "Inside the model after clicking a point")
            if page.get_by_text(re.compile(r"token \d+ enlarged")).count():
                break
        page.get_by_text(re.compile(r"token \d+ enlarged")).first.wait_for()
        b.screenshot(page, shots, "inside_embeddings", height=1100)
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"))
        print(f"\nfailed on {page.url}; screenshot {tmp_path / 'failure.png'}\n"
              f"server log:\n{app_server.log_tail(40)}")
        raise
    assert not context.js_errors, "JavaScript errors:\n" + "\n".join(context.js_errors)


def test_share_link_round_trip_and_the_teacher_mode_view(chromium, app_server, shots):
    """A teacher sets a mask ratio and teacher mode in one browser; the link, opened in another
    browser context (a student's), shows only the chosen controls with the lesson's values."""
    contexts = [chromium.new_context(viewport=b.VIEWPORT) for _ in range(2)]
    try:
        for ctx in contexts:
            b.block_foreign_hosts(ctx)
        teacher = contexts[0].new_page()
        teacher.goto(lesson_address(app_server, "train", epochs=7, lr=0.002))
        teacher.wait_for_selector('h1:has-text("Train")', timeout=b.LOAD_MS)
        b.settle(teacher, "Train from a lesson link")
        slider = teacher.get_by_role("slider", name="mask ratio")
        for _ in range(4):  # 0.75 -> 0.85 (a key press during a rerun can be lost: check)
            if slider.get_attribute("value") == "0.85":
                break
            slider.focus()
            slider.press("ArrowRight")
            b.settle(teacher, "Train after a mask-ratio key press")
        assert slider.get_attribute("value") == "0.85"
        teacher.wait_for_function("() => location.search.includes('mask_ratio=0.85')",
                                  timeout=b.LOAD_MS)
        b.settle(teacher, "Train after moving the mask ratio")
        teacher.get_by_text("Teacher mode: choose the controls students see").click()
        for _ in range(3):  # a click during a rerun can be lost (as a key press): check
            teacher.get_by_text("students see only these").click()
            b.settle(teacher, "Train after turning teacher mode on")
            try:
                teacher.wait_for_function("() => location.search.includes('show=')",
                                          timeout=20_000)
                break
            except Exception:  # the toggle is back off (lost click): click it again
                if teacher.get_by_role("switch", name="students see only these").is_checked():
                    raise
        teacher.wait_for_function("() => location.search.includes('show=')", timeout=b.LOAD_MS)
        b.settle(teacher, "Train in teacher mode")
        link = teacher.url
        assert "show=mask_ratio%2Clr" in link and "epochs=7" in link, link

        student = contexts[1].new_page()
        student.goto(link)
        student.wait_for_selector('h1:has-text("Train")', timeout=b.LOAD_MS)
        b.settle(student, "the lesson link opened by a student")
        main = student.locator(b.MAIN)
        assert student.get_by_role("slider", name="mask ratio").get_attribute("value") == "0.85"
        lr = main.locator('input[aria-label="learning rate"]').first
        b.wait_until(lambda: float(lr.input_value()) == 0.002, "the lesson's learning rate")
        for hidden in ("chips", "epochs", "seed", "weight decay"):
            assert main.locator(f'input[aria-label="{hidden}"]').count() == 0, hidden
        assert main.get_by_role("button", name="quick demo").count() == 0
        assert main.get_by_text("Teacher mode: choose the controls").count() == 0
        lock = main.locator('[data-testid="stCaptionContainer"]', has_text="Teacher mode")
        assert "epochs 7" in lock.inner_text()
        b.screenshot(student, shots, "teacher_mode", height=1100)
    finally:
        for ctx in contexts:
            ctx.close()
