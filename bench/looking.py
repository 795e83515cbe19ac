"""How long looking at a trained model takes (issue 23.2: each under 2 s on 2 idle cores; the
slider under 300 ms), before and after the one-pass evaluation, in one call.

For the notebook's default model (embed 128, depth 3, 4 heads; timing depends on the shape, not
on the training, so its weights are freshly initialised) on the notebook's default chips of the
synthetic fixture tiles (384 training chips, 64 held-out chips from mathura_belt), measures

  - curve: Reconstruct's nine-ratio curve on the 384 training chips,
  - evaluate: Evaluate's scores on the training and the held-out chips (at mask ratio 0.75),
  - attention: Inside's attention maps of one chip,
  - slider: one slider move's panels (reconstruct_chip + the panel pictures + PNG encoding),
  - loading a run's chips (its regions read from the fixture tiles, its chips cut),

each as the old path ("before": predict() per ratio, the tokens made again for every ratio, the
pixel head on every token, 128 chips a pass, torch.no_grad) and the new one ("after":
evaluate.masked_scores), best of --repeat, in wall seconds and CPU-seconds of this process (the
machine may be shared: CPU-seconds are the steadier figure), with the load average. The two
paths' numbers are checked to agree.

`--server-cost` also measures what filling in a curve in the background costs a server's
Python thread: a pure-Python loop's rate alone, beside a curve computed in a thread of the same
process (bharateo/jobs/looks.py's choice) and in a child process.

    python bench/looking.py [--threads 2] [--repeat 3] [--server-cost]
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import ROOT, fixture_lab  # noqa: E402
from machine import processor_line  # noqa: E402

def timed(fn, repeat: int):
    """(result, best wall s, CPU-s of that run) over `repeat` runs."""
    best = None
    for _ in range(repeat):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        if best is None or wall < best[1]:
            best = (out, wall, cpu)
    return best


def old_curve(ev, model, chips):
    """The curve as the page computed it before the one pass (per-ratio predict)."""
    import torch

    rows, targets, tokens = [], chips.patch_targets(), ev.tokens_for(model, chips)
    valid = targets != ev.IGNORE_INDEX
    for ratio in ev.CURVE_RATIOS:
        preds, logits, mask = ev.predict(model, chips, ratio, ev.EVAL_MASK_SEED)
        scored = mask & valid
        rows.append({"ratio": float(ratio),
                     "masked_mae": float((preds[scored] - tokens[scored]).abs().mean()),
                     "patch_acc": float((logits.argmax(-1)[valid] == targets[valid])
                                        .to(torch.float32).mean())})
    return rows


def old_evaluate(ev, model, chips, ratio):
    """evaluate() before the one pass: whole forward of every chip, tokens made twice."""
    import torch

    preds, logits, mask = ev.predict(model, chips, ratio, ev.EVAL_MASK_SEED)
    targets = chips.patch_targets()
    confusion = ev.confusion_matrix(targets.numpy(), logits.argmax(-1).numpy())
    tokens = ev.tokens_for(model, chips)
    scored = mask & (targets != ev.IGNORE_INDEX)
    err = (preds - tokens).abs()
    pixel_err = err.reshape(*err.shape[:2], chips.channels, -1).mean(dim=2)
    pixel_class = torch.from_numpy(ev._pixel_labels_in_token_order(chips))
    masked = scored[..., None].expand_as(pixel_class)
    per_class = [float(pixel_err[masked & (pixel_class == k)].mean()) for k in range(ev.NUM_CLASSES)
                 if (masked & (pixel_class == k)).any()]
    return {"confusion": confusion, "masked_mae": float(err[scored].mean()), "per": per_class}


def server_cost(model, chips, seconds: float = 4.0) -> None:
    """A pure-Python loop's rate (what a Streamlit script run is) alone, with a curve computed in
    a thread of this process, and with one computed in a child process."""
    import pickle

    from bharateo.training import evaluate as ev

    def loop() -> tuple[float, float]:
        n, end, c = 0, time.perf_counter() + seconds, time.thread_time()
        while time.perf_counter() < end:
            sum(i * i for i in range(200))
            n += 1
        return n / seconds, time.thread_time() - c

    def report(label, rate_cpu, alone):
        rate, cpu = rate_cpu
        print(f"  {label:<36} {rate:9.0f} loops/s ({rate / alone:4.0%} of alone), "
              f"{cpu:.2f} CPU-s of the loop's thread in {seconds:g} s; load {os.getloadavg()[0]:.1f}")

    print("\nwhat filling in a curve costs a server's Python thread (a pure-Python loop):")
    alone = loop()
    report("alone", alone, alone[0])
    worker = threading.Thread(target=ev.mask_ratio_curve, args=(model, chips), daemon=True)
    worker.start()
    report("curve in a thread of this process", loop(), alone[0])
    worker.join()
    with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
        pickle.dump((model, chips), f)
    code = ("import pickle, sys; from bharateo.training import evaluate as ev; "
            f"m, c = pickle.load(open({f.name!r}, 'rb')); ev.mask_ratio_curve(m, c)")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    report("curve in a child process (+ its import)", loop(), alone[0])
    child.wait()
    os.unlink(f.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, best kept")
    parser.add_argument("--server-cost", action="store_true")
    args = parser.parse_args()

    fixture_lab(threads=args.threads)
    import torch
    from PIL import Image

    from bharateo.training import evaluate as ev
    from bharateo.training import inspect_model as im
    from bharateo.app import pictures
    from bharateo.data.chips import ChipConfig, build_chip_sets
    from bharateo.models.notebook import ModelConfig
    from bharateo.training.experiment import RunConfig, load_rois
    from bharateo.data.roi import NOTEBOOK_ROIS
    from bharateo.training.loop import make_model

    config = RunConfig(rois=tuple(NOTEBOOK_ROIS), chips=ChipConfig(holdout_roi="mathura_belt"),
                       model=ModelConfig())
    train, held = build_chip_sets(load_rois(config.rois, chips=config.chips), config.chips)
    model = make_model(config.model, 0).eval()
    print(processor_line())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
          f"visible; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"model: notebook default ({config.parameters / 1e6:.2f}M parameters), chips: "
          f"{len(train)} training + {len(held)} held-out of {train.chip_size} px (fixture tiles)")

    def slider():
        rec = ev.reconstruct_chip(model, train, 3, 0.4, seed=1)
        for panel in pictures.reconstruction_panels(rec, 0.4, 3):
            Image.fromarray(panel.image).save(io.BytesIO(), format="PNG")

    cases = [
        ("curve: 9 ratios x 384 chips", lambda: old_curve(ev, model, train),
         lambda: ev.mask_ratio_curve(model, train), 2.0),
        ("evaluate: training + held-out", lambda: [old_evaluate(ev, model, c, 0.75) for c in (train, held)],
         lambda: [ev.evaluate(model, c, 0.75) for c in (train, held)], 2.0),
        ("attention maps of one chip", lambda: im.attention_maps(model, train, 3, 0.75),
         lambda: im.attention_maps(model, train, 3, 0.75), 2.0),
        ("slider: one chip's panels + PNG", slider, slider, 0.3),
    ]
    print(f"\n{'':<32} {'before wall':>11} {'CPU-s':>7}   {'after wall':>10} {'CPU-s':>7}   "
          f"{'speed-up (CPU)':>14}  target")
    for label, before, after, target in cases:
        old, wall_b, cpu_b = timed(before, args.repeat)
        new, wall_a, cpu_a = timed(after, args.repeat)
        print(f"{label:<32} {wall_b:10.2f}s {cpu_b:7.2f}   {wall_a:9.2f}s {cpu_a:7.2f}   "
              f"{cpu_b / max(cpu_a, 1e-9):13.1f}x  {target:g} s wall "
              f"({'met' if wall_a <= target else 'missed'} at load {os.getloadavg()[0]:.1f})")
        if label.startswith("curve"):
            worst = max(abs(a["masked_mae"] - b["masked_mae"]) for a, b in zip(new, old))
            print(f"{'':<32} largest masked-MAE difference between the paths: {worst:.1e}")
    from bharateo.app.results import chips_for_run

    _, wall, cpu = timed(lambda: chips_for_run(config), args.repeat)
    print(f"{'load a run chips: read + cut':<32} {'':>11} {'':>7}   {wall:9.2f}s {cpu:7.2f}   "
          f"(Reconstruct/Evaluate/Inside's button and a lesson link; on the page, with a spinner)")
    if args.server_cost:
        server_cost(model, train)
    return 0


if __name__ == "__main__":
    sys.exit(main())
