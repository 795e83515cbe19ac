"""Teacher mode and the lesson link's extra parameters (the Train knobs, the Reconstruct chip
and mask ratio, which controls students see).

A teacher chooses which Train controls students see; the others are hidden and keep the lesson's
values (they still reach the training config). The choice travels in the lesson link as
`show=<knob>,<knob>`; each Train knob that differs from the notebook's default travels as
`<knob>=<value>` (as TensorFlow Playground's link does, e.g. `mask_ratio=0.9&lr=0.002`), and
the Reconstruct chip and ratio as `recon=<split>,<chip>,<ratio>`.

Besides the knobs, the choice covers the Train page's controls that change other people's work
(PAGE_CONTROLS: renaming and deleting saved runs, cancelling other sessions' trainings): teacher
mode hides them unless the teacher chose them, and they travel in `show=` like the knobs.

Teacher mode is a focus tool, not access control (the lab has no accounts): a link opened with
`show=` draws only those controls and no teacher panel, but anyone who opens the lesson without
`show=` gets every control back. The panel says so.

Every value read from an address is checked against its knob's declaration (type, choices or
options, range, slider step); a bad one is left out with a note, never trusted.
"""
from __future__ import annotations

import streamlit as st

from bharateo.app import knobs as knob_layer

SHOW_PARAM = "show"
RECON_PARAM = "recon"
RECON_SPLITS = ("train", "held")
STREAMLIT_PARAMS = ("embed", "embed_options")  # Streamlit's own: never a notice
# Train page controls beyond the knobs that teacher mode hides unless chosen: name -> label
PAGE_CONTROLS = {"manage_runs": "rename and delete saved runs",
                 "cancel_others": "cancel other sessions' trainings"}


# --- the knobs' declarations (bharateo/app/knobs.py) -----------------------------------------
def knob_specs() -> dict:
    """name -> the knob (app/knobs.Knob: the setting's label, type, choices and limits, and how
    the page draws it), in the Train page's order."""
    return knob_layer.knob_specs()


def controls() -> dict[str, str]:
    """Every control teacher mode chooses from, name -> label: the knobs in page order, then
    PAGE_CONTROLS."""
    return {**{name: spec.label for name, spec in knob_specs().items()}, **PAGE_CONTROLS}


def default_knobs() -> dict:
    from bharateo.training.experiment import PRESETS

    return knob_layer.knobs_from_config(PRESETS["notebook default"])


# --- values <-> address text ------------------------------------------------------------------
def knob_text(value) -> str:
    """A knob's value as address text: floats as the shortest text that reads back the same
    after rounding off float noise (a slider's 0.75 + 2 x 0.05 is 0.8500000000000001: "0.85"),
    booleans as 1/0."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(round(value, 12))
    return "" if value is None else str(value)


def parse_knob(spec, raw: str, region_names: list[str] | None = None, values: dict | None = None):
    """Address text -> the knob's value, accepted only if the Train page could have set it: the
    one check every value has (app/knobs.from_text: the science's sentence, the CLI's too, then
    what the page offers). `values`: the other knobs, for the cross-field rules (heads that
    divide the embed dim). ValueError saying what is wrong (the note shown to the user)."""
    allowed = list(region_names or []) if spec.name == "holdout_roi" else None
    return knob_layer.from_text(spec, raw, allowed=allowed, knobs=values)


def baseline_knobs() -> dict:
    """The knobs a session opened on this lesson's address starts from before its knob values:
    the notebook's defaults, with the dataset knobs of the lesson's chips when it has some."""
    from bharateo.app.state import current_chip_config

    state, values = st.session_state, default_knobs()
    if state.get("train_chips") is not None:
        values = {**values, **knob_layer.chip_knobs(current_chip_config(),
                                               [r.spec.name for r in state.rois])}
    return values


def knob_params(knobs: dict, region_names: list[str] | None = None) -> dict[str, list[str]]:
    """The knobs that differ from baseline_knobs(), as address values; only those the address
    can give back (parse_knob accepts their text): a value typed out of range blocks Train with
    a message on the page and stays out of the link, which holds only a valid lesson."""
    specs, baseline, params = knob_specs(), baseline_knobs(), {}
    for name, spec in specs.items():
        if name in knobs and knobs[name] != baseline.get(name):
            text = knob_text(knobs[name])
            try:
                parse_knob(spec, text, region_names)
            except ValueError:
                continue
            params[name] = [text]
    return params


def restore_knobs(params, region_names: list[str], baseline: dict | None = None
                  ) -> tuple[dict, list[str]]:
    """Knob values from an address -> (knobs to set, notes on the ones left out). Each value is
    checked with the knobs before it (`baseline`, default baseline_knobs(), then the address's
    values accepted so far) for the cross-field rules."""
    values, notes = {}, []
    baseline = baseline_knobs() if baseline is None else baseline
    for name, spec in knob_specs().items():
        if name not in params:
            continue
        raw = params.get(name)
        try:
            values[name] = parse_knob(spec, raw, region_names, {**baseline, **values})
        except ValueError as exc:
            notes.append(f"The setting '{spec.label}' in this page's address was left out "
                         f"({name}={raw!r}): {exc}.")
    return values, notes


def parse_show(raw: str) -> tuple[list[str], list[str]]:
    """`show=a,b` -> (the controls students see, in controls() order; notes on unknown names)."""
    known = controls()
    wanted = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    notes = ([f"Teacher mode: {', '.join(map(repr, unknown[:5]))} in this page's address "
              "{} not a Train control and {} ignored.".format(*(("is", "was") if len(unknown) == 1
                                                              else ("are", "were")))]
             if unknown else [])
    return [n for n in known if n in wanted], notes


def parse_recon(raw: str, chip_counts: dict[str, int]) -> tuple[str, int, float]:
    """`recon=<split>,<chip>,<ratio>` -> checked values (ValueError saying what is wrong).
    `chip_counts`: chips per split in this session."""
    parts = raw.split(",")
    if len(parts) != 3:
        raise ValueError("expected split,chip,ratio")
    split = parts[0].strip()
    if split not in RECON_SPLITS:
        raise ValueError(f"the chips must be 'train' or 'held', not {split!r}")
    if split not in chip_counts:
        raise ValueError("this lesson has no such chips")
    try:
        chip = int(parts[1])
    except ValueError:
        raise ValueError("the chip must be a whole number") from None
    if not 0 <= chip < chip_counts[split]:
        raise ValueError(f"there is no chip {chip} (0 to {chip_counts[split] - 1})")
    # the page's slider is the mask ratio knob's (0.05 to 0.95 in steps of 0.05): its one check
    return split, chip, round(knob_layer.from_text(knob_specs()["mask_ratio"], parts[2]), 2)


# --- session state ------------------------------------------------------------------------------
def _kept(key: str, default=None):
    """A widget's value, or the copy keep_widget made while another page was shown."""
    state = st.session_state
    return state[key] if key in state else state.get(f"_kept_{key}", default)


def student_view() -> list[str] | None:
    """The controls (knob or PAGE_CONTROLS names) students see when teacher mode is on, else
    None (every control shows)."""
    return list(_kept("teacher_show") or []) if _kept("teacher_on") else None


def shown(name: str) -> bool:
    """Whether the Train page draws control `name`, a knob or one of PAGE_CONTROLS (teacher mode
    hides the others)."""
    view = student_view()
    return view is None or name in view


def teacher_params() -> dict[str, list[str]]:
    view = student_view()
    return {} if view is None else {SHOW_PARAM: [",".join(n for n in controls() if n in view)]}


def recon_params() -> dict[str, list[str]]:
    """The Reconstruct chip and ratio, once the Reconstruct page has been used."""
    state = st.session_state
    ratio = state.get("recon_mask_ratio", state.get("_kept_recon_mask_ratio"))
    split = state.get("recon_split", state.get("_kept_recon_split", "train"))
    chip = state.get(f"recon_chip_{split}", state.get(f"_kept_recon_chip_{split}"))
    if ratio is None or chip is None or split not in RECON_SPLITS:
        return {}
    return {RECON_PARAM: [f"{split},{int(chip)},{float(ratio):.2f}"]}


def apply_recon(split: str, chip: int, ratio: float) -> None:
    """Put the Reconstruct page's chip and ratio in the session (as its widgets keep them), for
    the chips this session holds now (so the page doesn't start them again at chip 0)."""
    state = st.session_state
    chips = state.get("train_chips") if split == "train" else state.get("heldout_chips")
    for key, value in (("recon_split", split), (f"recon_chip_{split}", chip),
                       ("recon_mask_ratio", ratio)):
        state[key] = state[f"_kept_{key}"] = value
    if chips is not None:
        state[f"recon_chip_{split}_of"] = (id(chips), len(chips))


def apply_knobs(values: dict) -> None:
    """Put restored knob values in the session: the Train page starts from them."""
    state = st.session_state
    knobs = {**baseline_knobs(), **values}  # the lesson's chips first, then its knobs
    state["train_knobs"] = knobs
    for name, value in knobs.items():
        state[f"knob_{name}"] = value
    if state.get("train_chips") is not None:  # the chips are the lesson's: keep its knobs
        state["knobs_chips"] = state.get("chip_config")


def hidden_summary(knobs: dict) -> str:
    """'mask ratio 0.75 · learning rate 0.0004 · ...': the hidden knobs and their fixed values."""
    specs = knob_specs()
    view = student_view() or []
    def text(value) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else knob_text(value) or "none"

    return " · ".join(f"{spec.label} {text(knobs.get(name))}"
                      for name, spec in specs.items() if name not in view and name in knobs)


def teacher_panel() -> None:
    """The Train page's Teacher mode panel (not drawn in a student's view from a link)."""
    state = st.session_state
    if state.get("teacher_from_link"):
        return
    known = controls()
    from bharateo.app.state import keep_widget

    keep_widget("teacher_on", False)
    keep_widget("teacher_show", ["mask_ratio", "lr"], lambda names: [n for n in names if n in known])
    with st.expander(":material/school: Teacher mode: choose the controls students see",
                     expanded=bool(state.get("teacher_on"))):
        st.markdown("The chosen controls stay on the page; the others are hidden and keep their "
                   "current values, which still train. Renaming and deleting saved runs and "
                   "cancelling other sessions' trainings are hidden too unless you choose them. "
                   "The choice goes into this page's address: share it, and students open the "
                   "lesson with only those controls.")
        st.markdown("**Teacher mode is not a lock.** It keeps a lesson focused; it does not stop "
                   "anyone: whoever opens the lesson's address without `show=` (or this page "
                   "without the link) gets every control back, renaming and deleting included.")
        st.multiselect("controls students see", list(known), key="teacher_show",
                       format_func=lambda n: known[n])
        st.toggle("students see only these", key="teacher_on",
                  help="A focus tool, not access control: anyone with the link can turn it off.")


# --- the lesson link's extra parameters (bharateo/app lesson URL calls these) -----------------
def _session_knobs() -> dict:
    """The Train knobs this session holds: the page's kept copy, then the widgets' values as this
    run starts (a widget changed in this rerun is in the address at once)."""
    state = st.session_state
    return {**(state.get("train_knobs") or {}),
            **{str(k)[5:]: v for k, v in state.items() if str(k).startswith("knob_")}}


def extra_params() -> dict[str, list[str]]:
    """Train knobs that differ from the notebook's, the Reconstruct chip and ratio, teacher mode."""
    knobs = _session_knobs()
    regions = [r.spec.name for r in st.session_state.get("rois") or []]
    return {**(knob_params(knobs, regions) if knobs else {}), **recon_params(), **teacher_params()}


def restore_extra(params, known: tuple[str, ...]) -> list[str]:
    """Knobs, Reconstruct chip and ratio, and teacher mode from an address (after its regions
    and chips are restored) -> notes on what was left out. `known`: the lesson link's other keys.
    Never raises; an unknown key is ignored with a note."""
    state, notes = st.session_state, []
    unknown = [k for k in params if k not in (*known, *knob_specs(), RECON_PARAM, SHOW_PARAM,
                                              *STREAMLIT_PARAMS)]
    if unknown:
        named = ", ".join(repr(k if len(k) <= 40 else k[:40] + "…") for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        notes.append(f"This page's address has {named}{more}, which the lab doesn't know; "
                     + ("it was" if len(unknown) == 1 else "they were") + " ignored.")
    regions = [r.spec.name for r in state.get("rois") or []]
    values, knob_notes = restore_knobs(params, regions)
    notes += knob_notes
    if values:
        apply_knobs(values)
    if (raw := params.get(RECON_PARAM)) is not None:
        counts = {split: len(chips) for split, chips in
                  (("train", state.get("train_chips")), ("held", state.get("heldout_chips")))
                  if chips is not None}
        try:
            apply_recon(*parse_recon(raw, counts))
        except ValueError as exc:
            notes.append(f"The Reconstruct chip and ratio in this page's address were left out "
                         f"({raw!r}): {exc}.")
    if (raw := params.get(SHOW_PARAM)) is not None:
        names, show_notes = parse_show(raw)
        notes += show_notes
        if names:
            state["teacher_on"], state["teacher_show"], state["teacher_from_link"] = True, names, True
        else:  # nothing a student could see: a malformed link must not lock every control
            notes.append(f"Teacher mode in this page's address ({raw!r}) names no control "
                         "students could see, so it is off and every setting shows.")
    return notes
