"""Exports a teacher can download: a saved run as a zip, a chart's data as CSV.

Both are built in memory (no temporary files left behind). A run's zip holds only the plain
files directly in its folder whose names pass the run-file rule below (no links, no folders, no
reservation marker or half-written temporary files), under the run's (already checked) name.
"""
from __future__ import annotations

import csv
import io
import re
import stat
import zipfile

from bharateo.errors import RunNotFoundError, RunSaveError
from bharateo.storage.runfolder import read_run_bytes
from bharateo.storage.runs import SavedRun, validate_run_name

ARCHIVE_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\.(pt|json)$")  # model.pt, config.json, results
MAX_ARCHIVE_BYTES = 512 * 2**20  # the largest model the lab allows is ~200 MB of fp32 weights


def run_archive(run: SavedRun) -> bytes:
    """The run's folder as zip bytes: `<run-name>/<file>` for each of its files (model.pt,
    config.json, history.json, metrics.json and the results stored beside it).

    Raises RunNotFoundError when the run is no longer saved, RunSaveError when its files add up
    to more than MAX_ARCHIVE_BYTES.
    """
    name = validate_run_name(run.name)
    try:
        entries = sorted(run.path.iterdir())
    except OSError:
        raise RunNotFoundError(f"Run '{name}' is no longer saved.") from None
    files, total = [], 0
    for path in entries:
        try:
            info = path.lstat()
        except OSError:  # removed meanwhile
            continue
        if stat.S_ISREG(info.st_mode) and ARCHIVE_FILE_RE.match(path.name):
            files.append(path)
            total += info.st_size
    if not any(p.name == "config.json" for p in files):
        raise RunNotFoundError(f"Run '{name}' is no longer saved.")
    if total > MAX_ARCHIVE_BYTES:
        raise RunSaveError(f"Run '{name}' is {total / 2**20:,.0f} MB, too big to download as one "
                           f"archive (at most {MAX_ARCHIVE_BYTES // 2**20} MB): copy its folder "
                           f"{run.path} instead.")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            try:
                data = read_run_bytes(run.path, path.name)  # never through a link swapped in
            except OSError:
                continue
            archive.writestr(f"{name}/{path.name}", data)
    return buffer.getvalue()


def csv_bytes(rows: list[dict], columns: list[str] | None = None) -> bytes:
    """Rows of a chart's data as UTF-8 CSV with a header (columns: the first row's keys unless
    given). A cell starting with = + - @ is text a spreadsheet would run as a formula, so it is
    prefixed with ' (numbers are written as numbers); None and NaN (an undefined score) are empty."""
    columns = columns or (list(rows[0]) if rows else [])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return out.getvalue().encode("utf-8")


def _cell(value):
    if value is None or (isinstance(value, float) and value != value):  # a DataFrame's None is NaN
        return ""  # an undefined score (class_table) is empty, as in the app, not "nan"
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


# --- each chart's data as rows (the CSV downloads) -----------------------------------------------
HISTORY_COLUMNS = ("run", "kind", "epoch", "step", "progress", "loss", "rec", "esa", "rec_mae",
                   "esa_acc", "esa_balanced", "majority_acc", "heldout_rec_mae", "heldout_esa_acc",
                   "heldout_esa_balanced", "heldout_majority_acc", "lr", "chips_per_s", "elapsed")


def series_rows(series: list[dict]) -> list[dict]:
    """The loss / accuracy charts' data: each series' per-step then per-epoch rows (kind "step" or
    "epoch"), in HISTORY_COLUMNS. `series`: {"label", "steps", "epochs"} as the charts take them."""
    rows = []
    for s in series:
        for kind in ("step", "epoch"):
            for row in s.get(f"{kind}s") or []:
                rows.append({"run": s["label"], "kind": kind,
                             **{c: row.get(c) for c in HISTORY_COLUMNS[2:]},
                             "progress": row.get("progress", row.get("epoch"))})
    return rows


def confusion_rows(result: dict, class_names: list[str]) -> list[dict]:
    """An evaluation's confusion matrix as rows: target class, predicted class, patches, and the
    share of the target class's patches (the normalised matrix)."""
    rows = []
    for i, counts in enumerate(result["confusion"]):
        total = sum(counts)
        for j, count in enumerate(counts):
            rows.append({"target": class_names[i], "predicted": class_names[j], "patches": count,
                         "share_of_target": count / total if total else None})
    return rows
