"""Sentinel-2 input speed: chips/s with 3, 4 and 10 reflectance channels vs the palette-RGB run.

The same model (the notebook's default: embed 128, depth 3, heads 4), the same 128 px chips with
16 px patches, batch 16, fp32, on
  - palette RGB: the bundled real WorldCover tile (São Tomé, SAMPLE_ROIS[0], 1024 px), and
  - Sentinel-2: the real shared L2A crop (29RKH, its 100 m grid, a 1024 px region) with
    fixture labels, as 4 bands (s2-4band), 10 bands (s2-10band) and 3 bands (B04 B03 B02 cut
    from the 4-band chips: the palette's channel count, with real reflectance).
For each it times building the chips (chips/s) and training (the best epoch's chips/s after a
warm-up epoch), and prints a JSON line per input and a table with the ratio to palette RGB.
The token dimension (C x 16 x 16) only changes the patch embedding and the pixel head, so the
ratios show what the extra bands cost.

usage: python bench/s2_channels.py [--quick] [--chips 384] [--epochs 3] [--threads 2]
  --quick: 64 chips, 3 epochs (seconds each)
"""
import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import processor_line  # noqa: E402


def train_speed(chips, config, epochs: int) -> float:
    """Best chips/s over the training epochs after the first (a warm-up): the best, not the mean,
    because this shared machine's other work only ever slows an epoch down. The model reads the
    chips' channels."""
    from bharateo.training.loop import EpochMetrics, make_model, train

    model = make_model(config.model.for_chips(chips.chip_size, chips.patch_size, chips.bands),
                       config.train.seed)
    speeds = [event.chips_per_s for event in train(model, chips, replace(config.train, epochs=epochs))
              if isinstance(event, EpochMetrics)]
    return max(speeds[1:] or speeds)


def measure(name: str, rois, config, epochs: int, chips_override=None) -> dict:
    from bharateo.data.chips import build_chip_sets

    start = time.perf_counter()
    chips, _ = build_chip_sets(rois, config.chips)
    build_s = time.perf_counter() - start
    if chips_override is not None:
        chips = chips_override(chips)
    return {"input": name, "channels": chips.channels, "token_values": chips.channels * 256,
            "chips": len(chips), "build_chips_per_s": len(chips) / build_s,
            "train_chips_per_s": train_speed(chips, config, epochs)}


def three_bands(chips):
    """The 4-band chips' B04 B03 B02 as a 3-band reflectance chip set (statistics kept)."""
    from bharateo.data.chips import ChipSet
    from bharateo.data.reflectance import BandStats

    idx = [chips.bands.index(b) for b in ("B04", "B03", "B02")]
    s = chips.band_stats
    stats = BandStats(tuple(s.bands[i] for i in idx), tuple(s.mean[i] for i in idx),
                      tuple(s.std[i] for i in idx), s.pixels)
    return ChipSet(**{**chips.__dict__, "bands": stats.bands, "pixels": chips.pixels[:, idx],
                      "band_stats": stats})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--chips", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    n, epochs = (64, 3) if args.quick else (args.chips, args.epochs)

    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="s2bench-"))
    os.environ["BHARATEO_DATA_DIR"] = str(tmp / "data")
    from tests.support.s2_fixtures import SCENE_DIR, sahara_labels, scene_folder

    if not SCENE_DIR.is_dir():
        sys.exit(f"needs the shared Sentinel-2 crop at {SCENE_DIR}")
    scene_folder(tmp / "s2")
    os.environ["BHARATEO_S2_DIR"] = str(tmp / "s2")

    from bharateo.data.chips import ChipConfig
    from bharateo.training.experiment import RunConfig, load_rois
    from bharateo.data.roi import SAMPLE_ROIS, RoiSpec
    from bharateo.data.worldcover import DataSource

    palette_spec = replace(SAMPLE_ROIS[0], size=1024)
    s2_spec = RoiSpec("sahara_bench", -11.43, 24.80, 1024)
    sahara_labels(tmp / "wc", s2_spec, weights={40: .35, 60: .3, 20: .2, 50: .1, 30: .05})
    wc = DataSource("folder", str(tmp / "wc"))
    rows = []
    palette = RunConfig(rois=(palette_spec,), chips=ChipConfig(n_chips=n))
    rows.append(measure("palette RGB (WorldCover)", load_rois(palette.rois), palette, epochs))
    for source in ("s2-4band", "s2-10band"):
        config = RunConfig(rois=(s2_spec,), chips=ChipConfig(
            n_chips=n, source=source, dates="2020-01-01/2020-03-01", min_classes=2))
        rois = load_rois(config.rois, wc, chips=config.chips)
        if source == "s2-4band":
            rows.append(measure("Sentinel-2 3 bands (B04 B03 B02)", rois, config, epochs,
                                three_bands))
        rows.append(measure(f"Sentinel-2 {source[3:]}", rois, config, epochs))
    base = rows[0]["train_chips_per_s"]
    for row in rows:
        row["train_vs_palette"] = row["train_chips_per_s"] / base
        print(json.dumps(row))
    print("\n" + processor_line())
    print(f"{'input':34s} {'C':>3s} {'values/token':>12s} {'build chips/s':>14s} "
          f"{'train chips/s':>14s} {'vs palette':>10s}")
    for r in rows:
        print(f"{r['input']:34s} {r['channels']:3d} {r['token_values']:12,d} "
              f"{r['build_chips_per_s']:14,.0f} {r['train_chips_per_s']:14,.0f} "
              f"{r['train_vs_palette']:9.2f}x")


if __name__ == "__main__":
    main()
