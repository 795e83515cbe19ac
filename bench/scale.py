"""Past one machine, measured: training chips/s from a chip store on 1 and 2 processes (torchrun,
DDP over gloo), for every model variant registered in bharateo/models/registry.py, and the
resident memory (RSS) of a training that streams a store of 10k and of 100k chips.

Chips are cut from three synthetic fixture regions held in memory (the notebook's geometry:
128 px chips, 16 px patches; they are labelled as synthetic in each store's manifest), so the
figures measure the machine and the code, not the land cover. Each measurement runs in its own
process: throughput under `python -m torch.distributed.run --standalone --nproc_per_node=P`
(this script's --worker mode calls bharateo.training.distributed.train_from_store, what
`torchrun -m bharateo train --chips-dir` runs), memory in a plain process that trains the
notebook model for a fixed number of steps in the store's random order. Each store of the RSS
measurement is built in its own process too (`--build-worker`, store.build_store as
`chips build` runs it), which reports its peak RSS: the builder streams shards, so that peak
does not grow with the chip count either.

usage: python bench/scale.py [--quick] [--json] [--arch NAME ...] [--no-rss] [--no-throughput]
  full:    a 2,048-chip store, 3 epochs; RSS for 10,000 and 100,000 stored chips, 600 steps
           (building the 100k store writes 1.65 GB; ~10 min on 2 cores)
  --quick: a 256-chip store, 2 epochs; RSS for 2,000 and 20,000 stored chips, 150 steps
  --no-throughput: only the stores' build and training RSS (no chips/s, no plan)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import processor_line  # noqa: E402


# --- the plan's assumptions (nothing below is measured here; docs/scale.md states each) -------
PLAN_CHIPS, PLAN_EPOCHS, PLAN_BANDS = 1_000_000, 100, 10  # the notebook's BharatEO-v0 plan
GPU_PEAK_BF16 = 989e12  # FLOP/s, NVIDIA H100 SXM dense bf16 (datasheet; without sparsity)
GPU_UTILISATION = (0.02, 0.10)  # share of that peak a 0.8M-parameter, d=128 model reaches
GPU_BATCH = 1024  # chips per GPU per step (the notebook's 16 would leave a GPU idle)
LOADER_CORES_PER_GPU = 12  # CPU cores reading and rendering chips for each GPU (96-core, 8-GPU node)
LINK_BYTES_PER_S = {"NVLink (within a node)": 450e9, "100 Gb/s InfiniBand (between nodes)": 12.5e9}
PRICE_PER_GPU_HOUR = 3.0  # USD, an on-demand H100 cloud price; cost scales linearly with it
S2_BYTES_PER_VALUE = 2  # uint16 reflectance x 10000, as L2A products store it


def plan(report: dict) -> dict:
    """1M chips x 100 epochs at 10 bands from this run's measured figures and the assumptions
    above. Every number in docs/scale.md's plan table comes from here."""
    from bharateo.training.estimate import chip_flops
    from bharateo.models.notebook import ModelConfig
    from bharateo.models.sizes import notebook_parameter_count as parameter_count
    from bharateo.training.tokens import token_accounting

    tokens = token_accounting(PLAN_CHIPS, PLAN_EPOCHS, 0.75, PLAN_BANDS)
    chips_seen = PLAN_CHIPS * PLAN_EPOCHS
    model = ModelConfig(in_chans=PLAN_BANDS)
    flop_chip = chip_flops(model, 0.75)
    cpu = next(r for r in report["throughput"] if r["arch"] == "notebook" and r["processes"] == 1
               and r["threads_each"] == 1)
    cpu_chips_s = cpu["gflop_per_s"] * 1e9 / flop_chip  # same achieved FLOP/s at 10 bands
    # rendering cost follows the token bytes: 10 bands write 10/3 of the palette's floats
    loader_chips_s = report["input_pipeline"]["chips_per_s"] * 3 / PLAN_BANDS
    grad_bytes = 4 * parameter_count(model)
    out = {"token_presentations": tokens.total_tokens, "masked_tokens": tokens.masked_tokens,
           "chip_presentations": chips_seen, "flop_per_chip": flop_chip,
           "total_flop": flop_chip * chips_seen, "parameters": parameter_count(model),
           "cpu_process_chips_per_s": cpu_chips_s,
           "cpu_process_days": chips_seen / cpu_chips_s / 86400,
           "store_bytes_10band": PLAN_CHIPS * PLAN_BANDS * 128 * 128 * S2_BYTES_PER_VALUE,
           "loader_chips_per_s_per_core": loader_chips_s,
           "loader_chips_per_s_per_gpu": loader_chips_s * LOADER_CORES_PER_GPU, "gpus": []}
    out["gpu_compute_chips_per_s"] = {util: GPU_PEAK_BF16 * util / flop_chip for util in GPU_UTILISATION}
    compute = min(out["gpu_compute_chips_per_s"].values())  # the pessimistic end
    for loader, cores in (("as built: the rank's own process reads, then trains", 1),
                          (f"{LOADER_CORES_PER_GPU} loader processes a GPU, overlapped (not built)",
                           LOADER_CORES_PER_GPU)):
        feed = loader_chips_s * cores
        per_gpu = 1 / (1 / feed + 1 / compute) if cores == 1 else min(feed, compute)
        for n in (1, 8, 64):
            step_s = GPU_BATCH / per_gpu
            link = LINK_BYTES_PER_S["NVLink (within a node)" if n <= 8 else
                                    "100 Gb/s InfiniBand (between nodes)"]
            allreduce_s = 2 * (n - 1) / n * grad_bytes / link  # ring all-reduce of fp32 grads
            hours = chips_seen / (per_gpu * n) * (1 + allreduce_s / step_s) / 3600
            out["gpus"].append({"pipeline": loader, "gpus": n, "chips_per_s_per_gpu": round(per_gpu),
                                "allreduce_ms_per_step": round(allreduce_s * 1e3, 3),
                                "wall_hours": round(hours, 2), "gpu_hours": round(hours * n, 2),
                                "usd": round(hours * n * PRICE_PER_GPU_HOUR)})
    return out


def synthetic_rois(size: int):
    from bharateo.data.roi import Roi, RoiSpec
    from tests.support.fixture_tiles import synthetic_native

    return [Roi(RoiSpec(name, 0.0, 0.0, size), synthetic_native(size, size, seed=i, class_weights=kind),
                {"synthetic": True, "source": "bench/scale.py synthetic fixture"})
            for i, (name, kind) in enumerate([("urban", "urban"), ("arid", "arid"),
                                              ("cropland", "cropland")])]


def build(folder: Path, n_chips: int) -> Path:
    from bharateo.data.chips import ChipConfig
    from bharateo.storage.chipstore import build_store

    return build_store(folder, synthetic_rois(2048), ChipConfig(n_chips=n_chips), shard_size=1024)


def worker_build(folder: str, n_chips: int) -> None:
    """Build a store of `n_chips` in this process; print its build time and peak RSS (JSON)."""
    import resource

    t0 = time.perf_counter()
    build(Path(folder), n_chips)
    print(json.dumps({"build_s": time.perf_counter() - t0, "build_maxrss_mb":
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def worker_train(store: str, arch: str, epochs: int, batch: int) -> None:
    """One rank of a measured training (or the only process); rank 0 prints a JSON line."""
    import torch

    from bharateo.training import distributed
    from bharateo.models.notebook import ModelConfig
    from bharateo.training.experiment import RunConfig
    from bharateo.training.loop import EpochMetrics, TrainConfig

    ranks = distributed.join("cpu")
    rows = []
    config = RunConfig(model=ModelConfig(arch=arch), train=TrainConfig(epochs=epochs, batch_size=batch))
    try:
        distributed.train_from_store(config, store, on_event=lambda e: isinstance(e, EpochMetrics)
                                     and rows.append(e.chips_per_s), ranks=ranks)
    finally:
        if ranks is not None:
            ranks.close()
    if ranks is None or ranks.rank == 0:
        print(json.dumps({"epoch_chips_per_s": rows, "threads": torch.get_num_threads()}), flush=True)


def worker_rss(store: str, steps: int) -> None:
    """Train the notebook model on the store for `steps` steps; print RSS at step 10 and after."""
    import resource
    import threading

    from bharateo.models.notebook import ModelConfig
    from bharateo.storage.chipstore import ChipStore
    from bharateo.training.loop import StepMetrics, TrainConfig, make_model, train

    chips = ChipStore(store)
    model = make_model(ModelConfig(), 42)
    stop, seen = threading.Event(), {}
    t0 = time.perf_counter()
    for event in train(model, chips, TrainConfig(epochs=1), stop=stop):
        if isinstance(event, StepMetrics):
            if event.global_step == 10:
                seen["rss_step10_mb"] = rss_mb()
            if event.global_step >= steps:
                stop.set()
    seen.update(rss_end_mb=rss_mb(), maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                chips=len(chips), steps=steps, seconds=time.perf_counter() - t0)
    print(json.dumps(seen), flush=True)


def read_rate(store: Path, batches: int = 200, batch: int = 16) -> dict:
    """Chips/s of the input pipeline alone in one process: random batches read from the store
    and rendered to tokens + patch targets (what each rank does before its forward pass)."""
    import numpy as np

    from bharateo.storage.chipstore import ChipStore

    chips = ChipStore(store)
    chips.verify()  # checksums first, so the timing is reads and rendering only
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(batches):
        idx = rng.integers(0, len(chips), batch)
        chips.tokens(idx), chips.patch_targets(idx)
    seconds = time.perf_counter() - t0
    return {"chips_per_s": round(batches * batch / seconds, 1), "batch": batch}


def run_json(command: list[str], env: dict) -> dict:
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"failed: {' '.join(command)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--arch", action="append", help="only these model variants (default: all)")
    parser.add_argument("--no-rss", action="store_true", help="skip the memory measurement")
    parser.add_argument("--no-throughput", action="store_true", help="only the memory measurement")
    parser.add_argument("--worker", nargs=4, metavar=("STORE", "ARCH", "EPOCHS", "BATCH"))
    parser.add_argument("--rss-worker", nargs=2, metavar=("STORE", "STEPS"))
    parser.add_argument("--build-worker", nargs=2, metavar=("STORE", "CHIPS"))
    args = parser.parse_args()
    if args.worker:
        return worker_train(args.worker[0], args.worker[1], int(args.worker[2]), int(args.worker[3]))
    if args.rss_worker:
        return worker_rss(args.rss_worker[0], int(args.rss_worker[1]))
    if args.build_worker:
        return worker_build(args.build_worker[0], int(args.build_worker[1]))

    from bharateo.training.estimate import chip_flops
    from bharateo.models.registry import MODELS
    from bharateo.models.notebook import ModelConfig

    n_train, epochs = (256, 2) if args.quick else (2048, 3)
    rss_sizes, rss_steps = ((2_000, 20_000), 150) if args.quick else ((10_000, 100_000), 600)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    report = {"cores": os.cpu_count(), "load_average_1min_at_start": os.getloadavg()[0],
              "store_chips": n_train, "epochs": epochs, "batch": 16, "throughput": [], "rss": []}
    print(processor_line())
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (other work on this "
          "machine slows every figure)", flush=True)
    with tempfile.TemporaryDirectory(prefix="bharateo-scale-") as tmp:
        if not args.no_throughput:
            store = build(Path(tmp) / "train", n_train)
            report["input_pipeline"] = read_rate(store)
            print(f"input pipeline (read + render, 1 process): "
                  f"{report['input_pipeline']['chips_per_s']:,.0f} chips/s", flush=True)
        for arch in () if args.no_throughput else args.arch or MODELS:
            for procs, threads in ((1, 1), (1, os.cpu_count()), (2, 1)):
                run_env = {**env, "OMP_NUM_THREADS": str(threads)}
                row = run_json([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                f"--nproc_per_node={procs}", str(Path(__file__).resolve()),
                                "--worker", str(store), arch, str(epochs), "16"], run_env)
                total = statistics.median(row["epoch_chips_per_s"][1:])  # epoch 1 warms up
                # achieved GFLOP/s from the variant's own FLOP count if it has one, else the
                # Train page's count of the notebook model's layers
                count = getattr(MODELS[arch], "flops_per_chip", None)
                per_chip = (count(ModelConfig(arch=arch), 0.75) if count else
                            chip_flops(ModelConfig(), 0.75) if arch == "notebook" else None)
                gflops = total * per_chip / 1e9 if per_chip else None
                report["throughput"].append({
                    "arch": arch, "processes": procs, "threads_each": threads,
                    "chips_per_s": round(total, 1), "chips_per_s_per_process": round(total / procs, 1),
                    "gflop_per_s": gflops and round(gflops, 1)})
                print(f"{arch:9s} {procs} process(es) x {threads} thread(s): {total:7.1f} chips/s "
                      f"({total / procs:.1f} per process" + (f", {gflops:.1f} GFLOP/s)" if gflops
                                                             else ")"), flush=True)
        for n in () if args.no_rss else rss_sizes:
            folder = Path(tmp) / f"rss{n}"
            built = run_json([sys.executable, str(Path(__file__).resolve()), "--build-worker",
                              str(folder), str(n)], {**env, "OMP_NUM_THREADS": "1"})
            row = run_json([sys.executable, str(Path(__file__).resolve()), "--rss-worker", str(folder),
                            str(rss_steps)], {**env, "OMP_NUM_THREADS": "1"})
            row.update(built)
            row["store_mb"] = round(sum(f.stat().st_size for f in folder.iterdir()) / 2**20, 1)
            report["rss"].append({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()})
            print(f"{n:>7,d} stored chips ({row['store_mb']:,.0f} MB on disk): built in "
                  f"{row['build_s']:.0f} s, peak RSS of the build {row['build_maxrss_mb']:.0f} MB; "
                  f"training RSS {row['rss_step10_mb']:.0f} MB "
                  f"at step 10, {row['rss_end_mb']:.0f} MB after {rss_steps} steps, peak "
                  f"{row['maxrss_mb']:.0f} MB", flush=True)
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    if not any(r["arch"] == "notebook" and r["threads_each"] == 1 and r["processes"] == 1
               for r in report["throughput"]):
        print(json.dumps(report) if args.json else "")
        return
    p = report["plan"] = plan(report)
    print(f"plan: {PLAN_CHIPS:,} chips x {PLAN_EPOCHS} epochs at {PLAN_BANDS} bands = "
          f"{p['token_presentations']:,} token presentations, {p['chip_presentations']:,} chips "
          f"seen, {p['flop_per_chip'] / 1e6:.1f} MFLOP a chip, {p['total_flop']:.3g} FLOP in all")
    print(f"  one CPU process here: {p['cpu_process_chips_per_s']:.1f} chips/s -> "
          f"{p['cpu_process_days']:,.0f} days; the 10-band store: {p['store_bytes_10band'] / 1e9:,.0f} GB; "
          f"input pipeline {p['loader_chips_per_s_per_core']:,.0f} chips/s a core, "
          f"{p['loader_chips_per_s_per_gpu']:,.0f} a GPU with {LOADER_CORES_PER_GPU} cores")
    print("  a GPU's compute alone: " + ", ".join(
        f"{rate:,.0f} chips/s at {util:.0%} of the H100 bf16 peak"
        for util, rate in p["gpu_compute_chips_per_s"].items()))
    for g in p["gpus"]:
        print(f"  {g['pipeline']}, {g['gpus']:>2d} GPU(s): {g['chips_per_s_per_gpu']:,} chips/s a "
              f"GPU, all-reduce {g['allreduce_ms_per_step']} ms a step, {g['wall_hours']:,.2f} h "
              f"wall, {g['gpu_hours']:,.1f} GPU-h, ${g['usd']:,} at ${PRICE_PER_GPU_HOUR}/GPU-h")
    report["load_average_1min_at_end"] = os.getloadavg()[0]
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
