"""A student's device as the server sees it: Streamlit's websocket protocol, no browser.

A classroom's browsers run on the students' own devices; the server only sees each tab's
websocket messages. So the load bench (bench/classroom_load.py) opens one `Tab` per student:
  - the websocket /_stcore/stream with the subprotocols the frontend sends,
  - a `rerun_script` BackMsg for each page load, sidebar navigation (the page's script hash) and
    button click (the button's widget id as a trigger value), with the address's query string,
    which follows every `page_info_changed` the app sends, as the frontend's address bar does,
  - a fragment rerun every `interval` s for each fragment the server announces with
    `auto_rerun` (st.fragment(run_every=...)), dropped on `stop_auto_rerun`, on navigation and
    when a full run starts, as the frontend's timers are,
  - each run timed from the message sent to its `script_finished`.
It renders nothing and sends no widget values (students who look, a teacher who presses Train
and Stop). Figures from it were checked against ../shared/bench/classroom (docs/classroom.md).
Uses only what the app's requirements install (streamlit brings websockets and protobuf).
"""
from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

DONE = ForwardMsg.ScriptFinishedStatus
FULL_RUN_DONE = (DONE.FINISHED_SUCCESSFULLY, DONE.FINISHED_WITH_COMPILE_ERROR)
PROGRESS = re.compile(rb"epoch (\d+)/(\d+) \xc2\xb7 step (\d+)/(\d+) \xc2\xb7 (\d+) chips/s")


@dataclass
class Run:
    """One script run: sent (perf_counter s) to finished (None: not yet, or it timed out)."""

    what: str
    sent: float
    finished: float | None = None
    exception: bool = False  # the page drew an exception box
    buttons: dict[str, str] = field(default_factory=dict)  # label -> widget id

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.sent


class Tab:
    """One browser tab: one Streamlit session. `on_progress(epoch, step, chips_s)` is called for
    every training progress text the tab receives (the Train page's live bar)."""

    def __init__(self, url: str, on_progress=None):
        u = urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        self.query = ""
        self.pages: dict[str, str] = {}  # page title -> script hash
        self.page_hash = ""
        self.run: Run | None = None
        self.errors: list[str] = []
        self.on_progress = on_progress
        self._ws = None
        self._reader = None
        self._timers: dict[str, asyncio.Task] = {}
        self._finished = asyncio.Event()

    async def open(self, query: str = "", timeout: float = 120) -> Run:
        """Load the app's address (?query) and wait for its first page."""
        self.query = query
        self._ws = await websockets.connect(
            f"ws://{self.host}:{self.port}/_stcore/stream",
            subprotocols=["streamlit", "PLACEHOLDER_AUTH_TOKEN"], compression=None,
            origin=f"http://{self.host}:{self.port}", max_size=None, open_timeout=timeout,
            ping_interval=None, close_timeout=5)
        self._reader = asyncio.create_task(self._read())
        return await self._rerun("open", timeout=timeout)

    async def goto(self, page: str, timeout: float = 120) -> Run:
        """Click `page` in the sidebar navigation."""
        self._stop_timers()
        return await self._rerun(page, page_hash=self.pages[page], timeout=timeout)

    async def click(self, label: str, timeout: float = 120) -> Run:
        """Click the button labelled `label` on the page drawn last."""
        wid = self.run.buttons[label]
        return await self._rerun(label, page_hash=self.page_hash, trigger=wid, timeout=timeout)

    async def close(self) -> None:
        self._stop_timers()
        if self._ws is not None:
            try:
                await asyncio.wait_for(self._ws.close(), 5)
            except Exception:  # already gone: nothing to close
                pass
        if self._reader is not None:
            self._reader.cancel()

    # --- messages out ------------------------------------------------------------------------
    async def _send(self, page_hash: str = "", trigger: str = "", fragment: str = "") -> None:
        msg = BackMsg()
        rerun = msg.rerun_script
        rerun.query_string, rerun.page_script_hash = self.query, page_hash
        if fragment:
            rerun.fragment_id, rerun.is_auto_rerun = fragment, True
        if trigger:
            widget = rerun.widget_states.widgets.add()
            widget.id, widget.trigger_value = trigger, True
        info = rerun.context_info
        info.timezone, info.locale = "UTC", "en-US"
        info.url = f"http://{self.host}:{self.port}/" + (f"?{self.query}" if self.query else "")
        await self._ws.send(msg.SerializeToString())

    async def _rerun(self, what: str, page_hash: str = "", trigger: str = "",
                     timeout: float = 120) -> Run:
        self.run = run = Run(what, time.perf_counter())
        self._finished.clear()
        await self._send(page_hash, trigger)
        try:
            await asyncio.wait_for(self._wait(run), timeout)
        except asyncio.TimeoutError:
            self.errors.append(f"{what}: no answer in {timeout:.0f} s")
        return run

    async def _wait(self, run: Run) -> None:
        while run.finished is None:
            if self._reader.done():
                raise ConnectionError("the server closed the connection")
            await self._finished.wait()
            self._finished.clear()

    async def _timer(self, fragment: str, interval: float) -> None:
        """The frontend's setInterval for a run_every fragment: a rerun every `interval` s."""
        while True:
            await asyncio.sleep(interval)
            await self._send(self.page_hash, fragment=fragment)

    def _stop_timers(self) -> None:
        for task in self._timers.values():
            task.cancel()
        self._timers.clear()

    # --- messages in -------------------------------------------------------------------------
    async def _read(self) -> None:
        try:
            async for data in self._ws:
                self._handle(data)
        except websockets.ConnectionClosed as exc:
            self.errors.append(f"connection closed: {exc}")
        finally:
            self._stop_timers()
            self._finished.set()

    def _handle(self, data: bytes) -> None:
        if self.on_progress is not None and b"chips/s" in data:
            for m in PROGRESS.finditer(data):
                epoch, _, step, per_epoch, chips_s = map(int, m.groups())
                self.on_progress((epoch - 1) * per_epoch + step, chips_s)
        msg = ForwardMsg()
        msg.ParseFromString(data)
        kind = msg.WhichOneof("type")
        if kind == "new_session":
            if not msg.metadata.run.fragment_ids:  # a full run: its fragments register again
                self._stop_timers()
            self.page_hash = msg.new_session.page_script_hash
            self._add_pages(msg.new_session.app_pages)
        elif kind == "navigation":
            self._add_pages(msg.navigation.app_pages)
            self.page_hash = msg.navigation.page_script_hash or self.page_hash
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "delta" and self.run is not None:
            element = msg.delta.new_element if msg.delta.HasField("new_element") else None
            if element is not None and element.HasField("button"):
                self.run.buttons[element.button.label] = element.button.id
            if element is not None and element.HasField("exception"):
                self.run.exception = True
        elif kind == "auto_rerun":
            fragment, interval = msg.auto_rerun.fragment_id, msg.auto_rerun.interval
            if fragment not in self._timers:
                self._timers[fragment] = asyncio.create_task(self._timer(fragment, interval))
        elif kind == "stop_auto_rerun":
            for fragment in msg.stop_auto_rerun.fragment_ids:
                if task := self._timers.pop(fragment, None):
                    task.cancel()
        elif kind == "script_finished":
            if msg.script_finished in FULL_RUN_DONE and self.run is not None \
                    and self.run.finished is None:
                self.run.finished = time.perf_counter()
                self._finished.set()

    def _add_pages(self, pages) -> None:
        for page in pages:
            self.pages[page.page_name] = page.page_script_hash
