"""Chip-store material the store, store-change and DDP tests share: two small synthetic regions
(`make_rois`) and the chip settings cut from them (`CHIPS` from the fixture regions,
`S2_CHIPS` from the shared Sentinel-2 scene)."""
from __future__ import annotations

from bharateo.data.chips import ChipConfig
from bharateo.data.roi import Roi, RoiSpec
from tests.support.fixture_tiles import synthetic_native
from tests.support.s2_fixtures import DATES, SAHARA

# 64 px chips of 8 px patches: a sea strip 6 px wide makes whole patches at least half no-data
CHIPS = ChipConfig(n_chips=45, chip_size=64, patch_size=8, holdout_roi="b", holdout_block="east",
                   n_holdout_chips=7, seed=3)
# 20 training chips of the west half and 6 held-out chips of the east half of the shared scene
S2_CHIPS = ChipConfig(n_chips=20, chip_size=64, patch_size=16, source="s2-4band", dates=DATES,
                      holdout_roi=SAHARA.name, holdout_block="east", n_holdout_chips=6, seed=4)


def make_rois():
    """Two 384 px synthetic regions (in memory, labelled as such); 'a' has a no-data strip."""
    a = synthetic_native(384, 384, seed=1, class_weights="urban")
    a[:, :40] = 0  # open sea / outside coverage along the west edge
    b = synthetic_native(384, 384, seed=2, class_weights="cropland")
    return [Roi(RoiSpec("a", 0.0, 0.0, 384), a, {"synthetic": True, "source": "fixture a"}),
            Roi(RoiSpec("b", 0.0, 0.0, 384), b, {"synthetic": True, "source": "fixture b"})]
