"""How long the token-embedding map of 384 chips takes (issue 14's target: under 5 s on 2 cores).

Builds the synthetic fixture tiles in a temp folder, cuts the notebook's default chips (384 of
128 px from its three regions; --quick: 96 chips from 1024 px regions), builds a notebook-default
model (embed 128, depth 3, 4 heads: the map's cost depends on the shape, not on training) and times

  - embed: the encoder over every token of every chip, nothing hidden (inspect_model.token_embeddings),
  - map: the whole stored result (embeddings, PCA to 2-D, nearest chips by mean embedding),
  - attention: one chip's attention maps (every layer and head),

each the median of --repeats runs, printed next to the target (not asserted). From the repo root:

    python bench/embedding_map.py [--quick] [--threads N] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import fixture_lab  # noqa: E402
from machine import processor_line  # noqa: E402
TARGET_S = 5.0


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="96 chips, one repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    fixture_lab(threads=args.threads)
    import torch

    from bharateo.training import inspect_model as im
    from bharateo.data.chips import ChipConfig, build_chip_sets
    from bharateo.models.notebook import ModelConfig
    from bharateo.training.experiment import load_rois
    from bharateo.data.roi import NOTEBOOK_ROIS, RoiSpec
    from bharateo.training.loop import make_model

    n_chips, repeats = (96, 1) if args.quick else (384, args.repeats)
    size = 1024 if args.quick else 2048
    rois = load_rois([RoiSpec(r.name, r.lon, r.lat, size) for r in NOTEBOOK_ROIS])
    chips, _ = build_chip_sets(rois, ChipConfig(n_chips=n_chips))
    model = make_model(ModelConfig(), seed=42).eval()
    print(processor_line())
    print(f"{len(chips)} chips x {chips.grid_size ** 2} tokens = {len(chips) * chips.grid_size ** 2:,} "
          f"points; model {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
          f"torch threads {torch.get_num_threads()}; synthetic fixture tiles")
    embed_s, _ = timed(lambda: im.token_embeddings(model, chips), repeats)
    map_s, value = timed(lambda: im.embedding_map(model, chips), repeats)
    attention_s, _ = timed(lambda: im.attention_maps(model, chips, 0, 0.75), max(repeats, 5))
    print(f"embed all tokens      {embed_s:7.3f} s")
    print(f"embedding map (total) {map_s:7.3f} s   target < {TARGET_S:g} s for 384 chips"
          + ("" if args.quick else f"   ({'met' if map_s < TARGET_S else 'NOT met'})"))
    print(f"attention, one chip   {attention_s * 1000:7.1f} ms")
    print(f"points stored {len(value['x']):,}; PCA variance shares {value['explained'][0]:.2f}, "
          f"{value['explained'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
