"""Channels from the data: the band list travels from the pixel source through the chips to the
model's input channels and the token accounting (bharateo/data/sources.py, ChipSet.bands)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bharateo.training import evaluate as ev
from bharateo.data import sources
from bharateo.data.chips import ChipConfig, ChipSet, build_chip_sets
from bharateo.errors import ChipError, ConfigError
from bharateo.models.notebook import ModelConfig
from bharateo.training.experiment import RunConfig
from bharateo.data.roi import Roi, RoiSpec
from bharateo.training.loop import EpochMetrics, TrainConfig, TrainingEnd, make_model, train
from bharateo.data.worldcover import PALETTE_BANDS
from tests.support.fixture_tiles import synthetic_native
from tests.support.models import FAKE_BANDS, four_band_chips

@pytest.fixture
def fake_source(monkeypatch):
    """A 4-band pixel source registered for one test."""
    source = sources.PixelSource("fake-4band", "fake 4 band", FAKE_BANDS, "test bands")
    monkeypatch.setitem(sources.PIXEL_SOURCES, source.name, source)
    return source


def test_worldcover_chips_carry_the_palette_bands():
    rois = [Roi(RoiSpec("a", 0.0, 0.0, 256), synthetic_native(256, 256, seed=1))]
    chips, _ = build_chip_sets(rois, ChipConfig(n_chips=4, chip_size=64))
    assert sources.pixel_source(ChipConfig().source).bands == PALETTE_BANDS
    assert chips.bands == PALETTE_BANDS and chips.channels == len(PALETTE_BANDS)
    assert chips.tokens().shape == (4, 16, chips.channels * 16 * 16)
    config = RunConfig()
    assert config.model.in_chans == chips.channels
    assert config.tokens().channels == chips.channels


def test_four_band_chips_make_a_four_channel_model_that_trains():
    chips = four_band_chips()
    tokens = chips.tokens()
    assert chips.channels == 4 and tokens.shape == (12, 16, 4 * 8 * 8)
    # channel-major tokens: token (row 1, col 2) of chip 3, band 2 is that p x p block of pixels
    p = chips.patch_size
    block = chips.pixels[3, 2, p:2 * p, 2 * p:3 * p].ravel()
    assert torch.equal(tokens[3, 1 * 4 + 2, 2 * p * p:3 * p * p], torch.from_numpy(block))
    config = ModelConfig(img_size=32, patch_size=8, in_chans=chips.channels, embed_dim=16,
                         depth=1, heads=2)
    model = make_model(config, seed=0)
    assert model.config.token_dim == 4 * 8 * 8 == model.patch_embed.in_features
    events = list(train(model, chips, TrainConfig(epochs=1, batch_size=4), heldout=chips))
    end = events[-1]
    assert isinstance(end, TrainingEnd) and end.reason == "finished"
    epoch = next(e for e in events if isinstance(e, EpochMetrics))
    assert np.isfinite([epoch.loss, epoch.heldout_rec_mae]).all()
    rec = ev.reconstruct_chip(model, chips, 0, 0.5)
    assert rec.target.shape == (32, 32, 4) and rec.predicted.shape == (32, 32, 4)
    assert ev.evaluate(model, chips, 0.5)["masked_mae"] is not None


def test_model_and_chips_must_agree_on_channels():
    chips = four_band_chips()
    model = make_model(ModelConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, heads=2), 0)
    with pytest.raises(ConfigError, match="3 input channels, but the chips have 4"):
        next(train(model, chips, TrainConfig(epochs=1)))
    with pytest.raises(ConfigError, match="reads 3 channels, these chips have 4"):
        ev.predict(model, chips, 0.5)


def test_run_config_takes_its_input_channels_from_the_source(fake_source):
    config = RunConfig(chips=ChipConfig(source=fake_source.name), model=ModelConfig(in_chans=3))
    assert config.validate().model.in_chans == 4
    account = config.tokens()
    assert account.channels == 4 and account.token_dim == 4 * 16 * 16 == 1024
    # saved and read back, the source (and so the channels) survive
    assert RunConfig.from_dict(config.to_dict()) == config


def test_unknown_source_is_a_config_error_naming_the_known_ones():
    with pytest.raises(ConfigError, match="Unknown pixel source 'landsat'.*'worldcover'"):
        sources.pixel_source("landsat")
    with pytest.raises(ConfigError, match="Unknown pixel source 'landsat'"):
        RunConfig(chips=ChipConfig(source="landsat")).validate()
    with pytest.raises(ConfigError, match="Unknown pixel source"):
        build_chip_sets([Roi(RoiSpec("a", 0.0, 0.0, 256), synthetic_native(256, 256))],
                        ChipConfig(n_chips=2, chip_size=64, source="landsat"))


def test_chips_with_other_bands_need_matching_pixels():
    chips = four_band_chips(n=2)
    with pytest.raises(ChipError, match="need their pixel values"):
        ChipSet(chips.labels, chips.patch_labels, chips.roi_index, chips.origins, ["fake"], 32, 8,
                bands=FAKE_BANDS)
    with pytest.raises(ChipError, match="don't match"):
        ChipSet(chips.labels, chips.patch_labels, chips.roi_index, chips.origins, ["fake"], 32, 8,
                bands=FAKE_BANDS[:3], pixels=chips.pixels)

