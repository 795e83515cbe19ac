"""The Reconstruct and Evaluate pages' logic, kept out of the page scripts.

- both pages' first step: the session's model (or a saved run picked here), then the session's
  chips (or the chips the run was trained on, rebuilt on request), checked against the model;
  each step shows guidance or an error in words and stops the page when it can't go on,

- which chips go with a run (rebuild a run's own chips from its config; say how the session's
  chips differ from them),
- results that are computed once per model + chips and then reused: the evaluation and the
  mask-ratio curve are stored beside a saved run (bharateo/storage/results.py) and computed off the
  page: by the training worker as a run's last step, else in the background while the page
  draws (bharateo/jobs/looks.py; the pages call the *_or_filling functions and poll),
- the per-class table, and a plain-language reading of the gap between training chips and the
  held-out region (the reconstruction panels are drawn in bharateo/app/pictures.py),
- Evaluate's patch viewer: the patches behind a clicked confusion cell or table row.

Only the model-and-chips step and the patch viewer draw (Streamlit); the click handling and
everything else are testable directly.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import streamlit as st

from bharateo.training import evaluate as ev
from bharateo.app import regions, state
from bharateo.app.state import CurrentModel
from bharateo.data.chips import ChipSet, build_chip_sets
from bharateo.errors import BharatEOError, ConfigError
from bharateo.training.evaluate import class_table  # noqa: F401  (the pages read it from here)
from bharateo.training.experiment import RunConfig, load_rois
from bharateo.jobs import looks
from bharateo.jobs.looks import precision_param
from bharateo.storage.results import (StoredResult, chips_fingerprint, clear_memory,  # noqa: F401
                                 model_digest, result_filename, stored_result, valid_result)
from bharateo.storage.runs import SavedRun, list_runs, load_run, unreadable_weights_message
from bharateo.config.schema import number_text
from bharateo.words import plural
from bharateo.data.worldcover import CLASS_NAMES, NUM_CLASSES

# --- the model and the chips both pages start from ---------------------------------------------
def _switch_run(key: str) -> None:
    """Selectbox callback: make the chosen saved run the session's model."""
    name = st.session_state.get(key)
    state.clear_error("run")
    if not name:
        return
    try:
        state.use_saved_run(load_run(name))
    except BharatEOError as exc:  # kept until another pick or another model (state.keep_error)
        state.keep_error("run", exc)
    except Exception:  # anything else unreadable: the same plain words as the CLI, no traceback
        state.keep_error("run", BharatEOError(unreadable_weights_message(name)))


def _run_label(run: SavedRun) -> str:
    saved = run.config.get("saved_at", "")[:16].replace("T", " ")
    epochs = run.metrics.get("epochs_done", run.config.get("train", {}).get("epochs", "?"))
    held = number_text(run.metrics.get("heldout_esa_acc"), 2)
    majority = number_text(run.metrics.get("heldout_majority_acc"), 2)
    balanced = number_text(run.metrics.get("heldout_balanced_acc"), 2)
    baselines = ", ".join(f"{name} {value}" for name, value in
                          (("majority", majority), ("balanced", balanced)) if value != "—")
    tail = (f", held-out acc {held}" + (f" ({baselines})" if baselines else "")
            if held != "—" else "")
    epochs = plural(epochs, "epoch") if isinstance(epochs, int) else f"{epochs} epochs"
    return f"{run.name} · {saved} · {epochs}{tail}"


def choose_model(page: str) -> tuple[CurrentModel, SavedRun | None] | None:
    """The saved-run picker and a line about the model -> (the current model, its saved run or
    None), or None after guidance when there is no model to show."""
    runs = list_runs()
    current = state.current_model()
    if current is None and not runs:
        job = st.session_state.get("job")
        if job is not None and not job.done:  # not "train one": this session is training one
            state.guidance(f"This session's training (run '{job.run_name}') has not ended yet: "
                           "its model comes here when it does; the sidebar shows how far it is.",
                           "train", "Go to Train")
        else:
            state.guidance("There is no trained model yet. Train one on the Train page (the "
                           "'quick demo' preset takes under a minute), then come back here.",
                           "train", "Go to Train")
        return None
    by_name = {r.name: r for r in runs}
    key = f"{page}_saved_run"
    name = current.run if current else None
    st.session_state[key] = name if name in by_name else None  # follow the session's model
    st.selectbox("Saved run", list(by_name), key=key, on_change=_switch_run, args=(key,),
                 format_func=lambda name: _run_label(by_name[name]),
                 placeholder="choose a saved run…",
                 help="Switches the model this page and the other pages use. Newest first.")
    state.show_kept_error("run")
    current = state.current_model()
    if current is None:
        state.guidance("No model in this session yet: choose a saved run above, or train one.",
                       "train", "Go to Train")
        return None
    st.caption(describe_model(current))
    return current, by_name.get(current.run)


def _load_run_chips_button(current: CurrentModel, page: str, label: str) -> None:
    """A button that rebuilds the run's own chips (its regions, its chip settings) into the session."""
    if not st.button(label, key=f"{page}_load_run_chips", type="primary"):
        return
    config = current.config
    with st.spinner("Reading the run's regions and cutting its chips…"):
        try:
            rois, train, held = chips_for_run(config, regions.read_roi)
        except BharatEOError as exc:
            state.show_error(exc)
            return
    st.session_state.rois = rois
    st.session_state.chip_config = config.chips
    st.session_state.train_chips, st.session_state.heldout_chips = train, held
    st.rerun()


def choose_chips(current: CurrentModel, page: str):
    """The session's chips, checked against the model -> (training chips, held-out or None) or None."""
    train, held = st.session_state.train_chips, st.session_state.heldout_chips
    run_label = "Load the chips this run was trained on"
    if train is None:
        st.info("There are no chips in this session yet. Load the chips this run was trained on "
                "(rebuilt from its regions and chip settings), or cut other chips on the Chips page.")
        _load_run_chips_button(current, page, run_label)
        st.page_link(state.PAGES["chips"], label="Go to Chips", icon=":material/arrow_forward:")
        return None
    try:
        ev.check_compatible(current.model, train)
    except ConfigError as exc:
        st.error(str(exc))
        _load_run_chips_button(current, page, "Load the chips this run was trained on (replaces "
                                              "the current chips)")
        return None
    if held is not None:
        try:
            ev.check_compatible(current.model, held)
        except ConfigError as exc:
            st.warning(f"The held-out chips can't be used: {exc}")
            held = None
    differences = chip_differences(current.config, train, held)
    if differences:
        with st.expander("ℹ️ These are not the chips this run was trained on", expanded=False):
            st.markdown("- " + "\n- ".join(differences))
            st.caption("'Training chips' below means the chips in this session. To see the run on "
                       "its own chips, load them:")
            _load_run_chips_button(current, page, f"{run_label} (replaces the current chips)")
    return train, held


def model_and_chips(page: str):
    """Both pages' first step: (the current model, its saved run or None, training chips,
    held-out chips or None). Stops the page when guidance or an error has been shown instead."""
    choice = choose_model(page)
    chip_sets = choose_chips(choice[0], page) if choice is not None else None
    if chip_sets is None:
        st.stop()
    entry, run = choice
    return entry, run, *chip_sets


def evaluation(model, chips: ChipSet, mask_ratio: float, run: SavedRun | None = None,
               precision: str = "fp32") -> StoredResult:
    """evaluate.evaluate (confusion, P/R/F1, masked MAE, per-class MAE) under the run's
    `precision` (device.PRECISIONS), computed once, here (the pages use evaluations_or_filling)."""
    look = looks.evaluation_look(chips, mask_ratio, precision)
    return stored_result(look.kind, model, chips, look.params, lambda: look.compute(model), run)


def ratio_curve(model, chips: ChipSet, run: SavedRun | None = None,
                precision: str = "fp32") -> StoredResult:
    """evaluate.mask_ratio_curve at 0.1 ... 0.9 under the run's `precision`, computed once, here
    (the Reconstruct page uses ratio_curve_or_filling)."""
    look = looks.curve_look(chips, precision)
    return stored_result(look.kind, model, chips, look.params, lambda: look.compute(model), run)


def ratio_curve_or_filling(model, chips: ChipSet, run: SavedRun | None = None,
                           precision: str = "fp32") -> StoredResult | looks.Filling:
    """The stored curve, or the background Filling computing it (never computed on the page)."""
    return looks.ready_or_fill(looks.curve_look(chips, precision), model, run)


def evaluations(model, train: ChipSet, held: ChipSet | None, mask_ratio: float,
                run: SavedRun | None = None, precision: str = "fp32") -> dict[str, StoredResult]:
    """Evaluate's results: {"train": evaluation on the training chips, "held": on the held-out
    chips (only when there are some)}, each computed once (evaluation)."""
    splits = {"train": train, **({"held": held} if held is not None else {})}
    return {split: evaluation(model, chips, mask_ratio, run, precision)
            for split, chips in splits.items()}


def evaluations_or_filling(model, train: ChipSet, held: ChipSet | None, mask_ratio: float,
                           run: SavedRun | None = None, precision: str = "fp32"
                           ) -> dict[str, StoredResult | looks.Filling]:
    """evaluations, each either stored or being filled in the background (looks.ready_or_fill)."""
    splits = {"train": train, **({"held": held} if held is not None else {})}
    return {split: looks.ready_or_fill(looks.evaluation_look(chips, mask_ratio, precision), model, run)
            for split, chips in splits.items()}


@st.fragment(run_every=1.0)
def show_filling(what: str, tasks: list) -> None:
    """While `tasks` (looks.Filling) are filled in off the page: a note with their progress
    (filling_note), polled every second; once all are ready or failed the page reruns and draws
    them (or says why not). It holds no control, so the lesson address has nothing to follow."""
    if all(t.ready for t in tasks):
        st.rerun()
    st.info(filling_note(what, tasks), icon=":material/hourglass_top:")


def filling_note(what: str, tasks) -> str:
    """A line saying `what` is being filled in and how far ('' when nothing is)."""
    tasks = [t for t in tasks if isinstance(t, looks.Filling)]
    if not tasks:
        return ""
    share = sum(t.progress for t in tasks) / len(tasks)
    return (f"Filling in {what}: measuring the model on these chips in the background"
            + (f" ({share:.0%} done)" if share else "") + ". It appears here by itself when "
            "ready, and is stored beside the run, so this happens once.")


def scored_patches(result: dict, grid_size: int) -> int:
    """Patches an evaluation scored: chips x grid_size ** 2, less its no-data patches."""
    return result["chips"] * grid_size ** 2 - int(result.get("ignored_patches", 0))


# --- Reconstruct: which chips, which chip ------------------------------------------------------
THUMBNAILS = 10  # chips shown as thumbnails around the chosen one


def chip_splits(train: ChipSet, held: ChipSet | None) -> tuple[dict[str, ChipSet], dict[str, str]]:
    """The chip sets Reconstruct offers ({"train": ..., "held": ... when there are held-out chips})
    and a title for each."""
    splits, titles = {"train": train}, {"train": "training chips"}
    if held is not None:
        splits["held"], titles["held"] = held, f"held-out region {held_region_name(held)}"
    return splits, titles


def chip_picker_key(chips: ChipSet, split: str) -> str:
    """The session key of `split`'s chip number: kept across reruns and pages (state.keep_widget),
    back to chip 0 when the chips themselves changed (rebuilt or loaded)."""
    key = f"recon_chip_{split}"
    if st.session_state.get(f"{key}_of") != (id(chips), len(chips)):
        st.session_state[f"{key}_of"] = (id(chips), len(chips))
        st.session_state.pop(f"_kept_{key}", None)
        st.session_state[key] = 0
    state.keep_widget(key, 0)
    return key


def chip_choice(typed, count: int) -> tuple[int | None, range]:
    """The chip a typed number picks (None: no such chip among `count`) and the thumbnails around
    it (THUMBNAILS at most, the first block when nothing valid is typed)."""
    index = int(typed) if typed is not None and 0 <= typed < count else None
    first = min((index or 0) // THUMBNAILS * THUMBNAILS, max(count - THUMBNAILS, 0))
    return index, range(first, min(first + THUMBNAILS, count))


# --- which chips go with a run ---------------------------------------------------------------
def chips_for_run(config: RunConfig, read_roi: Callable | None = None):
    """Rebuild the chips a run was trained on -> (rois, training chips, held-out chips or None).

    `read_roi(spec)` reads one region (the app passes its server-wide cached reader).
    """
    if read_roi is not None and config.chips.source == "worldcover":
        rois = [read_roi(spec) for spec in config.rois]
    else:  # Sentinel-2 regions come from their own loader (and cache)
        rois = load_rois(config.rois, chips=config.chips)
    train, held = build_chip_sets(rois, config.chips)
    return rois, train, held


def chip_differences(config: RunConfig, train: ChipSet, held: ChipSet | None) -> list[str]:
    """How the session's chips differ from the chips `config` describes (empty: they look the same)."""
    c = config.chips
    out = []
    run_regions = [r.name for r in config.rois]
    if list(train.roi_names) != run_regions:
        out.append(f"the run used regions {', '.join(run_regions)}; these chips come from "
                   f"{', '.join(train.roi_names)}")
    if (train.chip_size, train.patch_size) != (c.chip_size, c.patch_size):
        out.append(f"the run used {c.chip_size} px chips with {c.patch_size} px patches; these are "
                   f"{train.chip_size} px with {train.patch_size} px patches")
    if len(train) != c.n_chips:
        out.append(f"the run trained on {plural(c.n_chips, 'chip')}; there are {len(train)} here")
    held_name = None if held is None else held_region_name(held)
    if (c.holdout_roi or None) != (held_name if held is not None else None):
        out.append("the run held out " + (f"'{c.holdout_roi}'" if c.holdout_roi else "no region") +
                   "; these chips hold out " + (f"'{held_name}'" if held is not None else "none"))
    return out


def held_region_name(held: ChipSet) -> str:
    """The region the held-out chips come from (all held-out chips share one ROI)."""
    names = {held.roi_names[i] for i in np.unique(held.roi_index)}
    return ", ".join(sorted(names))


def held_out_by_run(config: RunConfig, held: ChipSet | None) -> bool:
    """True when the run kept the held-out chips' region out of its own training."""
    return held is not None and config.chips.holdout_roi == held_region_name(held)


def describe_model(current: CurrentModel) -> str:
    """One line about the model the pages use: where it's from, its shape, what it was trained on."""
    config: RunConfig = current.config
    m, t, c = config.model, config.train, config.chips
    regions = [r.name for r in config.rois if r.name != c.holdout_roi]
    held = f"; held out: {c.holdout_roi}" + (f" ({c.holdout_block} half)" if c.holdout_block else "") \
        if c.holdout_roi else ""
    epochs = t.epochs if current.epochs_done is None else current.epochs_done
    decoder = (f"; decoder {m.decoder_dim} wide x {m.decoder_depth}" if m.arch == "mae" else "")
    return (f"{current.label} · {m.arch} model, {config.parameters / 1e6:.2f}M parameters (embed "
            f"{m.embed_dim}, depth {m.depth}, {m.heads} heads{decoder}) · {c.n_chips} chips of "
            f"{c.chip_size} px × "
            f"{plural(epochs, 'epoch')} at mask ratio {t.mask_ratio:g} · regions: "
            f"{', '.join(regions)}{held}")


# --- tables and words ------------------------------------------------------------------------
def class_table_display(result: dict) -> pd.DataFrame:
    """class_table for reading: scores as text, undefined ones as '—' (st.dataframe shows 'None')."""
    table = class_table(result)
    for name, digits in (("precision", 2), ("recall", 2), ("F1", 2), ("masked MAE", 3)):
        table[name] = [ev.score_text(v, digits) for v in table[name]]
    return table


def normalised_confusion(result: dict) -> np.ndarray:
    return ev.row_normalised(np.asarray(result["confusion"]))


VERDICT_WORDS = {"learned": "learned", "majority": "majority", "no_gain": "no gain"}


def score_percent(value) -> str:
    """A share as '80.8%', '—' when undefined."""
    return "—" if value is None or value != value else f"{value:.1%}"


def baseline_delta(q: dict) -> dict:
    """st.metric's delta for an accuracy: its difference from the majority baseline in
    percentage points, '+4.1 pts' (short: a metric is a sixth of the page wide; green above it by
    more than the margin, grey within it, red below), or nothing without a baseline."""
    if q.get("accuracy") is None or q.get("majority_accuracy") is None:
        return {}
    diff = q["accuracy"] - q["majority_accuracy"]
    within = abs(diff) <= q["margin"]
    return {"delta": f"{100 * diff:+.1f} pts", "delta_color": "off" if within else "normal"}


def chip_baseline_caption(q: dict | None) -> str:
    """Under Reconstruct's per-chip accuracy: its baselines on this chip's patches."""
    if not q or q.get("majority_accuracy") is None:
        return "No land-cover patches on this chip to score."
    return (f"Always answering '{q['majority_class']}' would score "
            f"{q['majority_accuracy']:.0%} on this chip; balanced accuracy "
            f"{score_percent(q['balanced_accuracy'])} (one class everywhere: "
            f"{score_percent(q['balanced_floor'])}).")


def curve_baseline_caption(rows: list[dict]) -> str:
    """Under Reconstruct's curve: the majority baseline and the balanced accuracy range."""
    majority = rows[0].get("majority_acc") if rows else None
    if majority is None:
        return ""
    balanced = [r["balanced_acc"] for r in rows if r.get("balanced_acc") is not None]
    span = (f"; balanced accuracy (every class counts the same) runs from {min(balanced):.0%} to "
            f"{max(balanced):.0%}" if balanced else "")
    return (f"The grey line is the majority baseline: always answering the most common class "
            f"scores {majority:.0%} of these patches at every ratio{span}.")


def _with_baselines(q: dict) -> str:
    """'0.85 (always 'tree': 0.81; balanced accuracy 0.25)': an accuracy beside its baselines."""
    return (f"{ev.score_text(q['accuracy'], 2)} (always '{q['majority_class']}': "
            f"{ev.score_text(q['majority_accuracy'], 2)}; balanced accuracy "
            f"{ev.score_text(q['balanced_accuracy'], 2)})")


def gap_reading(train: dict, held: dict | None, held_name: str | None = None,
                held_out_by_run: bool = True, weighting: str | None = None) -> str:
    """A few sentences a teacher can read out: training chips vs the held-out region, every
    accuracy beside its majority baseline and balanced accuracy (evaluate.quality).

    `held_out_by_run` False: the run did not keep that region out of training, so say the gap
    is not a test of generalisation. A split counts as learned only when evaluate.quality says
    so (accuracy above always answering its most common class, and balanced accuracy above one
    class's, each by more than evaluate.baseline_margin); otherwise the reading says it answers
    the majority class and what to try (evaluate.quality_reading, told the run's class
    `weighting`). It only says learning
    "carries over" when both splits are learned.
    """
    q_t = ev.quality_of(train)
    acc_t = train["accuracy"]
    if held is None:
        if q_t["verdict"] != "learned":
            return (ev.quality_reading(q_t, "its training chips", weighting) + " Hold out a region to see "
                    "how it does on land it never saw.")
        return (f"On its training chips the model labels {acc_t:.0%} of patches correctly "
                f"(always answering '{q_t['majority_class']}' would score "
                f"{q_t['majority_accuracy']:.0%}; balanced accuracy "
                f"{ev.score_text(q_t['balanced_accuracy'], 2)}). That shows how well it fits what "
                "it has seen, not whether it generalises: hold out a region to find out.")
    where = f"the held-out region '{held_name}'" if held_name else "the held-out region"
    q_h = ev.quality_of(held)
    acc_h = held["accuracy"]
    gap = acc_t - acc_h
    learned_t, learned_h = q_t["verdict"] == "learned", q_h["verdict"] == "learned"
    if not learned_t:
        lead = (ev.quality_reading(q_t, "training chips", weighting) + f" On {where} accuracy is "
                f"{_with_baselines(q_h)}; until the model beats the majority answer on its own "
                "chips, the gap between the two says little.")
    elif not learned_h:
        lead = (f"On training chips accuracy is {_with_baselines(q_t)}, above the majority "
                f"answer. " + ev.quality_reading(q_h, where, weighting) + " What it learned on its training "
                "regions does not carry over there yet.")
    elif gap > 0.10:
        lead = (f"Accuracy drops from {acc_t:.2f} on training chips to {acc_h:.2f} on {where} "
                f"(always '{q_h['majority_class']}' scores {q_h['majority_accuracy']:.2f} there; "
                f"balanced accuracy {ev.score_text(q_t['balanced_accuracy'], 2)} → "
                f"{ev.score_text(q_h['balanced_accuracy'], 2)}): the model has partly memorised "
                "its training regions rather than learning land cover in general.")
    elif gap > 0.03:
        lead = (f"Accuracy drops a little, from {_with_baselines(q_t)} on training chips to "
                f"{_with_baselines(q_h)} on {where}: most of what it learned carries over to new "
                "land, some is memorised.")
    elif gap >= -0.03:
        lead = (f"Accuracy is about the same on training chips, {_with_baselines(q_t)}, and on "
                f"{where}, {_with_baselines(q_h)}: what the model learned carries over to land "
                "it never saw.")
    else:
        lead = (f"Accuracy is higher on {where} ({acc_h:.2f}) than on training chips "
                f"({acc_t:.2f}). That usually means the held-out land is easier, not that the model "
                f"got better away from home: {q_h['majority_accuracy']:.0%} of its patches are "
                f"'{q_h['majority_class']}', so always answering '{q_h['majority_class']}' would "
                f"already score {q_h['majority_accuracy']:.0%} there (balanced accuracy "
                f"{ev.score_text(q_t['balanced_accuracy'], 2)} on training chips, "
                f"{ev.score_text(q_h['balanced_accuracy'], 2)} there).")
    parts = [lead]
    if not held_out_by_run:
        parts.insert(0, f"Careful: this run did not hold out {held_name or 'this region'} when it "
                        "was trained, so it may have seen this land: what follows is not a fair test "
                        "of new land.")
    mae_t, mae_h = train["masked_mae"], held["masked_mae"]
    if mae_t and mae_h is not None:  # None: no hidden land-cover patch (all no-data)
        change = (mae_h - mae_t) / mae_t
        parts.append(f"Hidden patches are painted back with a mean error of {mae_t:.3f} on training "
                     f"chips and {mae_h:.3f} on {where} ({change:+.0%}).")
    drop = _biggest_recall_drop(train, held)
    if drop is not None:
        name, r_t, r_h = drop
        parts.append(f"The class that suffers most is '{name}': recall {r_t:.2f} → {r_h:.2f}.")
    return " ".join(parts)


def _biggest_recall_drop(train: dict, held: dict, min_support: int = 20):
    best = None
    for a, b in zip(train["per_class"], held["per_class"]):
        if a["support"] >= min_support and b["support"] >= min_support:
            drop = a["recall"] - b["recall"]  # both defined: support >= min_support
            if drop > 0.10 and (best is None or drop > best[0]):
                best = (drop, a["class"], a["recall"], b["recall"])
    return None if best is None else best[1:]


# --- Evaluate: click a mistake, see its patches ----------------------------------------------
PATCHES_PER_PAGE = 12  # patches shown at once under the confusion matrix
ANY_OTHER = None  # "predicted" of a class's misses: any class but its own


def patch_predictions(model, chips: ChipSet, mask_ratio: float,
                      precision: str = "fp32") -> StoredResult:
    """evaluate.patch_predictions (every patch's predicted class and mask, under the seeded masks
    of the evaluation the matrix counts), computed once per model, chips and ratio and kept in
    memory only (the pictures need the model anyway): {"predictions": K x N, "mask": K x N}."""
    params = {"mask_ratio": round(float(mask_ratio), 4), "seed": ev.EVAL_MASK_SEED,
              **precision_param(precision)}

    def compute():
        predictions, mask = ev.patch_predictions(model, chips, params["mask_ratio"],
                                                 ev.EVAL_MASK_SEED, precision)
        return {"predictions": predictions, "mask": mask}

    return stored_result("patch_predictions", model, chips, params, compute)


def clicked_cell(event) -> tuple[int, int] | None:
    """A click on the confusion heatmap (st.plotly_chart's selection state, or its "selection"
    part) -> (target class, predicted class), or None when no cell is selected or the point
    names no class. Heatmap points carry x = predicted and y = target class names
    (figures.confusion_heatmap)."""
    try:
        selection = event.get("selection", event) if hasattr(event, "get") else None
        points = (selection or {}).get("points") or []
        point = points[-1]
        target, predicted = point.get("y"), point.get("x")
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    if target in CLASS_NAMES and predicted in CLASS_NAMES:
        return CLASS_NAMES.index(target), CLASS_NAMES.index(predicted)
    return None


def selected_class(event, table: pd.DataFrame) -> int | None:
    """A row picked in the per-class table (st.dataframe's selection state) -> its class id, or
    None when no row (or an unknown one) is selected."""
    try:
        selection = event.get("selection", event) if hasattr(event, "get") else None
        rows = (selection or {}).get("rows") or []
        name = table["class"].iloc[int(rows[-1])]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    return CLASS_NAMES.index(name) if name in CLASS_NAMES else None


def new_pick(seen: dict, source: str, pick) -> bool:
    """True when `source`'s pick (a chart cell or a table row) differs from the one seen on the
    previous rerun, recording it in `seen`. A selection stays in Streamlit's state across
    reruns: only a new one should move the patch viewer, never undo the viewer's own choices."""
    if seen.get(source) == pick:
        return False
    seen[source] = pick
    return pick is not None


def cell_title(target: int, predicted: int | None, count: int, support: int) -> str:
    """'37 patches of water were called tree (12% of water's 310 patches)'; predicted None:
    the class's misses."""
    what = (f"were called {CLASS_NAMES[predicted]}" if predicted is not None
            else "were called another class (its misses)")
    if predicted == target:
        what = "were named correctly"
    share = f" ({count / support:.0%} of {CLASS_NAMES[target]}'s {support:,} patches)" if support else ""
    return f"{plural(count, 'patch', 'patches')} of {CLASS_NAMES[target]} {what}{share}"


def spread_over_chips(cells: np.ndarray) -> np.ndarray:
    """confusion_cell's (chip, patch) rows reordered so a page shows many chips: each chip's
    first listed patch (chips in order), then each chip's second, and so on (a page of one
    chip's twelve neighbouring patches shows less than twelve chips)."""
    if not len(cells):
        return cells
    chips = cells[:, 0]
    starts = np.r_[0, np.flatnonzero(np.diff(chips)) + 1]  # rows are grouped by chip
    rank = np.arange(len(cells)) - np.repeat(starts, np.diff(np.r_[starts, len(cells)]))
    return cells[np.lexsort((chips, rank))]


def patch_page(cells: np.ndarray, page: int, per_page: int = PATCHES_PER_PAGE
               ) -> tuple[np.ndarray, int, int]:
    """One page of confusion_cell's (chip, patch) rows -> (rows, page clamped to 0..pages-1,
    pages, at least 1)."""
    pages = max(1, -(-len(cells) // per_page))
    page = min(max(int(page), 0), pages - 1)
    return cells[page * per_page:(page + 1) * per_page], page, pages


MISSES = "any other class (its misses)"
_MISTAKE_KEYS = {k: f"eval_mistake_{k}" for k in ("split", "target", "predicted", "page")}


def pick_patches(split: str, target: int, predicted: int | None) -> None:
    """Point the patch viewer at a cell (target, predicted; predicted None: the class's misses)
    of `split`'s matrix, on its first page. Call before mistakes_section draws its widgets."""
    keys = _MISTAKE_KEYS
    st.session_state[keys["split"]] = split
    st.session_state[keys["target"]] = CLASS_NAMES[target]
    st.session_state[keys["predicted"]] = MISSES if predicted is None else CLASS_NAMES[predicted]
    st.session_state[keys["page"]] = 1


def follow_clicks(split: str, chart_event, table_event, table: pd.DataFrame) -> None:
    """Point the patch viewer at a cell just clicked in `split`'s confusion matrix, or at the
    misses of a row just picked in its per-class table (pick_patches); a selection already seen
    on an earlier rerun is left alone (new_pick). Call before mistakes_section."""
    seen = st.session_state.setdefault("eval_seen_picks", {})
    if new_pick(seen, f"cell_{split}", cell := clicked_cell(chart_event)):
        pick_patches(split, *cell)
    if new_pick(seen, f"row_{split}", k := selected_class(table_event, table)):
        pick_patches(split, k, None)


def mistakes_section(model, chip_sets: dict, results: dict, titles: dict, mask_ratio: float,
                     precision: str = "fp32") -> None:
    """Evaluate's patch viewer: the patches behind one confusion cell (or one class's misses),
    PATCHES_PER_PAGE at a time, each in its chip with the patch outlined and the model's
    reconstruction beside it, under the evaluation's own masks. Chosen with the selectboxes, or
    by clicking a matrix cell / a table row (pick_patches)."""
    from bharateo.app import pictures

    keys = _MISTAKE_KEYS
    st.subheader("See the patches behind a cell")
    st.caption("Click a cell of a confusion matrix (or a class's row in its table, for all its "
               "misses), or choose below: each patch is shown in its chip, outlined, with the "
               "model's reconstruction beside it.")
    splits = [s for s in ("train", "held") if s in results and chip_sets.get(s) is not None]
    for key, default in ((keys["split"], "train"), (keys["target"], None),
                         (keys["predicted"], MISSES), (keys["page"], 1)):
        state.keep_widget(key, default)
    if st.session_state.get(keys["split"]) not in splits:
        st.session_state[keys["split"]] = splits[0]
    c1, c2, c3 = st.columns(3)
    split = c1.selectbox("Chips", splits, key=keys["split"], format_func=lambda s: titles[s])
    res, chips = results[split].value, chip_sets[split]
    support = np.asarray(res["confusion"]).sum(axis=1)
    present = [CLASS_NAMES[k] for k in range(NUM_CLASSES) if support[k]]
    if st.session_state.get(keys["target"]) not in present:
        errors = np.asarray(res["confusion"]).sum(axis=1) - np.diag(np.asarray(res["confusion"]))
        st.session_state[keys["target"]] = CLASS_NAMES[int(errors.argmax())]
    target_name = c2.selectbox("Target class", present, key=keys["target"])
    predicted_name = c3.selectbox("Predicted class", [MISSES, *CLASS_NAMES], key=keys["predicted"])
    target = CLASS_NAMES.index(target_name)
    predicted = None if predicted_name == MISSES else CLASS_NAMES.index(predicted_name)
    try:
        with st.spinner("Finding the patches…"):
            found = patch_predictions(model, chips, mask_ratio, precision).value
    except BharatEOError as exc:
        state.show_error(exc)
        return
    targets = chips.patch_targets().numpy()
    cells = spread_over_chips(ev.confusion_cell(targets, found["predictions"], target, predicted))
    st.markdown(f"**{cell_title(target, predicted, len(cells), int(support[target]))}** "
                f"on the {titles[split]}.")
    if not len(cells):
        st.info("No patches here: pick another cell.")
        return
    pages = max(1, -(-len(cells) // PATCHES_PER_PAGE))
    if not 1 <= int(st.session_state.get(keys["page"]) or 1) <= pages:
        st.session_state[keys["page"]] = 1  # another cell, fewer pages
    if pages > 1:
        st.number_input(f"Page (of {pages}, {PATCHES_PER_PAGE} patches each)", 1, pages,
                        key=keys["page"])
    shown, page, _ = patch_page(cells, int(st.session_state.get(keys["page"]) or 1) - 1)
    st.caption(f"Patches {page * PATCHES_PER_PAGE + 1}–{page * PATCHES_PER_PAGE + len(shown)} of "
               f"{len(cells):,}. Left: the chip, the patch outlined. Right: the model's "
               "reconstruction (hidden patches painted by the model, visible ones as they were).")
    recs = {}
    columns = st.columns(3)
    g = chips.grid_size
    for n, (k, patch) in enumerate(shown):
        k, patch = int(k), int(patch)
        if k not in recs:
            recs[k] = ev.reconstruct_chip(model, chips, k, mask_ratio, precision=precision,
                                          mask=found["mask"][k])
        chip_img, rec_img = pictures.mistake_pictures(recs[k], patch)
        hidden = "hidden" if found["mask"][k, patch] else "visible"
        said = CLASS_NAMES[int(found["predictions"][k, patch])]
        with columns[n % 3]:
            st.image([chip_img, rec_img], width=150)
            st.caption(f"chip {k}, patch row {patch // g + 1} col {patch % g + 1} ({hidden}): "
                       f"{CLASS_NAMES[target]} called {said}")
