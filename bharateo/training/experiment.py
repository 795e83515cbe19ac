"""One experiment end to end: ROIs -> chips -> model -> training -> saved run.

`experiment_events` is the one experiment loop: `run_experiment` (the CLI, benchmarks, tests)
and the app's training worker both train through it, so the app trains exactly what
`python -m bharateo train` trains.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, replace

from bharateo.data.chips import ChipConfig, ChipSet, build_chip_sets
from bharateo.errors import ConfigError
from bharateo.models.registry import model_class
from bharateo.models.device import resolve_precision
from bharateo.models.notebook import ModelConfig, TinyRGBMAE
from bharateo.data.roi import NOTEBOOK_ROIS, Roi, RoiSpec, load_roi
from bharateo.storage.runs import register_settings_check, save_run
from bharateo.config.schema import check_types, finite_or_none
from bharateo.config.settings import check_settings, problem, settings_of
from bharateo.data.sources import DEFAULT_SOURCE, pixel_source
from bharateo.training.tokens import token_accounting
from bharateo.training.evaluate import baseline_margin, majority_baseline, quality, verdict
from bharateo.training.loop import (HELDOUT_MASK_SEED, StepMetrics, TrainConfig, TrainedWeights, TrainingEnd,
                            changed_config, make_model, masked_scores, train,
                            training_support, SettingsChanged)
from bharateo.data.worldcover import DataSource


# RunConfig's sections and their classes: config.json, the CLI's flags and (bharateo/app/knobs.py)
# the Train page's knobs are built from these classes' declared settings (config/settings.py).
SECTIONS = {"chips": ChipConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Saved verbatim as config.json."""

    rois: tuple[RoiSpec, ...] = tuple(NOTEBOOK_ROIS)
    chips: ChipConfig = ChipConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        # the model always reads the chips it is given: their size, patches and band list (an
        # unknown source keeps in_chans as it is; validate() names the source)
        try:
            bands = self.chips.bands
        except ConfigError:
            bands = None
        object.__setattr__(self, "model", self.model.for_chips(self.chips.chip_size,
                                                               self.chips.patch_size, bands))

    def to_dict(self) -> dict:
        return {"rois": [asdict(r) for r in self.rois], "chips": self.chips.to_dict(),
                "model": self.model.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """The RunConfig that to_dict() wrote, checked (validate()). ConfigError naming the
        problem for anything else: not an object, a missing section, an unknown or wrong-typed
        field, a value out of range."""
        if not isinstance(d, dict):
            raise ConfigError(f"the settings are a JSON {type(d).__name__}, not an object")
        sections = {"rois": list, "chips": dict, "model": dict, "train": dict}
        for key, kind in sections.items():
            if not isinstance(d.get(key), kind):
                raise ConfigError(f"the '{key}' section is " + ("missing" if key not in d else
                                  f"a {type(d[key]).__name__}, not a {kind.__name__}"))
        if not all(isinstance(r, dict) for r in d["rois"]):
            raise ConfigError("every region in 'rois' must be an object")
        try:
            config = cls(rois=tuple(RoiSpec(**r) for r in d["rois"]),
                         **{key: SECTIONS[key](**d[key]) for key in SECTIONS})
        except TypeError as exc:  # an unknown or missing field
            raise ConfigError(f"unexpected settings ({exc})") from None
        return config.validate()

    def validate(self) -> "RunConfig":
        """Every field's type and range (regions, chips, model, training) before anything is
        built, with the same messages in the app and the CLI. Raises ConfigError."""
        if not self.rois:
            raise ConfigError("Choose at least one region.")
        for roi in self.rois:
            check_types(roi, "region")
        c = self.chips
        check_types(c, "chips")
        pixel_source(c.source)  # its message names the known sources
        check_settings(c, "chips", "Chips: ")
        if c.chip_size % c.patch_size:
            raise ConfigError(f"Chip size {c.chip_size} is not a multiple of the patch size "
                              f"{c.patch_size}.")
        check_source(c)
        self.model.validate()
        self.train.validate()
        return self

    def precision(self) -> tuple[str, str]:
        """(the precision training runs at, why): train.precision with auto resolved for this
        model, batch and mask ratio on train.device (device.resolve_precision, as train() does)."""
        t = self.train
        return resolve_precision(t.precision, t.device, self.model, t.batch_size, t.mask_ratio)

    @property
    def parameters(self) -> int:
        """Trainable parameters of the chosen variant at these sizes (nothing is built)."""
        return model_class(self.model.arch).parameter_count(self.model)

    def tokens(self):
        return token_accounting(self.chips.n_chips, self.train.epochs, self.train.mask_ratio,
                                self.model.in_chans, self.chips.chip_size, self.chips.patch_size)


register_settings_check(RunConfig.from_dict)  # a saved run's settings, checked as it is read back


PRESETS = {
    "notebook default": RunConfig(),
    "quick demo": RunConfig(chips=ChipConfig(n_chips=192), model=ModelConfig(embed_dim=64, depth=2),
                            train=TrainConfig(epochs=8, lr=2e-3)),  # ~3 s on 2 cores
    "bigger": RunConfig(chips=ChipConfig(n_chips=768), model=ModelConfig(embed_dim=192, depth=4, heads=6),
                        train=TrainConfig(epochs=30)),
    # the notebook default's data and objective, with fast mode's levers (issues 13 and 23; each
    # measured alone in docs/speed.md): the visible-only encoder; precision auto (bf16 only where
    # native and a step is big enough to pay, device.py); 4x the batch (a quarter of the steps,
    # each with less fixed cost per chip) with the learning rate scaled linearly with it (Goyal
    # et al. 2017, "Accurate, Large Minibatch SGD": 4 x 4e-4); 14 epochs instead of 20 (masked
    # MAE and ESA accuracy stay within 0.02 of the notebook model's 20 epochs; 12 do not)
    "fast (MAE encoder)": RunConfig(model=ModelConfig(arch="mae"),
                                    train=TrainConfig(precision="auto", batch_size=64, lr=1.6e-3,
                                                      epochs=14)),
}


def check_source(chips: ChipConfig) -> None:
    """ConfigError for an unknown source, or Sentinel-2 dates / cloud limit that can't be used.
    The Sentinel-2 modules are imported only for a Sentinel-2 source (a WorldCover run's
    start-up never needs them, docs/speed.md)."""
    pixel_source(chips.source)
    if chips.source == DEFAULT_SOURCE:
        return
    from bharateo.data.sentinel2 import S2_SOURCES, S2Query

    if chips.source in S2_SOURCES:
        S2Query(chips.dates, chips.max_cloud).check()


def load_rois(specs, source: DataSource | None = None, chips: ChipConfig | None = None,
              **kw) -> list[Roi]:
    """The regions of a run: WorldCover regions, or Sentinel-2 regions (with WorldCover labels
    from `source`) when `chips.source` is a Sentinel-2 source; `kw` goes to the loader."""
    if chips is not None and chips.source != "worldcover":
        from bharateo.data.sentinel2 import S2_SOURCES, S2Query, load_s2_roi

        check_source(chips)
        query = S2Query(chips.dates, chips.max_cloud)
        return [load_s2_roi(spec, S2_SOURCES[chips.source], query, wc_source=source, **kw)
                for spec in specs]
    return [load_roi(spec, source, **kw) for spec in specs]


@dataclass
class ExperimentResult:
    model: TinyRGBMAE
    history: list[dict]
    end: TrainingEnd
    metrics: dict
    train_chips: ChipSet
    heldout_chips: ChipSet | None
    path: object = None
    steps: list = field(default_factory=list)


def final_metrics(model, config: RunConfig, end: TrainingEnd, train_chips, heldout) -> dict:
    """metrics.json: last epoch's training metrics, held-out metrics, and how the run ended;
    each accuracy with its baselines (evaluate.quality): <split>_majority_acc and
    <split>_majority_class (always answering the split's most common class, no-data left out),
    <split>_balanced_acc (balanced accuracy), <split>_balanced_floor (what answering one class
    scores there) and <split>_margin (evaluate.baseline_margin); split_quality reads them back."""
    last = end.history[-1] if end.history else {}
    precision, why = config.precision()
    metrics = {"end_reason": end.reason, "end_message": end.message,
               "epochs_done": end.epochs_done, "parameters": config.parameters,
               "precision": precision, "precision_reason": why,
               **{f"train_{k}": last.get(k) for k in ("loss", "rec", "esa", "rec_mae", "esa_acc")}}
    support = training_support(train_chips)
    name, share = majority_baseline(support)
    metrics.update(train_balanced_acc=last.get("esa_balanced"), train_majority_acc=share,
                   train_majority_class=name,
                   train_balanced_floor=1 / max(int((support > 0).sum()), 1),
                   train_margin=baseline_margin(share or 0.0, len(train_chips)))
    if heldout is not None and len(heldout):
        held = masked_scores(model, heldout, config.train.mask_ratio, HELDOUT_MASK_SEED,
                             precision=precision)
        q = quality(held["confusion"], len(heldout))
        metrics.update(heldout_rec_mae=held["rec_mae"], heldout_esa_acc=held["esa_acc"],
                       heldout_balanced_acc=q["balanced_accuracy"],
                       heldout_majority_acc=q["majority_accuracy"],
                       heldout_majority_class=q["majority_class"],
                       heldout_balanced_floor=q["balanced_floor"], heldout_margin=q["margin"])
    return finite_or_none(metrics)  # a NaN score is "unknown" (None), never NaN in JSON


def split_quality(metrics: dict, split: str) -> dict:
    """metrics.json's accuracy of `split` ("train" or "heldout") beside its baselines, as
    evaluate.quality returns them (accuracy, majority_class, majority_accuracy,
    balanced_accuracy, balanced_floor, margin, verdict). Runs saved before baselines existed
    have None there and verdict "unknown"."""
    get = lambda key: metrics.get(f"{split}_{key}")  # noqa: E731
    q = {"accuracy": get("esa_acc"), "majority_class": get("majority_class"),
         "majority_accuracy": get("majority_acc"), "balanced_accuracy": get("balanced_acc"),
         "balanced_floor": get("balanced_floor"), "margin": get("margin")}
    q["verdict"] = verdict(q["accuracy"], q["majority_accuracy"], q["balanced_accuracy"],
                           q["balanced_floor"], q["margin"])
    return q


def provenance_summary(rois: list[Roi]) -> list[dict]:
    out = []
    for r in rois:
        row = {"name": r.spec.name, "source": r.provenance.get("source"),
               "synthetic": r.synthetic, "bounds": r.provenance.get("bounds"),
               "tiles": [t["tile"] for t in r.provenance.get("tiles", [])]}
        if r.provenance.get("kind") == "sentinel2":  # the scene, so the run says what it read
            row.update({k: r.provenance.get(k) for k in (
                "scene_id", "scene_date", "cloud_cover", "mgrs_tile", "bands", "crs",
                "reflectance_rule", "pixel_m")}, data=r.data_label)
        out.append(row)
    return out


def save_experiment(name, config: RunConfig, result: ExperimentResult, rois, extra=None):
    """save_run of a finished experiment -> the run's folder (its name may differ from `name`
    when the name was taken meanwhile: see renamed()). RunSaveError on a full/read-only disk."""
    meta = {**config.to_dict(), "data": provenance_summary(rois), **(extra or {})}
    return save_run(name, result.model, meta, result.history, result.metrics)


def renamed(requested: str, path) -> dict:
    """{"run_name": the name saved under, "requested_name": `requested` if it was taken}."""
    return {"run_name": path.name, "requested_name": None if path.name == requested else str(requested)}


def new_run_problems(config: RunConfig) -> dict[str, str]:
    """setting name -> settings.problem's sentence (with a new run's limits: epochs 1-500, ...)
    for each declared setting of the config's chips, model and training that a new run refuses;
    a name two sections share (`seed`) is said once. Empty: all fine. The CLI's `train` names
    them by flag; the Train page checks its knobs with the same function (app/knobs.py)."""
    out = {}
    for key, cls in SECTIONS.items():
        section = getattr(config, key)
        for s in settings_of(cls):
            if s.name not in out and (p := problem(s, getattr(section, s.name, s.default),
                                                   new_run=True)):
                out[s.name] = p
    return out


def saved_as_message(requested: str | None, saved: str) -> str:
    """The sentence telling a user their run went under another name ('' if it didn't)."""
    if not requested or requested == saved:
        return ""
    return (f"The name '{requested}' was taken by another run meanwhile, so this run is saved as "
            f"'{saved}'.")


def experiment_events(config: RunConfig, train_chips: ChipSet, heldout: ChipSet | None = None,
                      stop: threading.Event | None = None, model: TinyRGBMAE | None = None,
                      ranks=None, changes=None):
    """The one experiment loop: train `model` (default: a fresh one seeded with
    config.train.seed) on the chips with config.train; yields every StepMetrics, EpochMetrics and
    TrainingEnd of train.train, then one TrainedWeights (the weights and metrics.json's metrics,
    final_metrics). Raises ConfigError (bad settings, a missing device) before the first step.
    `ranks`: a distributed.RankGroup under torchrun (train.train's); then only rank 0 yields
    TrainedWeights (it alone evaluates and saves).
    `changes`: train.train's (settings changed while paused); the final metrics are computed
    with the settings as they ended (e.g. the last mask ratio)."""
    model = model if model is not None else make_model(config.model, config.train.seed)
    end = None
    for event in train(model, train_chips, config.train, heldout, stop, ranks=ranks,
                       changes=changes):
        end = event if isinstance(event, TrainingEnd) else end
        if isinstance(event, SettingsChanged):
            config = replace(config, train=changed_config(config.train, event.changes))
        yield event
    if ranks is None or ranks.rank == 0:
        yield TrainedWeights.of(model, final_metrics(model, config, end, train_chips, heldout))


def run_experiment(config: RunConfig, rois: list[Roi] | None = None, name: str | None = None,
                   on_event=None, stop: threading.Event | None = None,
                   model: TinyRGBMAE | None = None) -> ExperimentResult:
    """Build chips, train (experiment_events), (optionally) save. `on_event` sees every
    StepMetrics/EpochMetrics."""
    config.validate()
    rois = rois if rois is not None else load_rois(config.rois, chips=config.chips)
    train_chips, heldout = build_chip_sets(rois, config.chips)
    model = model or make_model(config.model, config.train.seed)
    end, steps, metrics = None, [], None
    for event in experiment_events(config, train_chips, heldout, stop, model):
        if isinstance(event, TrainedWeights):
            metrics = event.metrics
        elif isinstance(event, TrainingEnd):
            end = event
        else:
            if on_event is not None:
                on_event(event)
            if isinstance(event, StepMetrics):
                steps.append(event)
    result = ExperimentResult(model, end.history, end, metrics, train_chips, heldout, steps=steps)
    if name:
        result.path = save_experiment(name, config, result, rois)
    return result
