"""Training and chip-building speed: this project's pipeline vs the notebook baseline.

Writes a synthetic fixture tile on the real N27E075 grid, then at the notebook's default config
(384 chips, batch 16, 20 epochs, fp32, same model) runs
  - ../shared/bench/seed_baseline.py (the notebook as one script) in a subprocess, and
  - this project's pipeline (bharateo.pipeline.run_experiment) in a subprocess,
one after the other, each reading the same tile; then, in this process, times chip building for
both (median of repeats) and training epochs of both, alternating baseline and ours epoch by
epoch so that both see the same machine (this shared 2-core machine drifts by 10-30 % over a
minute, which skews the one-after-the-other figures either way). Prints the figures and ratios
as JSON and a table.

usage: python bench/train_speed.py [--epochs 20] [--repeats 5] [--rounds 10] [--threads 2]
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO.parent / "shared" / "bench" / "seed_baseline.py"
sys.path.insert(0, str(REPO))


def ours(tile_dir: str, epochs: int, threads: int) -> dict:
    """Run the project's pipeline once; same JSON fields as the baseline."""
    import os

    import torch

    torch.set_num_threads(threads)
    os.environ["BHARATEO_WORLDCOVER_DIR"] = tile_dir
    from bharateo.pipeline import RunConfig, load_rois, run_experiment
    from bharateo.train import EpochMetrics, TrainConfig

    config = RunConfig(train=TrainConfig(epochs=epochs))
    t0 = time.perf_counter()
    rois = load_rois(config.rois)
    read_s = time.perf_counter() - t0
    epoch_s, last = [], [time.perf_counter()]

    def on_event(event):
        if isinstance(event, EpochMetrics):
            now = time.perf_counter()
            epoch_s.append(now - last[0])
            last[0] = now

    t0 = time.perf_counter()
    result = run_experiment(config, rois=rois, on_event=on_event)
    total = time.perf_counter() - t0
    final = result.history[-1]
    median = statistics.median(epoch_s)
    return {"roi_read_s": round(read_s, 3), "train_s": round(total, 3),
            "epoch_s_median": round(median, 3),
            "chips_per_s_train": round(config.chips.n_chips / median, 1),
            "final": {k: round(final[k], 4) for k in ("loss", "rec", "esa", "rec_mae", "esa_acc")}}


def chip_building(tile_dir: str, repeats: int) -> dict:
    """Median seconds to build the 384 default chips from the three ROIs, both ways."""
    import os

    os.environ["BHARATEO_WORLDCOVER_DIR"] = tile_dir
    from bharateo.chips import ChipConfig, build_chip_sets
    from bharateo.pipeline import RunConfig, load_rois

    baseline = load_baseline()
    rois = load_rois(RunConfig().rois)
    natives = [r.native for r in rois]

    def timed(fn):
        fn()  # warm-up
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        return statistics.median(runs)

    base_s = timed(lambda: baseline.WorldCoverChipDataset(natives, 384))
    ours_s = timed(lambda: build_chip_sets(rois, ChipConfig()))
    return {"baseline_s": round(base_s, 4), "ours_s": round(ours_s, 4),
            "speedup": round(base_s / ours_s, 1)}


def load_baseline():
    import importlib.util

    spec = importlib.util.spec_from_file_location("seed_baseline", BASELINE)
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    return baseline


def baseline_trainer(rois, n_chips: int):
    """The baseline's model, data and optimiser; returns a function that trains one epoch of
    seed_baseline.main()'s loop, line for line, and returns its seconds."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    b = load_baseline()
    torch.manual_seed(42)
    dataset = b.WorldCoverChipDataset([r.native for r in rois], n_chips)
    model = b.TinyRGBMAE()
    loader = DataLoader(dataset, batch_size=b.BATCH_SIZE, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.05)

    def baseline_epoch() -> float:
        te = time.perf_counter()
        model.train()
        for x, _labels, patch_labels in loader:
            patch_labels = patch_labels.reshape(x.size(0), -1)
            mask = b.random_patch_mask(x.size(0))
            pred, logits = model(x, mask)
            l_rec = b.reconstruction_loss(pred, x, mask)
            l_esa = F.cross_entropy(logits.reshape(-1, b.NUM_CLASSES), patch_labels.reshape(-1))
            loss = l_rec + b.PATCH_LOSS_WEIGHT * l_esa
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                mae = b.reconstruction_mae(pred, x, mask)
                acc = (logits.argmax(-1) == patch_labels).float().mean()
            for v in (loss, l_rec, l_esa, mae, acc):
                v.item()
        return time.perf_counter() - te

    return baseline_epoch


def interleaved_epochs(tile_dir: str, rounds: int, threads: int) -> dict:
    """Median epoch seconds of the baseline's training loop and ours, alternating in this process."""
    import os

    import torch

    torch.set_num_threads(threads)
    os.environ["BHARATEO_WORLDCOVER_DIR"] = tile_dir
    from bharateo.chips import build_chip_sets
    from bharateo.pipeline import RunConfig, load_rois
    from bharateo.train import StepMetrics, TrainConfig, make_model, train

    config = RunConfig(train=TrainConfig(epochs=rounds + 1))
    rois = load_rois(config.rois)
    baseline_epoch = baseline_trainer(rois, config.chips.n_chips)
    train_chips, heldout = build_chip_sets(rois, config.chips)
    ours_events = train(make_model(config.model, 42), train_chips, config.train, heldout)

    def our_epoch() -> float:
        te = time.perf_counter()
        next(e for e in ours_events if not isinstance(e, StepMetrics))
        return time.perf_counter() - te

    baseline_epoch(), our_epoch()  # warm-up
    base_s, ours_s = [], []
    for _ in range(rounds):
        base_s.append(baseline_epoch())
        ours_s.append(our_epoch())
    base_med, ours_med = statistics.median(base_s), statistics.median(ours_s)
    return {"rounds": rounds, "baseline_epoch_s_median": round(base_med, 3),
            "ours_epoch_s_median": round(ours_med, 3),
            "baseline_chips_per_s": round(config.chips.n_chips / base_med, 1),
            "ours_chips_per_s": round(config.chips.n_chips / ours_med, 1),
            "ratio": round(base_med / ours_med, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10, help="alternating epochs of each, same process")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ours-only", metavar="TILE_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ours_only:
        print(json.dumps(ours(args.ours_only, args.epochs, args.threads)))
        return

    from tests.fixture_tiles import notebook_fixture

    with tempfile.TemporaryDirectory() as tmp:
        info = notebook_fixture(Path(tmp) / "tiles")
        tile = str(info.tiles["N27E075"])
        env_data = {"BHARATEO_DATA_DIR": str(Path(tmp) / "data")}
        import os
        env = {**os.environ, **env_data}
        base = json.loads(subprocess.run(
            [sys.executable, str(BASELINE), "--tile", tile, "--epochs", str(args.epochs),
             "--threads", str(args.threads)], capture_output=True, text=True, check=True,
            env=env).stdout.strip().splitlines()[-1])
        mine = json.loads(subprocess.run(
            [sys.executable, __file__, "--ours-only", str(info.folder), "--epochs", str(args.epochs),
             "--threads", str(args.threads)], capture_output=True, text=True, check=True,
            env=env).stdout.strip().splitlines()[-1])
        os.environ.update(env_data)
        chips = chip_building(str(info.folder), args.repeats)
        same_process = interleaved_epochs(str(info.folder), args.rounds, args.threads)

    diff = {k: round(mine["final"][k] - base["final"][k], 4) for k in ("rec_mae", "esa_acc")}
    report = {
        "config": f"notebook default, {args.epochs} epochs, batch 16, fp32, {args.threads} threads",
        "baseline": base, "ours": mine,
        "train_chips_per_s_ratio": round(mine["chips_per_s_train"] / base["chips_per_s_train"], 2),
        "final_metric_diff": diff,
        "chip_building": chips,
        "train_same_process": same_process,
    }
    print(json.dumps(report))
    print(f"\ntraining chips/s, each script on its own: baseline {base['chips_per_s_train']}, "
          f"ours {mine['chips_per_s_train']}  -> {report['train_chips_per_s_ratio']}x (target >= 1.5x)")
    print(f"training chips/s, alternating epochs in one process ({args.rounds} each): baseline "
          f"{same_process['baseline_chips_per_s']}, ours {same_process['ours_chips_per_s']}  -> "
          f"{same_process['ratio']}x (target >= 1.5x)")
    print(f"final masked MAE: baseline {base['final']['rec_mae']}, ours {mine['final']['rec_mae']}"
          f"  (diff {diff['rec_mae']:+.4f}, target within 0.02)")
    print(f"final ESA acc:    baseline {base['final']['esa_acc']}, ours {mine['final']['esa_acc']}"
          f"  (diff {diff['esa_acc']:+.4f}, target within 0.02)")
    print(f"chip building (median of {args.repeats}): baseline {chips['baseline_s']} s, ours "
          f"{chips['ours_s']} s -> {chips['speedup']}x (target >= 10x)")


if __name__ == "__main__":
    main()
