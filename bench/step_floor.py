"""How fast can one training step get? The floor under the notebook-default step on this machine.

At the notebook's default config (batch 16, 128 px chips, 64 tokens, embed 128, depth 3, fp32)
this measures, in one process:
  - the baseline's epoch (../shared/bench/seed_baseline.py's loop, line for line) and ours
    (bharateo.training.loop.train), alternating epoch by epoch in this process, as ms per step;
  - the floor under our step, from its parts each timed on its own with warm caches:
      matmuls: every aten::mm / addmm / bmm of one real step (shapes recorded by the
               profiler), replayed on contiguous tensors;
      kernels that can't be fused away in eager PyTorch: exact GELU, LayerNorm and softmax,
               forward and backward, at the recorded shapes, and the fused AdamW step;
      framework overhead: the same step on a toy model (embed 8, one 32 px chip), i.e. Python,
               dispatcher and autograd bookkeeping with next to no arithmetic;
  - the step time a given speed-up target needs, and the best ratio the floor allows even if
    every other op (residual adds, bias adds and sums, copies, gathers, the losses) took no time.

The whole-run figures (start-up, reading, chips, saving included) are bench/speed.py's.

usage: python bench/step_floor.py [--rounds 6] [--target 1.5] [--threads 2]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO.parent / "shared" / "bench" / "seed_baseline.py"
sys.path.insert(0, str(REPO))

MATMULS = {"aten::mm": torch.mm, "aten::addmm": torch.addmm, "aten::bmm": torch.bmm}


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
    from bharateo.data.chips import build_chip_sets
    from bharateo.training.experiment import RunConfig, load_rois
    from bharateo.training.loop import StepMetrics, TrainConfig, make_model, train

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



def median_ms(fn, repeats: int = 30) -> float:
    for _ in range(3):
        fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs) * 1e3


def step_function(model, chips, batch_size: int = 16, mask_ratio: float = 0.75):
    """One full training step of bharateo.training.loop.train on a fixed batch (forward, backward, AdamW)."""
    from bharateo.models.notebook import random_patch_mask

    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.05, fused=True)
    tokens, targets = chips.tokens(slice(0, batch_size)), chips.patch_targets(slice(0, batch_size))
    mask = random_patch_mask(batch_size, tokens.shape[1], mask_ratio, torch.Generator().manual_seed(0))

    def step():
        out = model.training_losses(tokens, targets, mask, 0.2)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        return {k: v.item() for k, v in out.items()}

    return step, optimizer


def recorded_ops(step) -> Counter:
    """(op name, input shapes) -> calls in one step, for the ops the floor replays."""
    from torch.profiler import ProfilerActivity, profile

    wanted = set(MATMULS) | {"aten::gelu", "aten::gelu_backward", "aten::native_layer_norm",
                             "aten::native_layer_norm_backward", "aten::_softmax",
                             "aten::_softmax_backward_data"}
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    return Counter((e.name, json.dumps(e.input_shapes)) for e in prof.events() if e.name in wanted)


def replay(name: str, shapes: list) -> float:
    """Median ms of one op at these input shapes, on fresh contiguous tensors."""
    def rand(shape):
        return torch.randn(*shape)

    if name in MATMULS:
        args = [rand(s) for s in shapes[:3] if s]
        return median_ms(lambda: MATMULS[name](*args))
    x, grad = rand(shapes[0]), rand(shapes[0])
    if name == "aten::gelu":
        return median_ms(lambda: F.gelu(x))
    if name == "aten::gelu_backward":
        return median_ms(lambda: torch.ops.aten.gelu_backward(grad, x))
    if name == "aten::_softmax":
        return median_ms(lambda: torch._softmax(x, -1, False))
    if name == "aten::_softmax_backward_data":
        y = x.softmax(-1)
        return median_ms(lambda: torch._softmax_backward_data(grad, y, -1, y.dtype))
    d = x.shape[-1]
    w, b = torch.randn(d), torch.randn(d)
    if name == "aten::native_layer_norm":
        return median_ms(lambda: torch.native_layer_norm(x, (d,), w, b, 1e-5))
    x = rand(shapes[1])  # the backward's inputs: grad, then the forward's input
    _, mean, rstd = torch.native_layer_norm(x, (d,), w, b, 1e-5)
    return median_ms(lambda: torch.ops.aten.native_layer_norm_backward(
        grad, x, (d,), mean, rstd, w, b, [True, True, True]))


def floor_parts(model, chips) -> dict:
    """ms per step of each floor part (see the module docstring)."""
    from bharateo.models.notebook import ModelConfig, TinyRGBMAE
    from bharateo.data.chips import ChipSet

    step, optimizer = step_function(model, chips)
    step()
    parts = Counter()
    for (name, shapes), calls in recorded_ops(step).items():
        kind = "matmuls" if name in MATMULS else "gelu, layernorm, softmax"
        parts[kind] += calls * replay(name, json.loads(shapes))
    parts["fused AdamW step"] = median_ms(optimizer.step)

    toy_config = ModelConfig(img_size=32, patch_size=4, embed_dim=8, depth=3, heads=4)
    toy_chips = ChipSet(labels=chips.labels[:1, :32, :32], patch_labels=chips.patch_labels[:1, :8, :8],
                        roi_index=chips.roi_index[:1], origins=chips.origins[:1],
                        roi_names=chips.roi_names, chip_size=32, patch_size=4)
    toy_step, _ = step_function(TinyRGBMAE(toy_config), toy_chips, batch_size=1)
    parts["framework overhead (toy model)"] = median_ms(toy_step)
    return {k: round(v, 2) for k, v in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6, help="alternating epochs of each")
    ap.add_argument("--target", type=float, default=1.5, help="speed-up over the baseline")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from tests.support.fixture_tiles import notebook_fixture

    with tempfile.TemporaryDirectory() as tmp:
        tile_dir = str(notebook_fixture(Path(tmp) / "tiles").folder)
        os.environ["BHARATEO_DATA_DIR"] = str(Path(tmp) / "data")
        epochs = interleaved_epochs(tile_dir, args.rounds, args.threads)
        from bharateo.data.chips import build_chip_sets
        from bharateo.training.experiment import RunConfig, load_rois
        from bharateo.training.loop import make_model

        config = RunConfig()
        chips, _ = build_chip_sets(load_rois(config.rois), config.chips)
        parts = floor_parts(make_model(config.model, 42), chips)

    steps = -(-config.chips.n_chips // config.train.batch_size)
    base_ms = epochs["baseline_epoch_s_median"] / steps * 1e3
    ours_ms = epochs["ours_epoch_s_median"] / steps * 1e3
    floor_ms = sum(parts.values())
    report = {"config": f"notebook default, batch 16, fp32, {args.threads} threads",
              "baseline_ms_per_step": round(base_ms, 2), "ours_ms_per_step": round(ours_ms, 2),
              "ratio": round(base_ms / ours_ms, 2), "target": args.target,
              "step_ms_needed_for_target": round(base_ms / args.target, 2),
              "floor_parts_ms": parts, "floor_ms": round(floor_ms, 2),
              "best_ratio_at_floor": round(base_ms / floor_ms, 2)}
    print(json.dumps(report))
    print(f"\nbaseline {base_ms:.1f} ms/step, ours {ours_ms:.1f} ms/step -> {base_ms / ours_ms:.2f}x; "
          f"{args.target}x needs <= {base_ms / args.target:.1f} ms/step")
    for name, ms in parts.items():
        print(f"  floor: {name:32s} {ms:6.2f} ms")
    print(f"  floor total {floor_ms:.1f} ms -> at most {base_ms / floor_ms:.2f}x if every other op "
          f"of the step took no time; ours spends {ours_ms - floor_ms:.1f} ms on those ops")


if __name__ == "__main__":
    main()
