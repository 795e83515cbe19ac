"""Evaluate: what the patch head gets right and wrong, on training chips and on a held-out region."""
import streamlit as st

from bharateo.app import figures
from bharateo.app.downloads import csv_button
from bharateo.jobs.looks import Filling
from bharateo.app.results import (baseline_delta, class_table_display, evaluations_or_filling,
                                  follow_clicks, gap_reading, held_out_by_run,
                                  held_region_name, mistakes_section, model_and_chips,
                                  normalised_confusion, score_percent, scored_patches,
                                  show_filling, VERDICT_WORDS)
from bharateo.app.sidebar import synthetic_banner
from bharateo.app.startup import page_setup
from bharateo.app.state import guidance, keep_widget, show_error
from bharateo.errors import BharatEOError
from bharateo.training.evaluate import class_mae, class_table, quality_of, quality_reading
from bharateo.storage.export import confusion_rows
from bharateo.words import plural
from bharateo.data.worldcover import CLASS_NAMES

page_setup("evaluate")
st.title("Evaluate")
st.caption("The ESA patch head names a land-cover class for each of a chip's 64 patches. The "
           "confusion matrix counts, for every true (target) class, which class the model said. "
           "Compare the chips it trained on with a region it never saw.")
synthetic_banner()

current, run, train_chips, held_chips = model_and_chips("evaluate")
model, config = current.model, current.config
ratio = config.train.mask_ratio

# computed off the page: stored by the training worker, else filled in in the background
results = evaluations_or_filling(model, train_chips, held_chips, ratio, run, config.train.precision)
if failed := [r.error for r in results.values() if isinstance(r, Filling) and r.error]:
    show_error(BharatEOError(failed[0]))
    st.stop()
if any(isinstance(r, Filling) for r in results.values()):
    show_filling("this run's scores", [r for r in results.values() if isinstance(r, Filling)])
    st.stop()
held_name = held_region_name(held_chips) if held_chips is not None else None
train_res = results["train"].value
held_res = results["held"].value if "held" in results else None

st.info(gap_reading(train_res, held_res, held_name,
                    held_out_by_run(config, held_chips) if held_chips else True,
                    config.train.class_weighting),
        icon=":material/school:")
st.caption(f"Predictions are made with {ratio:.0%} of each chip's patches hidden (the run's "
           "training mask ratio), with the same fixed masks every time.")
keep_widget("eval_normalised", False)
normalised = st.toggle("Row-normalised", key="eval_normalised",
                       help="Each row is a true (target) class and sums to 100 %: the cells show "
                            "how that class's patches were labelled, so the diagonal is its recall. "
                            "Off: patch counts.")

columns = dict(zip(["train", "held"], st.columns(2, gap="large")))
titles = {"train": f"Training chips ({len(train_chips)})",
          "held": f"Held-out region: {held_name} ({len(held_chips)})" if held_chips is not None else ""}
TABLE_COLUMNS = ("class", "precision", "recall", "F1", "support", "masked MAE")
num = dict(width=52, alignment="right")
table_format = {
    "class": st.column_config.TextColumn("class", width=130),  # fits wetland_mangrove
    "precision": st.column_config.Column(  # wider: the header itself needs ~70 px
        "precision", help="Of the patches it called this class, the share that were",
        **{**num, "width": 72}),
    "recall": st.column_config.Column("recall", help="Of this class's patches, the share it found", **num),
    "F1": st.column_config.Column("F1", help="Harmonic mean of precision and recall", **num),
    "support": st.column_config.Column(
        "support", help="Target patches of this class (the row sum of the matrix)", **num),
    "masked MAE": st.column_config.Column(
        "MAE", help="Mean |error| on hidden pixels of this class, in the model's input values "
                    "(palette RGB 0–1, or Sentinel-2 reflectance normalised per band)", **num),
}
for split, col in columns.items():
    with col:
        if split not in results:
            st.subheader("Held-out region")
            guidance("No held-out region in these chips. To test the model on land it never saw, "
                        "hold out a region (or half of one) on the Chips page, then train a run with "
                        "those chips: its held-out chips appear here.", "chips", "Go to Chips")
            continue
        res = results[split].value
        st.subheader(titles[split])
        q = quality_of(res)
        m1, m2, m3 = st.columns(3)
        m1.metric("Patch accuracy", f"{res['accuracy']:.1%}", **baseline_delta(q),
                  help="Share of all patches whose class the model names correctly; the arrow "
                       "says how many percentage points it is above (or below) the majority "
                       "baseline, grey when within the margin.")
        m2.metric("Majority baseline", score_percent(q["majority_accuracy"]),
                  help=f"Always answering '{q['majority_class']}', the most common class here, "
                       "would score this on the same patches (no-data left out).")
        m3.metric("Balanced accuracy", score_percent(q["balanced_accuracy"]),
                  help="Mean recall over the classes present, so every class counts the same; "
                       "answering one class everywhere scores "
                       f"{score_percent(q['balanced_floor'])} here.")
        m1, m2, m3 = st.columns(3)
        m1.metric("Reading", VERDICT_WORDS.get(q["verdict"], "—"),
                  help=quality_reading(q, "these chips", config.train.class_weighting))
        m2.metric("Masked MAE", "—" if res["masked_mae"] is None else f"{res['masked_mae']:.3f}",
                  help="Mean |error| over hidden pixels, in the model's input values (palette RGB "
                       "0–1, or Sentinel-2 reflectance normalised per band): how well it paints "
                       "hidden patches back.")
        ignored = int(res.get("ignored_patches", 0))
        m3.metric("Patches", f"{scored_patches(res, train_chips.grid_size):,}",
                  help=f"{plural(res['chips'], 'chip')} × {train_chips.grid_size ** 2} patches"
                       + (f", less {ignored:,} no-data patches (at least half sea or outside "
                          "coverage), which are left out of every score here" if ignored else ""))
        clicked = st.plotly_chart(
            figures.confusion_heatmap(res["confusion"], normalised_confusion(res), normalised,
                                      title="ESA patch classification confusion"),
            key=f"eval_confusion_{split}", on_select="rerun", selection_mode="points")
        table = class_table_display(res)
        row = st.dataframe(table, hide_index=True, column_config=table_format,
                           column_order=TABLE_COLUMNS, key=f"eval_table_{split}",
                           on_select="rerun", selection_mode="single-row")
        follow_clicks(split, clicked, row, table)  # a clicked cell or row: its patches below
        if absent := [r["class"] for r in res["per_class"] if not r["support"]]:
            st.caption(f"— : no score. {', '.join(absent)} had no target patches in these chips, "
                       "so their recall, F1 and MAE are not given (a share of zero patches), and "
                       "precision is — for a class the model never named.")
        a, b = st.columns(2)
        with a:
            csv_button("confusion matrix (CSV)", lambda res=res: confusion_rows(res, CLASS_NAMES),
                       f"confusion_{split}.csv", f"eval_confusion_csv_{split}")
        with b:
            csv_button("per-class table (CSV)", lambda res=res: class_table(res).to_dict("records"),
                       f"per_class_{split}.csv", f"eval_table_csv_{split}")

mistakes_section(model, {"train": train_chips, "held": held_chips}, results, titles, ratio,
                 config.train.precision)

st.plotly_chart(figures.per_class_mae_chart(
    {"training chips": class_mae(train_res),
     **({f"held-out ({held_name})": class_mae(held_res)} if held_res else {})}),
    key="eval_class_mae")
stored = [r for r in results.values() if r.filename]
how = {"file": "read back from", "memory": "computed earlier, stored in",
       "computed": "computed now and stored in"}
if run is not None and stored:
    st.caption(f"Results for run '{run.name}': "
               + "; ".join(f"{how[r.source]} {r.filename}" for r in stored) + " beside the run.")
else:
    st.caption("This model has no saved run, so the results are kept in memory only.")
