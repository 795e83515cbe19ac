"""`python -m bharateo`: prefetch data, inspect a region, train, evaluate, count tokens."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from bharateo.config import environment
from bharateo.errors import BharatEOError


def _roi_specs(args):
    from bharateo.data.roi import NOTEBOOK_ROIS, RoiSpec, default_roi_name

    if args.lon is None and args.lat is None:
        return list(NOTEBOOK_ROIS)
    if args.lon is None or args.lat is None:
        raise BharatEOError("Give both --lon and --lat (or neither, for the notebook's three ROIs).")
    name = args.name or default_roi_name(args.lon, args.lat)
    return [RoiSpec(name, args.lon, args.lat, args.size)]


def _chip_config(args):
    """The chip settings of prefetch's and inspect's flags (--source, --dates, --max-cloud),
    checked: ConfigError for an unknown source or a Sentinel-2 query that can't be used."""
    from bharateo.data.chips import ChipConfig
    from bharateo.training.experiment import check_source
    from bharateo.config.settings import from_args

    chips = replace(ChipConfig(), **from_args(ChipConfig, args))
    check_source(chips)
    return chips


def _load_rois_for(args, specs):
    from bharateo.training.experiment import load_rois

    return load_rois(specs, chips=_chip_config(args))


def cmd_prefetch(args) -> None:
    from bharateo.data.roi import load_roi, native_class_counts
    from bharateo.data.worldcover import data_source_from_env

    if _chip_config(args).source != "worldcover":
        return _prefetch_s2(args)
    source = data_source_from_env()
    print(f"Reading from {source.describe()} into the cache...")
    not_cached = []
    for spec in _roi_specs(args):
        roi = load_roi(spec, source)
        if roi.cache_error:
            not_cached.append((spec.name, roi.cache_error))
        nodata = roi.provenance["nodata_fraction"]
        classes = len([code for code in native_class_counts(roi.native) if code != 0])  # 0: no data
        print(f"  {spec.name}: {spec.size}x{spec.size} px, {classes} land-cover "
              f"class{'' if classes == 1 else 'es'}, {nodata:.1%} no data, {roi.data_label}  "
              f"({roi.provenance['source']})")
        for note in roi.notes:
            print(f"    note: {note}")
    if not_cached:  # read, but the point of prefetch (working offline later) was not reached
        raise BharatEOError(
            f"{', '.join(n for n, _ in not_cached)} could not be cached: {not_cached[0][1]}. "
            "Run prefetch again once that is fixed.")


def _s2_summary(roi) -> dict:
    p = roi.provenance
    return {k: p.get(k) for k in ("scene_id", "scene_date", "cloud_cover", "mgrs_tile", "bands",
                                   "crs", "pixel_m", "bounds", "reflectance_rule", "source",
                                   "cloud_fraction", "nodata_fraction")}


def _prefetch_s2(args) -> None:
    from bharateo.data.sentinel2 import s2_source_from_env

    print(f"Reading Sentinel-2 from {s2_source_from_env().describe()} into the cache...")
    not_cached = []
    for roi in _load_rois_for(args, _roi_specs(args)):
        if roi.cache_error:
            not_cached.append((roi.spec.name, roi.cache_error))
        s = _s2_summary(roi)
        print(f"  {roi.spec.name}: {roi.spec.size}x{roi.spec.size} px of {s['pixel_m']:g} m, scene "
              f"{s['scene_id']} ({s['scene_date']}, {s['cloud_cover']} % cloud over the scene), bands "
              f"{' '.join(s['bands'])}, {s['nodata_fraction']:.1%} no data or cloud; "
              f"{roi.data_label}")
        for note in roi.notes:
            print(f"    note: {note}")
    if not_cached:
        raise BharatEOError(
            f"{', '.join(n for n, _ in not_cached)} could not be cached: {not_cached[0][1]}. "
            "Run prefetch again once that is fixed.")


def _inspect_s2(args) -> None:
    from bharateo.data.roi import native_class_counts
    from bharateo.data.worldcover import NATIVE_WORLDCOVER_CLASSES

    if args.lon is None or args.lat is None:
        raise BharatEOError("A Sentinel-2 region needs --lon and --lat.")
    roi = _load_rois_for(args, _roi_specs(args))[0]
    counts = native_class_counts(roi.native)
    report = {"name": roi.spec.name, **_s2_summary(roi), "data": roi.data_label,
              "synthetic_fixture": roi.synthetic, "labels": roi.provenance.get("labels"),
              "band_files": roi.provenance.get("band_files"), "native_counts": counts,
              "notes": roi.notes}
    if args.json:
        print(json.dumps(report))
        return
    for key in ("name", "scene_id", "scene_date", "cloud_cover", "mgrs_tile", "crs", "pixel_m",
                "reflectance_rule", "source", "data"):
        print(f"{key}: {report[key]}")
    print("bands: " + " ".join(report["bands"]))
    print("bounds (W, S, E, N): " + ", ".join(f"{b:.6f}" for b in report["bounds"]))
    for code, n in counts.items():
        name = ("no data or cloud (never a class)" if code == 0 else
                NATIVE_WORLDCOVER_CLASSES.get(code, "unknown code"))
        print(f"  {code:3d} {name:34s} {n:>10,d}")
    for note in roi.notes:
        print(f"note: {note}")


def cmd_inspect(args) -> None:
    from bharateo.data.roi import default_presets, load_roi, native_class_counts
    from bharateo.data.worldcover import NATIVE_WORLDCOVER_CLASSES

    if _chip_config(args).source != "worldcover":
        return _inspect_s2(args)
    # no --lon/--lat: the first default preset (notebook's delhi_ncr, or sao_tome offline)
    spec = _roi_specs(args)[0] if args.lon is not None or args.lat is not None else \
        default_presets()[0]
    roi = load_roi(spec)
    counts = native_class_counts(roi.native)
    tiles = roi.provenance["tiles"]
    report = {"name": spec.name, "tiles": [t["tile"] for t in tiles],
              "tile_status": {t["tile"]: t.get("status", "read") for t in tiles},
              "bounds": roi.provenance["bounds"], "crs": roi.provenance["crs"],
              "source": roi.provenance["source"], "data": roi.data_label,
              "verified_worldcover": roi.verified, "synthetic_fixture": roi.synthetic,
              "file_tags": {t["tile"]: t.get("tags", {}) for t in tiles if "tags" in t},
              "nodata_fraction": roi.provenance["nodata_fraction"],
              "native_counts": counts, "notes": roi.notes}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{spec.name}: tiles {', '.join(f'{t} ({s})' for t, s in report['tile_status'].items())}"
          f", {report['crs']}")
    print("bounds (W, S, E, N): " + ", ".join(f"{b:.6f}" for b in report["bounds"]))
    print(f"source: {report['source']}")
    print(f"data: {roi.data_label}")
    for tile, tags in report["file_tags"].items():
        print(f"  {tile} tags: " + ("; ".join(f"{k}={v}" for k, v in tags.items())
                                    or "none (not an ESA WorldCover file)"))
    for code, n in counts.items():
        name = "no data (never a class)" if code == 0 else NATIVE_WORLDCOVER_CLASSES.get(code, "unknown code")
        print(f"  {code:3d} {name:28s} {n:>10,d}")
    for note in roi.notes:
        print(f"note: {note}")


def cmd_train(args) -> None:
    from bharateo.data.chips import ChipConfig
    from bharateo.models.device import resolve_device
    from bharateo.models.device import native_bf16
    from bharateo.errors import ConfigError
    from bharateo.training.experiment import (PRESETS, SECTIONS, RunConfig, new_run_problems,
                                   run_experiment)
    from bharateo.data.roi import NOTEBOOK_ROIS, default_presets
    from bharateo.storage.runs import clean_leftovers, release_run_name, reserve_run_name
    from bharateo.config.settings import from_args, rebuilt, settings_of

    chip_flags = set(from_args(ChipConfig, args)) - set(from_args(SECTIONS["train"], args))
    if args.chips_dir is not None and (chip_flags or args.lon is not None or args.lat is not None):
        raise ConfigError("--chips-dir trains on the chip store's own chips and regions: drop the "
                          "chip and region flags (they were fixed when the store was built).")
    base = PRESETS[args.preset]
    rois = tuple(_roi_specs(args)) if args.lon is not None else base.rois
    if args.lon is None and args.chips_dir is None and rois == tuple(NOTEBOOK_ROIS):
        # as the app's Regions page: offline, with no north-India tile at hand, the bundled
        # real São Tomé / Príncipe regions are the lesson (a held-out region named by the preset
        # is among the notebook's, so none is held out then)
        if (defaults := tuple(default_presets())) != rois:
            print("The notebook's north-India tile N27E075 can't be read (offline, not prefetched, "
                  "no local folder): training on the bundled sample's regions "
                  f"{', '.join(r.name for r in defaults)} (real ESA WorldCover tile N00E006). "
                  "Give --lon/--lat for another place.", file=sys.stderr)
            rois = defaults
    config = RunConfig(
        rois=rois,
        **{key: rebuilt(cls, getattr(base, key), from_args(cls, args))
           for key, cls in SECTIONS.items()})
    # each setting's one check, with a new run's limits (the Train page's sentences), by flag
    flags = {}  # a name two sections share (patch_size) is named by the section with a flag
    for s in (s for cls in SECTIONS.values() for s in settings_of(cls) if s.flag):
        flags.setdefault(s.name, s.flag)
    if problems := new_run_problems(config):
        raise ConfigError("Fix these settings: " + " ".join(
            f"{flags.get(name) or name}: {sentence}" for name, sentence in problems.items()))
    config.validate()  # the app's checks and messages, before anything is read or built
    resolve_device(config.train.device)  # a missing GPU fails now, before the name is reserved
    clean_leftovers()  # what a killed save or training left (never a live process's)
    if args.chips_dir is None:  # chips in memory (a store streams its shards)
        _check_memory(config)
    if args.chips_dir is not None:  # chips from a store on disk, one process or under torchrun
        return cmd_train_store(args, config)
    # reserve the name before spending time on training (a taken name fails now, not at save)
    name = reserve_run_name(args.run, exact=True)
    print(f"{config.model.arch} model, {config.parameters / 1e6:.2f}M parameters, "
          f"{config.tokens().total_tokens:,} token presentations; run '{args.run}'")
    precision, why = config.precision()
    native, native_why = native_bf16(config.train.device)
    print(f"precision {precision}" + (f" (auto: {why})" if config.train.precision == "auto" else
                                      f" (as asked, but {native_why})" if precision == "bf16"
                                      and not native else ""))
    try:
        result = run_experiment(config, name=name, on_event=_progress_printer(args.quiet))
    finally:
        release_run_name(name)  # only if nothing was saved into the reservation
    _print_result(args.run, result)


def _check_memory(config) -> None:
    """The Train page's memory check (limits.memory_problem: ConfigError saying what to reduce)
    and a line on stderr with the estimate and the app's time budget, which this command, run
    by whoever owns the machine, doesn't apply."""
    from bharateo.errors import ConfigError
    from bharateo.jobs.limits import (available_bytes, gigabytes, max_training_seconds,
                                 memory_problem, training_memory)

    available = available_bytes()
    if problem := memory_problem(config, available):
        raise ConfigError(problem)
    budget = max_training_seconds()
    free = f" of {gigabytes(available)} free" if available is not None else ""
    print(f"peak memory about {gigabytes(training_memory(config).total)} (an estimate){free}; "
          + (f"the app stops a training at {budget / 60:g} min (BHARATEO_MAX_TRAINING_S), "
             if budget else "the app sets no time limit (BHARATEO_MAX_TRAINING_S=none), ")
          + "this command trains to the end", file=sys.stderr)


def _progress_printer(quiet: bool):
    """on_event for training: a tqdm bar per epoch (stderr) and one line per epoch (stdout)."""
    from tqdm import tqdm

    from bharateo.config.schema import number_text
    from bharateo.training.loop import EpochMetrics

    bar = {}

    def on_event(event):
        if isinstance(event, EpochMetrics):
            bar.pop("bar").close()
            held = ("" if event.heldout_rec_mae is None else
                    f" | held-out MAE {number_text(event.heldout_rec_mae, 4)} acc "
                    f"{number_text(event.heldout_esa_acc)} (majority "
                    f"{number_text(event.heldout_majority_acc)}, balanced "
                    f"{number_text(event.heldout_esa_balanced)})")
            print(f"epoch {event.epoch:02d} | loss {event.loss:.4f} | rec SmoothL1 {event.rec:.4f} | "
                  f"ESA CE {event.esa:.3f} | masked MAE {event.rec_mae:.4f} | ESA acc "
                  f"{event.esa_acc:.3f} (majority {number_text(event.majority_acc)}, balanced "
                  f"{number_text(event.esa_balanced)}) | {event.chips_per_s:.0f} chips/s{held}",
                  flush=True)
            return
        if "bar" not in bar:
            bar["bar"] = tqdm(total=event.steps_per_epoch, desc=f"epoch {event.epoch}",
                              leave=False, file=sys.stderr, disable=quiet)
        bar["bar"].update(1)
        bar["bar"].set_postfix(loss=f"{event.loss:.4f}")

    return on_event


def _print_result(requested: str, result) -> None:
    from bharateo.training.experiment import saved_as_message
    from bharateo.config.schema import number_text

    from bharateo.training.evaluate import quality_reading
    from bharateo.training.experiment import split_quality

    print(result.end.message)
    for key, value in result.metrics.items():  # a score that was NaN/inf is None: shown as —
        print(f"  {key}: {value if isinstance(value, (str, int)) else number_text(value, 4)}")
    print("ESA accuracy beside its baselines (majority: always answering the most common class; "
          "balanced: mean per-class recall):")
    for split, where in (("train", "the training chips (last epoch)"),
                         ("heldout", "the held-out chips")):
        if result.metrics.get(f"{split}_esa_acc") is not None:
            print("  " + quality_reading(split_quality(result.metrics, split), where))
    if note := saved_as_message(requested, result.path.name):
        print(note)
    print(f"saved to {result.path}")


def cmd_train_store(args, config) -> None:
    """`train --chips-dir DIR`: train on a chip store, in one process or as one rank under
    torchrun (bharateo/training/distributed.py). Rank 0 reserves the name, prints and saves; a SIGTERM
    (torchrun stopping the job because another rank failed) ends this rank with a message,
    releasing the reservation, so no run is left half-written. Once the rank is ending (its own
    error, e.g. the other rank's death seen first, or done), a SIGTERM is ignored: raised in
    the middle of the release it left an empty run folder, and in the middle of the message a
    traceback."""
    import os
    import signal

    from bharateo.training import distributed
    from bharateo.errors import DistributedError
    from bharateo.storage.runs import release_run_name, reserve_run_name

    env = distributed.rank_env()
    rank, world = (env[0], env[1]) if env else (0, 1)
    where = f"rank {rank}: " if world > 1 else ""

    ending = {"now": False}  # set first thing in `finally` (a plain store: no call the
    # handler could run at before it), so nothing can cut the release or the message short

    def stopped(signum, frame):
        if ending["now"]:
            return
        ending["now"] = True
        raise DistributedError(f"{where}stopped by signal {signal.Signals(signum).name} (torchrun "
                               "stops every rank when one fails; its error is printed above). "
                               "Nothing was saved.")

    signal.signal(signal.SIGTERM, stopped)
    name = ranks = None
    try:
        if rank == 0:  # before joining: a taken name fails now, not after training
            name = reserve_run_name(args.run, exact=True)
        ranks = distributed.join(getattr(config.train, "device", "cpu"))
        if ranks is not None:
            # One write of the whole line: print() writes text and newline separately, and
            # two ranks sharing torchrun's stderr then interleave their banners on one line.
            sys.stderr.write(f"bharateo: rank {rank}/{world} pid {os.getpid()} on {ranks.device} "
                             f"({ranks.backend})\n")
            sys.stderr.flush()
        if rank == 0:
            config, store, _ = distributed.open_store(config, args.chips_dir)
            print(f"{config.parameters / 1e6:.2f}M parameters, {config.tokens().total_tokens:,} "
                  f"token presentations; {len(store):,} chips ({' '.join(store.bands)}) from "
                  f"{args.chips_dir}; "
                  f"{world} process{'es' if world > 1 else ''}; run '{args.run}'", flush=True)
        result = distributed.train_from_store(
            config, args.chips_dir, name, _progress_printer(args.quiet) if rank == 0 else None, ranks)
        if result is not None:
            _print_result(args.run, result)
    except BharatEOError as exc:
        if where and not str(exc).startswith(where):
            raise DistributedError(f"{where}{exc}") from None
        raise
    finally:
        ending["now"] = True
        if name is not None:
            release_run_name(name)  # only if nothing was saved into the reservation
        if ranks is not None:
            ranks.close()


def _region_specs(args):
    """--region NAME,LON,LAT[,SIZE] (repeatable), else the --lon/--lat region or the notebook's."""
    from bharateo.data.roi import RoiSpec

    if not args.region:
        return _roi_specs(args)
    if args.lon is not None or args.lat is not None:
        raise BharatEOError("Give regions either with --region or with --lon/--lat, not both.")
    specs = []
    for text in args.region:
        parts = [p.strip() for p in text.split(",")]
        try:
            if len(parts) not in (3, 4):
                raise ValueError
            size = int(parts[3]) if len(parts) == 4 else args.size
            specs.append(RoiSpec(parts[0], float(parts[1]), float(parts[2]), size))
        except ValueError:
            raise BharatEOError(f"--region {text!r} should be NAME,LON,LAT or NAME,LON,LAT,SIZE "
                                "(e.g. --region agra,78.01,27.18,2048).") from None
    return specs


def cmd_chips_build(args) -> None:
    """`chips build`: the regions read from the chips' source exactly as `train --source` reads
    them (experiment.load_rois: WorldCover, or Sentinel-2 from BHARATEO_S2_DIR or STAC within
    --dates and --max-cloud), cut into a chip store (chipstore.build_store)."""
    from pathlib import Path

    from tqdm import tqdm

    from bharateo.data.chips import ChipConfig
    from bharateo.training.experiment import RunConfig, load_rois
    from bharateo.config.settings import from_args
    from bharateo.storage.chipstore import ChipStore, build_store

    config = RunConfig(rois=tuple(_region_specs(args)),
                       chips=ChipConfig(**from_args(ChipConfig, args))).validate()
    rois = load_rois(config.rois, chips=config.chips)
    total = config.chips.n_chips + (config.chips.n_holdout_chips if config.chips.holdout_roi else 0)
    with tqdm(total=total, desc="chips", file=sys.stderr, disable=args.quiet) as bar:
        out = build_store(Path(args.out), rois, config.chips, args.shard_size,
                          progress=lambda done, _total: bar.update(done - bar.n))
    store = ChipStore(out)
    labels = sorted({r.data_label for r in rois})
    print(f"{len(store):,} chips in {store.describe()['shards']} shard(s) at {out} "
          f"({', '.join(f'{k}: {v}' for k, v in store.chips_per_roi().items())}); data: "
          f"{'; '.join(labels)}")
    if store.band_stats is not None:  # a Sentinel-2 store: its bands, scenes and normalisation
        scenes = {r["name"]: f"{r['scene_id']} ({r['scene_date']})"
                  for r in store.manifest["regions"]}
        print(f"bands {' '.join(store.bands)}; scenes: "
              f"{', '.join(f'{k}: {v}' for k, v in scenes.items())}; per-band normalisation from "
              f"{store.band_stats.pixels:,} valid training pixels")
    if "heldout" in store.manifest["splits"]:
        print(f"{len(ChipStore(out, 'heldout')):,} held-out chips")


def cmd_chips_verify(args) -> None:
    from bharateo.storage.chipstore import ChipStore, read_manifest

    for split in read_manifest(args.dir)["splits"]:
        store = ChipStore(args.dir, split)
        store.verify()
        print(f"{split}: {len(store):,} chips, every shard file matches its checksum")


def cmd_evaluate(args) -> None:
    from bharateo.data.chips import build_chip_sets
    from bharateo.models.device import resolve_precision
    from bharateo.training.evaluate import evaluate, quality_of, quality_reading, score_text
    from bharateo.training.evaluate import class_table
    from bharateo.training.experiment import RunConfig, load_rois
    from bharateo.storage.runs import load_model, load_run
    from bharateo.data.worldcover import CLASS_NAMES

    run = load_run(args.run)
    config = RunConfig.from_dict(run.config)
    model = load_model(run, device=args.device)
    train_chips, heldout = build_chip_sets(load_rois(config.rois, chips=config.chips), config.chips)
    t = config.train  # the run's precision, auto resolved for this device as training would
    precision = resolve_precision(t.precision, args.device, config.model, t.batch_size,
                                  t.mask_ratio)[0]
    results = {"train": evaluate(model, train_chips, args.mask_ratio, precision=precision)}
    if heldout is not None:
        results["heldout"] = evaluate(model, heldout, args.mask_ratio, precision=precision)
    if args.json:
        print(json.dumps(results))
        return
    for split, res in results.items():
        q = quality_of(res)
        print(f"\n[{split}] {res['chips']} chips, mask {res['mask_ratio']}: accuracy "
              f"{res['accuracy']:.3f} (majority baseline {score_text(q['majority_accuracy'])}, "
              f"always '{q['majority_class']}'; balanced accuracy "
              f"{score_text(q['balanced_accuracy'])}), masked MAE {score_text(res['masked_mae'], 4)}")
        print(quality_reading(q, "the training chips" if split == "train" else "the held-out chips"))
        print(f"{'target / predicted':>18s} " + " ".join(f"{n[:6]:>6s}" for n in CLASS_NAMES))
        for name, row in zip(CLASS_NAMES, res["confusion"]):
            print(f"{name:>18s} " + " ".join(f"{v:6d}" for v in row))
        for row in class_table(res).itertuples(index=False):
            if row.support:
                print(f"  {row[0]:18s} P {score_text(row.precision)} R {score_text(row.recall)} "
                      f"F1 {score_text(row.F1)} n={row.support}")


def cmd_tokens(args) -> None:
    from bharateo.training.tokens import V0_NAME, token_accounting, v0_accounting

    rows = [("this run", token_accounting(args.chips, args.epochs, args.mask_ratio, args.in_chans,
                                          args.chip_size, args.patch_size)),
            (V0_NAME, v0_accounting(args.mask_ratio, args.chip_size, args.patch_size))]
    for label, a in rows:
        print(f"{label}:")
        print(f"  tokens per chip:               {a.tokens_per_chip:,}  ({a.token_dim:,} values each)")
        print(f"  total token presentations:     {a.total_tokens:,}")
        print(f"  visible token inputs:          {a.visible_tokens:,}")
        print(f"  masked token targets:          {a.masked_tokens:,}")
        print(f"  masked pixel regression targets: {a.masked_pixel_targets:,}")


def build_parser() -> argparse.ArgumentParser:
    from bharateo.data.chips import ChipConfig
    from bharateo.training.experiment import PRESETS, SECTIONS
    from bharateo.config.settings import add_flags

    parser = argparse.ArgumentParser(prog="python -m bharateo", description=(
        "BharatEO Lab: a tiny masked autoencoder on real ESA WorldCover pixels. Data comes from "
        "the public bucket, BHARATEO_WORLDCOVER_URL, or the folder BHARATEO_WORLDCOVER_DIR."))
    sub = parser.add_subparsers(dest="command", required=True)

    def add_settings(p, command):
        """The flags of every setting `command` takes, built from its declaration (one
        `setting()` field, bharateo/config/settings.py); main() checks them against their ranges."""
        p.set_defaults(declared=[s for cls in SECTIONS.values() for s in add_flags(p, cls, command)])

    def add_roi_flags(p, size=2048):
        p.add_argument("--lon", type=float, help="centre longitude (default: the notebook's three ROIs)")
        p.add_argument("--lat", type=float, help="centre latitude")
        p.add_argument("--size", type=int, default=size, help="ROI size in pixels (64-4096)")
        p.add_argument("--name", help="ROI name")

    s2_scenes = ("Sentinel-2 sources (s2-4band, s2-10band: L2A reflectance) read scenes from the "
                 "folder BHARATEO_S2_DIR or the STAC API BHARATEO_S2_STAC_URL (default Earth "
                 "Search), the least cloudy one within --dates and --max-cloud.")
    p = sub.add_parser("prefetch", help="fill the ROI cache so a class can work offline",
                       description=s2_scenes)
    add_roi_flags(p)
    add_settings(p, "prefetch")
    p.set_defaults(func=cmd_prefetch)

    p = sub.add_parser("inspect", help="tile, window bounds and native class counts of an ROI",
                       description=s2_scenes)
    add_roi_flags(p)
    add_settings(p, "inspect")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("train", help="train and save a run under checkpoints/",
                       description=s2_scenes)
    p.add_argument("--run", "--run-name", dest="run", required=True,
                   help="run name (letters, digits, . _ -); under torchrun write --run-name "
                   "(torchrun takes --run for its own --run-path)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="notebook default")
    add_roi_flags(p)
    for cls in SECTIONS.values():  # every declared setting with a flag; cmd_train checks them
        add_flags(p, cls)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--chips-dir", help="train on a chip store (python -m bharateo chips build); "
                   "also under torchrun --nproc_per_node=N -m bharateo train ...")
    p.set_defaults(func=cmd_train, paths={"chips_dir": ("--chips-dir", "folder")})

    p = sub.add_parser("chips", help="chip stores on disk, for large or distributed training")
    chips_sub = p.add_subparsers(dest="chips_command", required=True)
    p = chips_sub.add_parser("build", help="cut chips (as the app does) into .npy shards + manifest")
    p.add_argument("--out", required=True, help="new folder for the store")
    add_roi_flags(p)
    p.add_argument("--region", action="append", metavar="NAME,LON,LAT[,SIZE]",
                   help="a region to cut chips from (repeat for many regions and tiles)")
    add_flags(p, ChipConfig)  # the chip settings, checked by ChipConfig's bounds (up to MAX_CHIPS)
    p.add_argument("--shard-size", type=int, default=1024, help="chips per shard (default 1024)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_chips_build, paths={"out": ("--out", "new folder")})
    p = chips_sub.add_parser("verify", help="check every shard of a chip store against its checksums")
    p.add_argument("dir")
    p.set_defaults(func=cmd_chips_verify, paths={"dir": ("DIR", "folder")})

    p = sub.add_parser("evaluate", help="confusion matrix and scores of a saved run")
    p.add_argument("run")
    add_settings(p, "evaluate")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("tokens", help="the notebook's token accounting table")
    # not n_chips: the accounting counts chip sets of any size (docs/scale.md's 1M-chip plan),
    # beyond what one run may cut (its declared bounds); the default is the notebook's 384
    p.add_argument("--chips", type=int, default=ChipConfig().n_chips,
                   help=f"chips in the data set, 1 or more (default {ChipConfig().n_chips})")
    add_settings(p, "tokens")
    p.set_defaults(func=cmd_tokens)
    return parser


def _check_declared(args) -> None:
    """ConfigError naming each flag of a declared setting outside its declared range (train's
    are checked with the whole config, cmd_train)."""
    from bharateo.errors import ConfigError
    from bharateo.config.settings import flag_problems

    if problems := flag_problems(args, getattr(args, "declared", [])):
        raise ConfigError("Fix these settings: " + " ".join(problems))


def _check_paths(args) -> None:
    """ConfigError saying what is wrong with the first path flag (each subcommand's `paths`:
    dest -> (flag, "folder" | "new folder")) that can't be used, before any work is done."""
    from bharateo.errors import ConfigError
    from bharateo.storage.paths import folder_problem, new_folder_problem

    checks = {"folder": folder_problem, "new folder": new_folder_problem}
    for dest, (flag, kind) in getattr(args, "paths", {}).items():
        value = getattr(args, dest, None)
        if value is not None and (problem := checks[kind](value)):
            raise ConfigError(f"{flag} {value}: {problem}.")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        environment.check()  # a bad BHARATEO_* value stops every command before it starts
        _check_paths(args)
        _check_declared(args)
        args.func(args)
    except BharatEOError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a sentence, not a traceback; 130 is the shells' code
        print("stopped (Ctrl-C). Files are written whole or not at all, so nothing half-written "
              "was kept; run the command again to finish.", file=sys.stderr)
        return 130
    return 0
