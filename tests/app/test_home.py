"""Home page: the token accounting calculator reproduces the notebook's table and follows its sliders."""

import pytest
from streamlit.testing.v1 import AppTest

from bharateo.data.roi import SAMPLE_ROIS, Roi, load_roi
from tests.support.pages import sidebar_text
from bharateo.data.worldcover import DataSource, bundled_tile_path
from tests.support.paths import APP, REPO, SHARED

V0 = "BharatEO-v0 (1M chips x 100 epochs, 10 Sentinel-2 bands)"
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
    # the notebook's projection: 10 x 16 x 16 = 2,560 Sentinel-2 values per token (its text)
    assert table[V0] == [
        "64", "2,560", "6,400,000,000", "1,600,000,000", "4,800,000,000", "1,228,800,000,000"]


def test_chips_slider_changes_this_run_only(home):
    home.slider[0].set_value(768).run()  # "chips"
    assert not home.exception
    table = token_table(home)
    col, this_run = run_column(table)
    assert col == "this run (768 chips x 20 epochs)"
    assert this_run[2:] == ["983,040", "245,760", "737,280", "188,743,680"]
    assert table[V0][2] == "6,400,000,000"


def test_mask_ratio_changes_both_columns(home):
    home.slider[2].set_value(0.5).run()  # "mask ratio"
    assert not home.exception
    table = token_table(home)
    _, this_run = run_column(table)
    assert this_run[2:] == ["491,520", "245,760", "245,760", "62,914,560"]
    assert table[V0][3:5] == ["3,200,000,000", "3,200,000,000"]


def test_channels_change_values_per_token(home):
    home.selectbox[0].set_value(10).run()  # Sentinel-2 10-band
    assert not home.exception
    _, this_run = run_column(token_table(home))
    assert this_run[1] == "2,560"
    home.selectbox[0].set_value(3).run()  # palette RGB: this run only, v0 stays 10 bands
    table = token_table(home)
    assert run_column(table)[1][1] == "768" and table[V0][1] == "2,560"


def test_cli_tokens_and_home_show_the_same_v0_column(home, capsys):
    from bharateo import cli

    assert cli.main(["tokens"]) == 0
    out = capsys.readouterr().out
    v0_block = out[out.index(V0 + ":"):]
    for value in token_table(home)[V0][:5]:
        assert value in v0_block


# --- the data in use (issue 10): Home and the sidebar name it, honestly -------------------------
REAL_TILE = bundled_tile_path("N00E006") or (
    SHARED / "data" / "worldcover"
    / "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif")


def data_in_use(at) -> str:
    (line,) = [m.value for m in at.markdown if m.value.startswith("**Data in use:**")]
    return line


def test_defaults_are_north_india_when_its_tile_is_there(home):
    assert "north India (tile N27E075)" in data_in_use(home)
    assert "north India (tile N27E075)" in sidebar_text(home)


@pytest.mark.skipif(not REAL_TILE.is_file(), reason="real N00E006 tile absent")
def test_home_and_sidebar_name_sao_tome_when_that_is_the_data(monkeypatch):
    """Home said 'pixels of north India' while every region was São Tomé."""
    monkeypatch.setenv("BHARATEO_WORLDCOVER_DIR", str(REAL_TILE.parent))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert "São Tomé and Príncipe (tile N00E006)" in data_in_use(at)
    assert "north India" not in data_in_use(at) and "north India" not in sidebar_text(at)
    source = DataSource("folder", str(REAL_TILE.parent))
    at.session_state["rois"] = [load_roi(SAMPLE_ROIS[0], source)]
    at.run()
    assert not at.exception
    assert data_in_use(at) == ("**Data in use:** **ESA WorldCover 10 m 2021 v200**: sao_tome "
                               "(São Tomé and Príncipe; tile N00E006).")
    sidebar = sidebar_text(at)
    assert "ESA WorldCover 10 m 2021 v200" in sidebar and "Copernicus" in sidebar
    assert not at.warning


def test_fixture_pixels_are_never_called_worldcover(home, worldcover_dir):
    home.session_state["rois"] = [load_roi(worldcover_dir.rois["delhi_ncr"])]
    home.run()
    assert data_in_use(home).startswith("**Data in use:** **synthetic test fixture**: delhi_ncr")
    assert any("synthetic test fixture" in w.value for w in home.warning)
    sidebar = sidebar_text(home)
    assert "synthetic test fixture" in sidebar and "Copernicus" not in sidebar


def test_unverified_pixels_are_called_so(home, worldcover_dir, monkeypatch):
    monkeypatch.setattr(Roi, "data_label", property(lambda self: "not verified as ESA WorldCover"))
    monkeypatch.setattr(Roi, "verified", property(lambda self: False))
    home.session_state["rois"] = [load_roi(worldcover_dir.rois["delhi_ncr"])]
    home.run()
    assert "**not verified as ESA WorldCover**: delhi_ncr" in data_in_use(home)
    assert any("not verified as ESA WorldCover" in w.value for w in home.warning)
    assert "not verified as ESA WorldCover" in sidebar_text(home)
    assert "Copernicus" not in sidebar_text(home)


def test_calculator_choices_survive_a_visit_to_another_page(home):
    home.slider(key="calc_chips").set_value(1024)
    home.slider(key="calc_mask_ratio").set_value(0.5)
    home.selectbox(key="calc_channels").set_value(10).run()
    home.switch_page("pages/regions.py").run()
    home.switch_page("app.py").run()
    assert not home.exception
    assert home.slider(key="calc_chips").value == 1024
    assert home.slider(key="calc_mask_ratio").value == 0.5
    assert home.selectbox(key="calc_channels").value == 10
    col, _ = run_column(token_table(home))
    assert col == "this run (1,024 chips x 20 epochs)"


# --- Home's first paint doesn't wait for torch (issue 12) ---------------------------------------
HOME_WITHOUT_TORCH = r"""
import json, sys

class RefuseTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"{name} is blocked by the test")
        return None

sys.meta_path.insert(0, RefuseTorch())
from streamlit.testing.v1 import AppTest

at = AppTest.from_file(sys.argv[1], default_timeout=60).run()
print(json.dumps({"title": [t.value for t in at.title],
                  "subheaders": [s.value for s in at.subheader],
                  "sidebar": [m.value for m in at.sidebar.markdown],
                  "tables": [list(d.value.columns) for d in at.dataframe],
                  "exceptions": [e.message for e in at.exception]}))
"""


def test_home_draws_everything_without_torch(worldcover_dir):
    """With torch unimportable, a new session's first run (state, lesson address, sidebar) and
    the whole of Home, token calculator included (bharateo.training.tokens counts with the torch-free
    bharateo.models.masking), are drawn: a class opening Home on a fresh server waits for no torch
    import (seconds on a laptop, 24 % of a fresh server's profile)."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HOME_WITHOUT_TORCH, APP], capture_output=True,
                          text=True, timeout=300, cwd=str(REPO))
    assert done.returncode == 0, done.stderr[-2000:]
    page = json.loads(done.stdout.strip().splitlines()[-1])
    assert page["title"] == ["BharatEO Lab"]
    assert page["subheaders"][:2] == ["Running a lesson", "Token accounting calculator"]
    assert "### Lab state" in page["sidebar"]
    assert page["exceptions"] == []
    assert any(V0 in cols for cols in page["tables"])


def test_the_calculator_and_diagram_start_at_the_declared_defaults():
    """Home can't read the declarations without importing torch (bharateo.data.chips does), so it
    writes the notebook's numbers itself; they must stay the declared defaults (issue 12.2)."""
    from bharateo.app.home import CALCULATOR_DEFAULTS, PIPELINE_DOT
    from bharateo.data.chips import ChipConfig
    from bharateo.models.notebook import ModelConfig, num_masked
    from bharateo.data.sources import DEFAULT_SOURCE, pixel_source
    from bharateo.training.loop import TrainConfig

    chips, model, train = ChipConfig(), ModelConfig(), TrainConfig()
    assert CALCULATOR_DEFAULTS == {
        "calc_chips": chips.n_chips, "calc_epochs": train.epochs,
        "calc_mask_ratio": train.mask_ratio, "calc_channels": pixel_source(DEFAULT_SOURCE).channels,
        "calc_chip_size": chips.chip_size, "calc_patch_size": chips.patch_size}
    tokens = (chips.chip_size // chips.patch_size) ** 2
    visible = tokens - num_masked(tokens, train.mask_ratio)
    for text in (f"{chips.chip_size} x {chips.chip_size}", f"mask {train.mask_ratio:.0%}",
                 f"{visible} visible", f"encoder {tokens} x {model.embed_dim}"):
        assert text in PIPELINE_DOT, text


def test_running_a_lesson_names_every_page_in_the_navigation(home):
    """The walkthrough's list stopped at Evaluate: every page app.py navigates to (Home aside)
    has a numbered line saying what it is for."""
    import re

    titles = re.findall(r'st\.Page\([^)]*title="([^"]+)"', (REPO / "app.py").read_text())
    (steps,) = [m.value for m in home.markdown if m.value.startswith("1. **")]
    for title in titles[1:]:  # the first is Home itself
        assert re.search(rf"^\d+\. \*\*{re.escape(title)}\*\*: \w", steps, re.M), title
    assert len(titles) == 7 and "Inside the model" in titles

