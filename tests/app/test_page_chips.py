"""Chips page (AppTest): guidance first, building chips, the grid, the token detail view, errors."""

import numpy as np
from streamlit.testing.v1 import AppTest

from bharateo.models.notebook import ModelConfig
from bharateo.training.experiment import RunConfig
from bharateo.data.roi import NOTEBOOK_ROIS, RoiSpec, load_roi
from bharateo.data.worldcover import CLASS_NAMES
from bharateo.app.state import CurrentModel
from tests.support.paths import APP



def small_rois(size=512):
    """The notebook's three regions, shrunk to `size` px around the same centres."""
    return [load_roi(RoiSpec(s.name, s.lon, s.lat, size)) for s in NOTEBOOK_ROIS]


def open_chips(rois=None, **state):
    at = AppTest.from_file(APP, default_timeout=60).run()
    if rois is not None:
        at.session_state["rois"] = rois
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page("pages/chips.py").run()
    assert not at.exception
    return at


def build(at, n=None, size=None, min_classes=None, holdout=None, n_holdout=None):
    if n is not None:
        at.number_input(key="cfg_n").set_value(n)
    if size is not None:
        at.select_slider(key="cfg_size").set_value(size)
    if min_classes is not None:
        at.slider(key="cfg_min").set_value(min_classes)
    if holdout is not None:
        at.selectbox(key="cfg_holdout").set_value(holdout)
    if n_holdout is not None:
        at.number_input(key="cfg_n_holdout").set_value(n_holdout)
    at.button(key="build_chips").click().run()
    assert not at.exception
    return at


def grid_captions(at) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs
            if img.caption.startswith("#")]


def token_tables(at) -> list[np.ndarray]:
    return [d.value.to_numpy() for d in at.dataframe]


def test_chips_before_regions_shows_guidance(worldcover_dir):
    at = open_chips()
    assert "Choose some on the Regions page" in at.info[0].value
    assert at.get("page_link") and not at.get("form")
    assert at.session_state["train_chips"] is None


def test_build_fills_grid_and_detail_view(worldcover_dir):
    at = build(open_chips(small_rois()), n=48)
    chips = at.session_state["train_chips"]
    assert len(chips) == 48 and at.session_state["heldout_chips"] is None
    assert at.session_state["chip_config"].n_chips == 48
    assert "Built 48 training chips" in at.success[0].value
    assert chips.chips_per_roi() == {"delhi_ncr": 16, "shekhawati": 16, "mathura_belt": 16}

    # the grid: first 24 chips with their regions, plus the two bar charts
    assert grid_captions(at) == [f"#{i} · {chips.roi_names[chips.roi_index[i]]}"
                                 for i in range(24)]
    assert at.number_input(key="chip_page").max == 2
    assert len(at.get("plotly_chart")) == 3  # chips per region, class balance, variance

    # detail view of chip 0, token 0: shapes spelled out with this chip's numbers
    journey = next(m.value for m in at.markdown if m.value.startswith("**Chip 0**"))
    tokens = chips.tokens([0])[0].numpy()
    first_mean = tokens[0].reshape(3, -1).mean(axis=1)
    for text in ("**3 × 128 × 128**", "**64 × 768**", "**64 × 128**", "768 → 128",
                 "First token's mean RGB: (" + ", ".join(f"{v:.3f}" for v in first_mean)):
        assert text in journey
    assert f"from `{chips.roi_names[chips.roi_index[0]]}`" in journey

    # token 9 (row 1, col 1): its 16 x 16 values per channel and its patch label
    at.slider(key="detail_token").set_value(9).run()
    assert not at.exception
    assert any("Token 9 (row 1, col 1)" in m.value for m in at.markdown)
    tables = token_tables(at)
    assert len(tables) == 3 and all(t.shape == (16, 16) for t in tables)
    expected = tokens[9].reshape(3, 16, 16)
    for table, channel in zip(tables, expected):
        np.testing.assert_allclose(table, channel, atol=5e-4)
    label = CLASS_NAMES[chips.patch_labels[0, 1, 1]]
    assert any("Patch label:" in m.value and f"<b>{label}</b>" in m.value for m in at.markdown)

    # another chip, and patch-label thumbnails instead of RGB
    at.number_input(key="detail_chip").set_value(30).run()
    assert any(m.value.startswith("**Chip 30**") for m in at.markdown)
    at.radio(key="chip_mode").set_value("patch labels (targets)").run()
    assert not at.exception
    assert any("dominant class" in c.value for c in at.caption)
    assert len(grid_captions(at)) == 24


def test_region_filter_and_pages(worldcover_dir):
    at = build(open_chips(small_rois()), n=48)
    chips = at.session_state["train_chips"]
    at.selectbox(key="chip_region").set_value("shekhawati").run()
    expected = [i for i in range(48) if chips.roi_names[chips.roi_index[i]] == "shekhawati"]
    assert grid_captions(at) == [f"#{i} · shekhawati" for i in expected]


def test_held_out_half(worldcover_dir):
    at = build(open_chips(small_rois()), n=32, holdout="delhi_ncr: north half", n_holdout=16)
    held = at.session_state["heldout_chips"]
    assert held is not None and len(held) == 16
    assert set(held.chips_per_roi()) == {"delhi_ncr", "shekhawati", "mathura_belt"}
    assert held.chips_per_roi()["delhi_ncr"] == 16
    assert (held.origins[:, 0] + 128 <= 256).all()  # the north half of a 512 px region
    assert "Built 32 training + 16 held-out chips" in at.success[0].value
    at.radio(key="chip_set").set_value("held-out").run()
    assert not at.exception
    assert grid_captions(at) == [f"#{i} · delhi_ncr" for i in range(16)]


def test_chip_too_big_for_the_region_is_an_error(worldcover_dir):
    tiny = [load_roi(RoiSpec("tiny", 77.23, 28.61, 192))]
    at = build(open_chips(tiny), size=256)
    assert "doesn't fit" in at.error[0].value and "192" in at.error[0].value
    assert at.session_state["train_chips"] is None
    assert "Build chips" in at.info[0].value  # still asks for a build, no traceback


def test_too_few_varied_chips_is_an_error_and_keeps_old_chips(worldcover_dir):
    at = build(open_chips(small_rois()), n=24)
    before = at.session_state["train_chips"]
    build(at, min_classes=8)
    assert "at least 8 land-cover classes" in at.error[0].value
    assert "built before" in at.error[0].value
    assert at.session_state["train_chips"] is before
    assert len(grid_captions(at)) == 24


def test_embed_dim_comes_from_the_current_model(worldcover_dir):
    model = CurrentModel(None, "run 'tiny64'", RunConfig(model=ModelConfig(embed_dim=64, heads=4)),
                         "tiny64")
    at = build(open_chips(small_rois(), model=model), n=12, size=64)
    journey = next(m.value for m in at.markdown if m.value.startswith("**Chip 0**"))
    assert "**3 × 64 × 64**" in journey and "**16 × 768**" in journey
    assert "**16 × 64**" in journey and "run 'tiny64'" in journey


def test_regions_changed_after_building_warns(worldcover_dir):
    rois = small_rois()
    at = build(open_chips(rois[:2]), n=12)
    at.session_state["rois"] = rois
    at.run()
    assert any("regions changed" in w.value for w in at.warning)


def test_token_panels_follow_the_notebook(worldcover_dir):
    """Token mean RGB and colour variance computed as the notebook does (torch, unbiased var)."""
    import torch

    from bharateo.data.chips import ChipConfig, build_chip_sets
    from bharateo.data.patches import patchify
    from bharateo.app.chips import token_view
    from bharateo.data.worldcover import labels_to_rgb_input

    chips, _ = build_chip_sets(small_rois(), ChipConfig(n_chips=6))
    view = token_view(chips, 2)
    x = torch.from_numpy(labels_to_rgb_input(chips.labels[2]))[None]
    tokens_rgb = patchify(x, 16)[0].reshape(64, 3, 16, 16)
    np.testing.assert_allclose(view.mean_rgb, tokens_rgb.mean(dim=(-1, -2)).numpy(), atol=1e-6)
    np.testing.assert_allclose(view.color_var, tokens_rgb.var(dim=(-1, -2)).mean(dim=1)
                               .reshape(8, 8).numpy(), atol=1e-6)
    np.testing.assert_array_equal(view.tokens, patchify(x, 16)[0].numpy())


def test_invalid_typed_chip_settings_block_build_and_name_the_field(worldcover_dir):
    """99999 chips (or seed -1, 0 held-out chips) turned the field red and built chips with the
    last valid value; now nothing is built and the message names the field and the range."""
    at = build(open_chips(small_rois()), n=48)
    before = at.session_state["train_chips"]
    assert len(before) == 48
    for field, value, words in (("cfg_n", 99999, "Training chips must be a whole number from 1 to 4,096 (got 99999)"),
                                ("cfg_seed", -1, "Seed must be a whole number from 0 to 2,147,483,647 (got -1)"),
                                ("cfg_n_holdout", 0, "Held-out chips must be a whole number from 1 to 1,024 (got 0)")):
        at.number_input(key=field).set_value(value)
        at.button(key="build_chips").click().run()
        assert not at.exception
        assert at.error and words in at.error[0].value and "from" in at.error[0].value
        assert at.session_state["train_chips"] is before  # the chips built before are kept
        assert at.session_state["chip_config"].n_chips == 48
        at.number_input(key=field).set_value({"cfg_n": 48, "cfg_seed": 42, "cfg_n_holdout": 64}[field])
    at = build(at, n=32)
    assert not at.error and len(at.session_state["train_chips"]) == 32


def test_chip_browsing_choices_survive_a_visit_to_another_page(worldcover_dir):
    at = build(open_chips(small_rois()), n=48)
    at.radio(key="chip_mode").set_value("patch labels (targets)")
    at.selectbox(key="chip_region").set_value("shekhawati")
    at.number_input(key="detail_chip").set_value(7)
    at.slider(key="detail_token").set_value(9).run()
    at.switch_page("app.py").run()
    at.switch_page("pages/chips.py").run()
    assert not at.exception
    assert at.radio(key="chip_mode").value == "patch labels (targets)"
    assert at.selectbox(key="chip_region").value == "shekhawati"
    assert at.number_input(key="detail_chip").value == 7
    assert at.slider(key="detail_token").value == 9


def test_min_classes_above_what_the_region_holds_says_so(worldcover_dir):
    """A chip can't have more classes than its region holds: say that, not a rate of 0."""
    from bharateo.data.chips import build_chip_sets, ChipConfig
    from bharateo.errors import ChipError
    import pytest

    rois = small_rois()[:1]
    from bharateo.data.worldcover import NUM_CLASSES, collapse_worldcover
    present = [c for c in np.unique(collapse_worldcover(rois[0].native)) if c < NUM_CLASSES]
    with pytest.raises(ChipError) as info:
        build_chip_sets(rois, ChipConfig(n_chips=24, min_classes=8))
    message = str(info.value)
    assert f"holds only {len(present)} land-cover classes" in message
    assert "Lower 'min classes'" in message
    assert "no chip from it can have at least 8 land-cover classes" in message
    assert len(present) < 8


def test_the_chips_pages_token_view_and_shapes_follow_the_bands():
    from bharateo.app import chips as views
    from tests.support.models import FAKE_BANDS, four_band_chips

    chips = four_band_chips()
    view = views.token_view(chips, 0)
    assert view.tokens_rgb.shape == (16, 4, 8, 8) and view.mean_rgb.shape == (16, 4)
    assert list(views.token_values(view, 5)) == list(FAKE_BANDS)  # one table per band, in order
    journey = views.shape_journey(chips, 0, view, 16, "test")
    assert "**4 × 32 × 32** = 4,096 values" in journey
    assert "each 4 channels × 8 × 8 px = 256 values (all b1 values, then b2, then b3, then nir)" \
        in journey
    assert "painted in the palette" not in journey  # these pixels are not class colours
    palette = views.token_view(_palette_chips(), 0)
    assert list(views.token_values(palette, 0)) == ["R (red)", "G (green)", "B (blue)"]


def _palette_chips():
    from bharateo.data.chips import ChipSet
    from tests.support.models import four_band_chips

    chips = four_band_chips(n=2)
    return ChipSet(chips.labels, chips.patch_labels, chips.roi_index, chips.origins, ["fake"],
                   32, 8)
