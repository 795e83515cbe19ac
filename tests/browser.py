"""Helpers for the real-browser test (tests/app/test_browser.py): a Streamlit server in a subprocess,
Chromium through Playwright, and waits/checks that read a Streamlit page the way a person does.

Only the test uses this module; nothing in the app imports it. Every wait here is for something
on the page or the server (an element, a value, a redraw), with tests/support/waiting.py's
wait_until or Playwright's own waits; the timeouts only guard against a hang.
"""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.waiting import wait_until  # the suite's one wait_until (b.wait_until)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1400, "height": 900}
SCREENSHOT_MAX_BYTES = 300_000

# Hosts a page may ask for besides the app itself: only basemap imagery (never Leaflet, jQuery,
# Bootstrap or Font Awesome from a CDN: the map must draw offline).
BASEMAP_HOSTS = re.compile(r"^([abc]\.)?tile\.openstreetmap\.org$")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
CDN_LIBRARIES = re.compile(r"leaflet|jquery|bootstrap|font-?awesome|awesome-markers", re.I)

EXCEPTION = '[data-testid="stException"]'
STATUS_WIDGET = '[data-testid="stStatusWidget"]'
STALE = '[data-testid="stElementContainer"][data-stale="true"]'
LOAD_MS = 120_000  # a page load or a new session's first run; slow on a loaded 2-core machine
MAIN = '[data-testid="stMain"]'
SIDEBAR = '[data-testid="stSidebar"]'
TRACEBACK = "Traceback (most recent call last)"


# --- the server ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    """`streamlit run app.py` from the repo root on a free localhost port, in its own process group.

    with StreamlitServer(env) as server:
        server.url  # http://127.0.0.1:<port>
    The server (and anything it started) is stopped on exit, also when the body raised.
    """

    def __init__(self, env: dict[str, str], log_path: Path, startup_timeout: float = 120.0):
        self.env = env
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> "StreamlitServer":
        cmd = [sys.executable, "-m", "streamlit", "run", "app.py",
               "--server.headless", "true", "--server.address", "127.0.0.1",
               "--server.port", str(self.port), "--browser.gatherUsageStats", "false",
               # the test must not react to files others edit meanwhile: a watched change puts a
               # lasting "Source file changed" prompt in the status widget the waits read
               "--server.fileWatcherType", "none"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        try:
            wait_until(healthy, "the streamlit server answering /_stcore/health",
                       self.startup_timeout, poll=0.2)
        except AssertionError as exc:
            raise RuntimeError(f"{exc}:\n{self.log_tail()}") from None

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it if it lingers."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def __enter__(self) -> "StreamlitServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def require_chromium() -> str:
    """Path of Debian's Chromium (and Playwright to drive it); missing, the test fails under CI
    (env CI set) and is skipped elsewhere, with the reason."""
    reason = None
    if not CHROMIUM.exists():
        reason = (f"{CHROMIUM} is missing: the browser test drives Debian's Chromium "
                  "(install it with `apt-get install chromium`, as tools/test.sh does)")
    else:
        if importlib.util.find_spec("playwright") is None:
            reason = "the playwright package is missing (pip install -r requirements.txt)"
    if reason is None:
        return str(CHROMIUM)
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


# --- reading a Streamlit page ----------------------------------------------------------------------
def wait_idle(page, timeout: float = 120.0, quiet: float = 0.3) -> None:
    """Until no script run is under way: no running indicator and no stale (greyed) elements,
    still so `quiet` s later. Why the second look: right after a load or a click the next run
    may not have started yet (a loaded machine: a rerun for the address, a widget's value), and
    a page read in that gap shows values from before it."""
    deadline = time.monotonic() + timeout
    while True:
        left = max(deadline - time.monotonic(), 1.0) * 1000
        page.wait_for_selector(STATUS_WIDGET, state="detached", timeout=left)
        page.wait_for_selector(STALE, state="detached", timeout=left)
        page.wait_for_timeout(quiet * 1000)
        if not page.locator(STATUS_WIDGET).count() and not page.locator(STALE).count():
            return
        assert time.monotonic() < deadline, f"the app was still running after {timeout:g} s"


def assert_clean(page, where: str) -> None:
    """No Streamlit exception box and no traceback text anywhere on the page."""
    boxes = page.locator(EXCEPTION)
    if boxes.count():
        pytest.fail(f"{where}: Streamlit exception on the page:\n" + "\n---\n".join(
            t[:2000] for t in boxes.all_inner_texts()))
    text = page.locator("body").inner_text()
    if TRACEBACK in text:
        i = text.index(TRACEBACK)
        pytest.fail(f"{where}: a traceback is shown on the page:\n{text[i:i + 2000]}")


def settle(page, where: str, timeout: float = 120.0) -> None:
    wait_idle(page, timeout)
    assert_clean(page, where)


def go_to(page, title: str, heading: str | None = None, timeout: float = 120.0) -> None:
    """Click a page in the sidebar navigation and wait for its title and an idle app."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).click()
    page.wait_for_selector(f'h1:has-text("{heading or title}")', timeout=timeout * 1000)
    settle(page, title, timeout)


def wait_count(page, selector: str, at_least: int, timeout: float = 30.0) -> None:
    """Until `at_least` elements match (charts and images render after the script run ends)."""
    page.locator(selector).nth(at_least - 1).wait_for(state="attached", timeout=timeout * 1000)


def wait_images_loaded(page, selector: str, at_least: int, timeout: float = 120.0) -> None:
    """Until `at_least` images matching `selector` exist and have finished loading with pixels.

    An image whose fetch lost a race with a rerun (Streamlit drops the previous run's media files)
    stays broken even though the new run serves the same URL: it is fetched again once, and the
    broken sources are printed (seen once in a CI run, on a cold server's first lesson)."""
    loaded = """([sel, n]) => {
            const imgs = Array.from(document.querySelectorAll(sel));
            return imgs.length >= n && imgs.every(i => i.complete && i.naturalWidth > 0);
        }"""
    try:
        page.wait_for_function(loaded, arg=[selector, at_least], timeout=timeout * 500)
        return
    except Exception:
        broken = page.evaluate("""(sel) => Array.from(document.querySelectorAll(sel))
            .filter(i => i.complete && i.naturalWidth === 0).map(i => {
                const src = i.src; i.src = src + (src.includes("?") ? "&" : "?") + "refetch=1";
                return src; })""", selector)
        print(f"\nimages broken after {timeout / 2:g} s, fetched again: {broken}")
    page.wait_for_function(loaded, arg=[selector, at_least], timeout=timeout * 500)


FRAMES = "__bharateoFrames"  # window property: messages the page's websocket has received
COUNT_FRAMES = f"""(() => {{
    const Native = window.WebSocket;
    window.{FRAMES} = 0;
    window.WebSocket = class extends Native {{
        constructor(...args) {{
            super(...args);
            this.addEventListener("message", () => {{ window.{FRAMES} += 1; }});
        }}
    }};
}})()"""


def count_frames(page) -> None:
    """Count, in the page, the messages the app's server sends it (each script or fragment run
    sends its elements and a 'finished'), for wait_redrawn: call before page.goto."""
    page.add_init_script(COUNT_FRAMES)


def wait_redrawn(page, messages: int, timeout: float = 120.0) -> None:
    """Until the server has sent the page `messages` more messages (count_frames): its live
    parts (fragments with run_every) have been redrawn that often."""
    seen = page.evaluate(f"() => window.{FRAMES}")
    page.wait_for_function(f"(n) => window.{FRAMES} >= n", arg=seen + messages,
                           timeout=timeout * 1000)


def wait_text_stable(locator, quiet: float = 0.8, timeout: float = 30.0) -> str:
    """The locator's text once it has not changed for `quiet` seconds (read after the app is
    idle: what is left to settle is drawing, not a script run)."""
    seen = {"text": None, "since": time.monotonic()}

    def settled() -> bool:
        text = " | ".join(locator.all_inner_texts())
        if text != seen["text"]:
            seen.update(text=text, since=time.monotonic())
        return time.monotonic() - seen["since"] >= quiet

    wait_until(settled, "the text settling", timeout, poll=0.1)
    return seen["text"]


def plot_points(page, scope: str = MAIN) -> list[int]:
    """For every plotly chart under `scope`: the number of x values of its first trace."""
    return page.evaluate(
        """(scope) => Array.from(document.querySelectorAll(scope + ' .js-plotly-plot'))
            .map(gd => (gd.data && gd.data.length && gd.data[0].x) ? gd.data[0].x.length : 0)""",
        scope)


def wait_plot_points(page, at_least: int, scope: str = MAIN, timeout: float = 120.0) -> int:
    """Until some plotly chart under `scope` has `at_least` x values in its first trace; the most
    any chart has then."""
    page.wait_for_function(
        """([scope, n]) => [...document.querySelectorAll(scope + ' .js-plotly-plot')].some(
            gd => gd.data && gd.data.length && gd.data[0].x && gd.data[0].x.length >= n)""",
        arg=[scope, at_least], timeout=timeout * 1000)
    return max(plot_points(page, scope))


def wait_plot_type(page, trace_type: str, scope: str = MAIN, timeout: float = 30.0) -> None:
    """Until a plotly chart under `scope` draws a trace of `trace_type` (e.g. 'heatmap')."""
    page.wait_for_function(
        """([scope, type]) => [...document.querySelectorAll(scope + ' .js-plotly-plot')].some(
            gd => (gd.data || []).some(t => t.type === type))""",
        arg=[scope, trace_type], timeout=timeout * 1000)


def plot_point_position(page, trace_type: str, index: int, scope: str = MAIN) -> tuple[float, float]:
    """Page coordinates (px) of point `index` of the first `trace_type` trace under `scope`, from
    plotly's own axes (a WebGL trace has no DOM element per point to click)."""
    x, y = page.evaluate(
        """([scope, type, i]) => {
            const gd = [...document.querySelectorAll(scope + ' .js-plotly-plot')].find(
                g => (g._fullData || []).some(t => t.type === type));
            const t = gd._fullData.find(t => t.type === type);
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const box = gd.getBoundingClientRect();
            return [box.left + xa._offset + xa.l2p(t.x[i]), box.top + ya._offset + ya.l2p(t.y[i])];
        }""", [scope, trace_type, index])
    return float(x), float(y)


def heatmap_cell(page, key: str) -> tuple[int, int, float, float]:
    """The biggest off-diagonal cell of the heatmap in the element with class st-key-`key`:
    (row, column, page x, page y) of its centre, from plotly's own axes (category axes place
    category i at linear position i)."""
    row, col, x, y = page.evaluate(
        """(key) => {
            const gd = document.querySelector('.st-key-' + key + ' .js-plotly-plot');
            const z = gd._fullData[0].z;
            let best = [-1, 0, 0];
            z.forEach((r, i) => r.forEach((v, j) => { if (i !== j && v > best[0]) best = [v, i, j]; }));
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const box = gd.getBoundingClientRect();
            return [best[1], best[2], box.left + xa._offset + xa.l2p(best[2]),
                    box.top + ya._offset + ya.l2p(best[1])];
        }""", key)
    return int(row), int(col), float(x), float(y)


def dataframe_cells(page, scope: str = MAIN) -> list[str]:
    """The text of every cell of every st.dataframe under `scope` (glide's accessible table)."""
    return page.locator(f'{scope} [data-testid="stDataFrame"] td, '
                        f'{scope} [data-testid="stDataFrame"] th').all_inner_texts()


def wait_dataframe_text(page, text: str, scope: str = MAIN, timeout: float = 30.0) -> None:
    page.wait_for_selector(f'{scope} [data-testid="stDataFrame"] td:has-text("{text}")',
                           state="attached", timeout=timeout * 1000)


# --- requests and screenshots ----------------------------------------------------------------------
def host_of(url: str) -> str:
    m = re.match(r"^[a-z]+://([^/:]+)", url)
    return m.group(1) if m else ""


def foreign_requests(urls: list[str]) -> list[str]:
    """Requests to hosts other than the app (data:, blob: and about: URLs are not requests)."""
    return [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))
            and host_of(u) not in LOCAL_HOSTS]


def block_foreign_hosts(context) -> None:
    """Abort every request that leaves the machine (the test runs offline; the request event is
    still seen, so what the page *tried* to load can be checked)."""
    context.route(re.compile(r"^(https?|wss?)://(?!(127\.0\.0\.1|localhost)[:/])"),
                  lambda route: route.abort())


def screenshot(page, folder: Path, name: str, height: int | None = None) -> Path:
    """Save `name`.png of the page, `height` px tall (default: the viewport), under ~300 KB.

    A taller viewport shows more of a long page. A PNG over the limit is reduced to 256 colours
    (the UI barely changes); still too big, it is taken again a few hundred pixels shorter.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    top = max(height or 0, VIEWPORT["height"])
    for h in [*range(top, VIEWPORT["height"], -200), VIEWPORT["height"]]:
        if h != VIEWPORT["height"]:
            page.set_viewport_size({"width": VIEWPORT["width"], "height": h})
            page.wait_for_timeout(300)  # layout and plotly's resize after the viewport change
        try:
            wait_idle(page)
            page.screenshot(path=str(path))
        finally:
            if h != VIEWPORT["height"]:
                page.set_viewport_size(VIEWPORT)
        if path.stat().st_size > SCREENSHOT_MAX_BYTES:
            _to_palette(path)
        if path.stat().st_size <= SCREENSHOT_MAX_BYTES:
            break
    return path


def _to_palette(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def scroll_to(page, selector: str) -> None:
    """Scroll the main area so the first element matching `selector` is at the top."""
    page.locator(selector).first.evaluate("e => e.scrollIntoView({block: 'start'})")


# --- the Regions map (streamlit-folium's iframe) -----------------------------------------------------
FOLIUM_IFRAME = 'iframe[title="streamlit_folium.st_folium"]'


def map_locator(page):
    """The live map's iframe (after a rerun the old one may linger for a moment: take the last)."""
    return page.frame_locator(f"{FOLIUM_IFRAME} >> nth=-1")


def map_view(page, timeout: float = 30.0) -> tuple[int, float, float]:
    """(zoom, lat, lon) of the Leaflet map on the page, read from the map itself once there is
    exactly one (a replaced map's iframe may linger for a moment) and it is not zooming (Leaflet
    ignores a zoom click during a zoom animation)."""
    found = []

    def one_settled_map() -> bool:
        maps = []  # per folium frame: [zoom, lat, lon], "busy" (zooming or replaced) or none
        for frame in page.frames:
            if "streamlit_folium" not in frame.url:
                continue
            try:
                maps.append(frame.evaluate(
                    "typeof map_div === 'undefined' ? 'none' : "
                    "document.querySelector('.leaflet-zoom-anim') ? 'busy' : "
                    "[map_div.getZoom(), map_div.getCenter().lat, map_div.getCenter().lng]"))
            except Exception:
                maps.append("busy")
        maps = [m for m in maps if m != "none"]
        found[:] = maps
        return len(maps) == 1 and isinstance(maps[0], list)

    wait_until(one_settled_map, "a single, settled Leaflet map on the page", timeout, poll=0.1)
    zoom, lat, lon = found[0]
    return int(zoom), float(lat), float(lon)


def wait_map_zoom(page, zoom: int, timeout: float = 30.0) -> None:
    """Until the Leaflet map on the page is at `zoom` (its zoom animation has ended)."""
    wait_until(lambda: map_view(page, timeout)[0] == zoom, f"the map at zoom {zoom}", timeout,
               poll=0.1)
