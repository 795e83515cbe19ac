"""Bad input and lost state (issue 10, section 6), outside the pages: exact masked-token counts,
unreadable weights and undefined scores in the CLI, the Evaluate reading, chart and text slips."""
from __future__ import annotations

import json
from decimal import Decimal
from itertools import product

import numpy as np
import pytest
import torch

from bharateo import cli
from bharateo.app import figures, pictures, results
from bharateo.errors import RunNotFoundError
from bharateo.models.notebook import num_masked, random_patch_mask
from bharateo.data.roi import RoiSpec, load_roi
from bharateo.storage.runs import list_runs, load_model, unreadable_weights_message
from bharateo.training.tokens import token_accounting
from bharateo.words import ordinal, plural
from bharateo.app.state import CurrentModel
from tests.support.pages import open_page
from tests.support.runs import SMALL_CONFIG, result_dict, save_untrained_run


# --- masked-token count --------------------------------------------------------------------------
RATIOS = [f"0.{k:02d}" for k in range(1, 100)] + ["0.125", "0.333", "0.6667", "0.999"]


@pytest.mark.parametrize("n", [4, 16, 49, 64, 100, 144, 196, 256, 400, 1000, 1024])
def test_num_masked_is_exact_decimal_maths(n):
    """100 tokens at 0.57 mask 57 (floats gave 56; also 0.29 and 0.58), for every ratio typed."""
    for text in RATIOS:
        expected = min(max(int(Decimal(text) * n), 1), n - 1)
        assert num_masked(n, float(text)) == expected, (n, text)
    for k in range(1, 20):  # a slider's 0.05 steps arrive as 0.15000000000000002 and the like
        assert num_masked(n, 0.05 * k) == min(max(int(Decimal(5 * k) / 100 * n), 1), n - 1)


def test_mask_token_table_and_captions_share_the_exact_count():
    assert num_masked(64, 0.75) == 48  # the notebook's count, unchanged
    assert [num_masked(100, r) for r in (0.57, 0.29, 0.58)] == [57, 29, 58]
    mask = random_patch_mask(3, 100, 0.57, torch.Generator().manual_seed(0))
    assert mask.sum(dim=1).tolist() == [57, 57, 57]
    table = token_accounting(1, 1, 0.57, chip_size=160, patch_size=16)  # 10 x 10 = 100 tokens
    assert (table.tokens_per_chip, table.masked_tokens, table.visible_tokens) == (100, 57, 43)


# --- unreadable weights: one plain message for the CLI and the app --------------------------------
DAMAGES = {
    "pickled module": lambda path: torch.save(torch.nn.Linear(2, 2), path),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "not a state_dict": lambda path: torch.save([torch.zeros(2)], path),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_cli_says_a_damaged_model_pt_in_words_exit_2(damage, capsys):
    run = save_untrained_run("broken")
    DAMAGES[damage](run.path / "model.pt")
    with pytest.raises(RunNotFoundError) as raised:
        load_model(run)
    assert str(raised.value) == unreadable_weights_message("broken")
    assert cli.main(["evaluate", "broken"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {unreadable_weights_message('broken')}\n"
    assert "\x1b" not in err and "Traceback" not in err


@pytest.mark.app  # drives a page (AppTest): the app tier, not the quick one
def test_the_app_shows_the_same_message_without_terminal_codes():
    run = save_untrained_run("broken")
    DAMAGES["pickled module"](run.path / "model.pt")
    at = open_page("pages/evaluate.py")
    at.selectbox(key="evaluate_saved_run").select("broken").run()
    assert not at.exception
    assert [e.value for e in at.error] == [unreadable_weights_message("broken")]
    assert at.session_state["model"] is None


def test_cli_train_refuses_the_values_train_blocks_exit_2(capsys):
    """The Train page's limits hold on the command line too, named by flag; nothing is trained."""
    assert cli.main(["train", "--run", "bad", "--n-chips", "99999", "--epochs", "-3", "--lr", "0"]) == 2
    err = capsys.readouterr().err
    for words in ("--n-chips: Chips must be a whole number from 16 to 4,096 (got 99999)",
                  "--epochs: Epochs must be a whole number from 1 to 500 (got -3)",
                  "--lr: Learning rate must be a number from 1e-06 to 10 (got 0)"):
        assert words in err
    assert "Traceback" not in err and list_runs() == []


# --- undefined scores: None, shown as "—" in the CLI as in the app --------------------------------
def test_cli_prints_a_dash_for_a_class_never_predicted(worldcover_dir, capsys):
    save_untrained_run("untrained")
    assert cli.main(["evaluate", "untrained", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["train"]
    assert cli.main(["evaluate", "untrained"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
             if line.startswith("  ") and " P " in line}
    confusion = np.array(result["confusion"])
    never = [row for row, predicted in zip(result["per_class"], confusion.sum(axis=0))
             if row["support"] and not predicted]
    assert never, "the untrained model predicts every class: no case to check"
    for row in never:
        assert row["precision"] is None and row["f1"] is None
        assert " P — " in lines[row["class"]] and "F1 —" in lines[row["class"]]
    for row in result["per_class"]:
        if row["precision"] is not None and row["support"]:
            assert f" P {row['precision']:.3f} " in lines[row["class"]]


# --- the Evaluate reading ----------------------------------------------------------------------
def test_gap_reading_never_says_carries_over_and_not_learned_about_one_run():
    support = [100, 700, 100, 100, 0, 0, 0, 0]  # 'cropland' is 70 %: the always-guess baseline
    seen = set()
    for right_t, right_h in product(range(0, 101, 10), repeat=2):
        diag_t = [right_t, 700, right_t, right_t // 2, 0, 0, 0, 0]
        diag_h = [right_h, 690, right_h, right_h // 2, 0, 0, 0, 0]
        train = result_dict(sum(diag_t) / 1000, diag_t, support)
        held = result_dict(sum(diag_h) / 1000, diag_h, support)
        text = results.gap_reading(train, held, "x")
        carries = "learned carries over" in text
        seen.add(carries)
        assert not (carries and "not learned much" in text), text
        if carries:  # only said when both splits beat always answering 'cropland'
            assert train["accuracy"] > 0.72 and held["accuracy"] > 0.72, text
    assert seen == {True, False}


# --- charts and words ----------------------------------------------------------------------------
def test_training_charts_keep_the_legend_off_the_axis_title():
    series = {"label": "run", "steps": [], "patch_loss_weight": 0.2,
              "epochs": [{"epoch": 1, "loss": 1.0, "rec": 0.5, "esa": 1.0, "rec_mae": 0.2,
                          "esa_acc": 0.5, "heldout_rec_mae": 0.3, "heldout_esa_acc": 0.4}]}
    heights = []
    for runs in (1, 2, 4):
        for make in (figures.loss_figure, figures.accuracy_figure):
            fig = make([{**series, "label": f"run{i}"} for i in range(runs)])
            assert fig.layout.xaxis.title.text is None and "per epoch" in fig.layout.title.text
            assert fig.layout.legend.yanchor == "top" and fig.layout.legend.y < 0
        heights.append(fig.layout.height)
    assert heights[0] < heights[1] < heights[2]  # a row more per run: the plot keeps its height


def test_counted_words():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 112)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "112th"]
    assert (plural(1, "epoch"), plural(2, "epoch"), plural(1024, "chip")) == \
        ("1 epoch", "2 epochs", "1,024 chips")
    entry = CurrentModel(None, "run 'x'", SMALL_CONFIG, "x", epochs_done=1)
    assert "× 1 epoch at" in results.describe_model(entry)
    run = save_untrained_run("one-epoch")
    from bharateo.app.results import _run_label
    assert " · 1 epoch" in _run_label(run) and "epochs" not in _run_label(run)


def test_region_picture_caption_uses_ordinals(worldcover_dir):
    roi = load_roi(RoiSpec("x", 77.23, 28.61, 1024))
    caption = pictures.roi_picture(roi, max_side=512).caption
    assert "every 2nd pixel" in caption and "2th" not in caption


@pytest.mark.app  # drives a page (AppTest): the app tier, not the quick one
def test_a_failed_run_pick_stays_on_screen_until_the_next_pick():
    save_untrained_run("fine")
    DAMAGES["truncated"](save_untrained_run("broken").path / "model.pt")
    at = open_page("pages/reconstruct.py")
    at.selectbox(key="reconstruct_saved_run").select("broken").run()
    assert [e.value for e in at.error] == [unreadable_weights_message("broken")]
    at.run()  # a rerun the user did not ask for keeps it
    assert [e.value for e in at.error] == [unreadable_weights_message("broken")]
    at.selectbox(key="reconstruct_saved_run").select("fine").run()
    assert not at.error and at.session_state["model"].run == "fine"


# --- issue 20.4: memory is checked before a training starts -------------------------------------
def test_cli_refuses_a_training_that_cannot_fit_in_memory(monkeypatch, capsys, tmp_path):
    from bharateo.cli import main

    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("BHARATEO_CHECKPOINT_DIR", str(runs))
    monkeypatch.setenv("BHARATEO_MEMORY_BYTES", str(100 * 2**20))
    assert main(["train", "--run", "too-big", "--n-chips", "4096", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "run out of memory" in err and "Reduce chips, chip size or model size" in err, err
    assert err.splitlines()[-1].startswith("error: ") and "Traceback" not in err
    assert not list(runs.iterdir())  # nothing reserved or built


def test_the_memory_estimate_grows_with_chips_chip_size_model_and_batch():
    from dataclasses import replace

    from bharateo.jobs.limits import training_memory
    from bharateo.training.experiment import RunConfig

    base = RunConfig()
    before = training_memory(base)
    assert training_memory(replace(base, chips=replace(base.chips, n_chips=4096))).chips \
        == before.chips * 4096 // base.chips.n_chips
    assert training_memory(replace(base, chips=replace(base.chips, chip_size=256))).activations \
        > 4 * before.activations  # 4x the tokens, and attention grows with their square
    assert training_memory(replace(base, model=replace(base.model, embed_dim=256))).model \
        > 3 * before.model
    assert training_memory(replace(base, train=replace(base.train, batch_size=64))).activations \
        == 4 * before.activations
