"""Home page: the token accounting calculator reproduces the notebook's table and follows its sliders."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
ROWS = ["tokens per chip", "values per token", "total token presentations",
        "visible token inputs", "masked token targets", "masked pixel regression targets"]


@pytest.fixture
def home(worldcover_dir):  # a local folder source: the sidebar never asks the network
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    return at


def token_table(at) -> dict[str, list[str]]:
    """{column header: values in ROWS order} of the calculator's table."""
    (frame,) = [d.value for d in at.dataframe if "" in d.value.columns]
    assert frame[""].tolist() == ROWS
    return {col: frame[col].tolist() for col in frame.columns if col}


def run_column(table):
    (col,) = [c for c in table if c.startswith("this run")]
    return col, table[col]


def test_defaults_reproduce_the_notebook(home):
    table = token_table(home)
    col, this_run = run_column(table)
    assert col == "this run (384 chips x 20 epochs)"
    assert this_run == ["64", "768", "491,520", "122,880", "368,640", "94,371,840"]
    assert table["BharatEO-v0 (1M chips x 100 epochs)"] == [
        "64", "768", "6,400,000,000", "1,600,000,000", "4,800,000,000", "1,228,800,000,000"]


def test_chips_slider_changes_this_run_only(home):
    home.slider[0].set_value(768).run()  # "chips"
    assert not home.exception
    table = token_table(home)
    col, this_run = run_column(table)
    assert col == "this run (768 chips x 20 epochs)"
    assert this_run[2:] == ["983,040", "245,760", "737,280", "188,743,680"]
    assert table["BharatEO-v0 (1M chips x 100 epochs)"][2] == "6,400,000,000"


def test_mask_ratio_changes_both_columns(home):
    home.slider[2].set_value(0.5).run()  # "mask ratio"
    assert not home.exception
    table = token_table(home)
    _, this_run = run_column(table)
    assert this_run[2:] == ["491,520", "245,760", "245,760", "62,914,560"]
    assert table["BharatEO-v0 (1M chips x 100 epochs)"][3:5] == ["3,200,000,000", "3,200,000,000"]


def test_channels_change_values_per_token(home):
    home.selectbox[0].set_value(10).run()  # Sentinel-2 10-band
    assert not home.exception
    _, this_run = run_column(token_table(home))
    assert this_run[1] == "2,560"
