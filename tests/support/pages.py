"""Helpers of the page tests (streamlit.testing.v1.AppTest): open a page through app.py with a
session, wait for what a page asked to be filled in off the page, read the sidebar, find a button,
set Train knobs, and where an element is drawn. Imported lazily where streamlit is not needed."""
from __future__ import annotations

from bharateo.data.roi import NOTEBOOK_ROIS, RoiSpec
from tests.support.paths import APP
from tests.support.waiting import join

SMALL_ROIS = [RoiSpec(s.name, s.lon, s.lat, 512) for s in NOTEBOOK_ROIS]  # the notebook's, 512 px


def open_page(page: str, fill: bool = True, **state):
    """AppTest of `page` reached through app.py, with `state` put in the session first.
    `fill`: when the page asked for results to be filled in off the page (app.looks), wait for
    them and run the page again, as its polling fragment would (a visitor a moment later)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=90)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return filled(at) if fill else at


def filled(at):
    """`at` once the results its page asked to be filled in off the page are ready: run again,
    as the page's polling fragment does (nothing to wait for: `at` as it is)."""
    from bharateo.jobs import looks

    # (a result may be ready already, but the page drew its note a moment before)
    if looks.wait_all(timeout=120) or any("Filling in" in i.value for i in at.info):
        at.run()
        assert not at.exception, at.exception
    return at


def train_page(rois=SMALL_ROIS):
    """The Train page with `rois` (RoiSpecs, read from the WorldCover source) in the session."""
    from streamlit.testing.v1 import AppTest

    from bharateo.data.roi import load_roi

    at = AppTest.from_file(APP, default_timeout=60).run()
    at.session_state["rois"] = [load_roi(s) for s in rois]
    return at.switch_page("pages/train.py").run()


def button(at, label):
    """The first button labelled `label`."""
    return next(b for b in at.button if b.label == label)


def set_knobs(at, **values):
    """Set Train knobs by setting name (knob_<name> in the session) and run the page again."""
    for key, value in values.items():
        at.session_state[f"knob_{key}"] = value
    return at.run()


def wait(job):
    """Join a training job (a hang guard only, tests/support/waiting.py); it must have ended."""
    join(job, "the training job")
    assert job.done, f"job still {job.status}"


def sidebar_text(at) -> str:
    """The sidebar's markdown and captions, one per line."""
    return "\n".join(e.value for kind in ("markdown", "caption") for e in at.sidebar.get(kind))


def in_order(node):
    """The page's elements and blocks in the order they are drawn (depth first)."""
    yield node
    for child in getattr(node, "children", {}).values():
        yield from in_order(child)


def drawn_after(at, element, key: str) -> bool:
    """Whether `element` is drawn after the widget `key` (e.g. under a form's button)."""
    order = [id(n) for n in in_order(at.main)]
    keyed = [n for n in in_order(at.main) if getattr(n, "key", None) == key]
    return bool(keyed) and order.index(id(element)) > order.index(id(keyed[0]))
