"""The training loop: the notebook's optimiser, schedule and losses, one event per step/epoch.

`train()` is a generator so every caller (CLI progress bar, the app's training worker, tests)
sees the same numbers as they happen. It stops between steps when asked, keeps the last good
weights on a NaN/inf loss, and is deterministic under its seed. It runs on `config.device` under
`config.precision` (bharateo/models/device.py); the chip order and masks come from a CPU generator, so
they are the same on every device.
"""
from __future__ import annotations

import io
import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn as nn

from bharateo.models.registry import build_model
from bharateo.data.chips import ChipSet, tokens_for
from bharateo.models.device import (autocast, check_device_name, check_precision, cpu_state_dict,
                             resolve_device, resolve_precision)
from bharateo.errors import ConfigError
from bharateo.models.device import DEVICES, PRECISIONS
from bharateo.training.evaluate import (balanced_accuracy, class_support, confusion_matrix,
                               majority_baseline, masked_batches)
from bharateo.models.notebook import ModelConfig, TinyRGBMAE, check_mask_ratio, random_patch_mask
from bharateo.config.schema import check_types
from bharateo.config.settings import check_settings, setting
from bharateo.data.worldcover import IGNORE_INDEX, NUM_CLASSES
from bharateo.words import plural

# fixed masks for held-out metrics (every epoch's and the saved run's), so they are comparable
HELDOUT_MASK_SEED = 1234
BLOW_UP_FACTOR = 20.0  # a loss this many times the first step's has diverged
PRERENDER_BYTES = 256 * 2**20  # render every chip's tokens once if they fit in this much memory
MAX_EPOCHS, MAX_BATCH = 100_000, 4096


@dataclass(frozen=True)
class TrainConfig:
    """The optimiser, schedule and objective (the notebook's values by default). Each field is
    declared once with its label, bounds, a new run's limits and help (bharateo/config/settings.py):
    the CLI's flags, validate() and (bharateo/app/knobs.py) the Train page's knobs come from these."""

    lr: float = setting(4e-4, label="learning rate", bounds=(0, None), strict=True,
                        limits=(1e-6, 10.0), live=True,
                        help="at 0 the model never changes, below 1e-6 hardly; the notebook uses 4e-4")
    weight_decay: float = setting(0.05, label="weight decay", bounds=(0, None),
                                  limits=(0.0, 1.0), live=True,
                                  help="AdamW's decay is a share from 0 to 1 (the notebook uses 0.05)")
    epochs: int = setting(20, label="epochs", bounds=(1, MAX_EPOCHS), limits=(1, 500),
                          commands=("tokens",),
                          help="a run needs at least one pass over its chips")
    batch_size: int = setting(16, label="batch size", bounds=(1, MAX_BATCH),
                              help="chips per optimiser step (the notebook's 16)")
    cosine: bool = setting(True, label="cosine schedule",
                           help="cosine learning-rate decay over the epochs (the notebook's), "
                                "else a constant rate")
    mask_ratio: float = setting(0.75, label="mask ratio", bounds=(0, 1), strict=True,
                                check=check_mask_ratio, live=True,
                                commands=("evaluate", "tokens"),
                                help="share of each chip's patches hidden; at 0 there is nothing "
                                     "to reconstruct, at 1 nothing to see")
    patch_loss_weight: float = setting(0.2, label="patch-loss weight",
                                       bounds=(0, None), live=True,
                                       help="weight of the ESA patch-class loss beside the pixel "
                                            "loss (the notebook uses 0.2)")
    class_weighting: str = setting(
        "off", label="class weights", choices=("off", "effective", "inverse"),
        help="fight class imbalance in the patch-class loss: off is the notebook's plain loss; "
             "effective weighs each class by 1 / its effective number of patches (Cui et al., "
             "CVPR 2019, beta 0.9999); inverse by 1 / its patch count. Rare classes (water, "
             "built-up, grass) then count as much as the common one")
    seed: int = setting(42, label="seed", bounds=(0, 2**63 - 1), limits=(0, 2**31 - 1),
                        help="seeds are whole numbers from 0 to 2^31 - 1")
    # runs saved before devices existed trained on the CPU in fp32
    device: str = setting("cpu", label="device", choices=DEVICES, check=check_device_name,
                          commands=("evaluate",),
                          help="where the model trains or runs (cpu, or a GPU: cuda, Apple's mps)")
    precision: str = setting("fp32", label="precision", choices=PRECISIONS,
                             check=check_precision,
                             help="fp32: the notebook's exact arithmetic; bf16: matmuls in "
                                  "bfloat16, weights and losses fp32, fast only where the "
                                  "processor has it natively; auto: bf16 only there and when a "
                                  "step is big enough to gain (device.resolve_precision)")

    def validate(self) -> "TrainConfig":
        """Types, names and bounds of every setting (check_settings; ConfigError naming the value
        and the allowed range). NaN and inf are refused everywhere. The device is checked by name
        only: whether this machine has it is checked when training starts
        (device.resolve_device), so a run trained on a GPU still loads on a laptop."""
        check_types(self, "training")
        check_settings(self, "training")  # the mask ratio, device, precision: their own checks
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepMetrics:
    epoch: int
    step: int  # 1-based within the epoch
    steps_per_epoch: int
    global_step: int
    loss: float
    rec: float
    esa: float
    rec_mae: float
    esa_acc: float
    lr: float
    chips_per_s: float
    elapsed: float
    majority_acc: float | None = None  # always answering the training chips' most common class

    @property
    def progress(self) -> float:
        """Fractional epoch, for plotting steps on the epoch axis."""
        return self.epoch - 1 + self.step / self.steps_per_epoch


@dataclass
class EpochMetrics:
    epoch: int
    loss: float
    rec: float
    esa: float
    rec_mae: float
    esa_acc: float
    lr: float
    chips_per_s: float
    elapsed: float
    heldout_rec_mae: float | None = None
    heldout_esa_acc: float | None = None
    # baselines (evaluate.quality): esa_acc's balanced accuracy over the epoch's patches, and
    # always answering the training chips' most common class; the same on the held-out chips.
    # None in histories saved before baselines existed.
    esa_balanced: float | None = None
    majority_acc: float | None = None
    heldout_esa_balanced: float | None = None
    heldout_majority_acc: float | None = None


@dataclass
class TrainingEnd:
    reason: str  # "finished" | "stopped" | "diverged"
    message: str
    epochs_done: int
    history: list[dict] = field(default_factory=list)


@dataclass
class TrainedWeights:
    """The last event of an experiment (experiment.experiment_events), after TrainingEnd: the
    trained weights as `torch.save` bytes of a CPU state_dict (so the event crosses a process
    boundary, e.g. from the app's training worker, and loads on any device) and metrics.json's
    metrics (experiment.final_metrics)."""

    weights: bytes
    metrics: dict

    @classmethod
    def of(cls, model: nn.Module, metrics: dict) -> "TrainedWeights":
        buffer = io.BytesIO()
        torch.save(cpu_state_dict(model), buffer)
        return cls(buffer.getvalue(), metrics)

    def state_dict(self) -> dict:
        """The weights as a CPU state_dict (torch.load with weights_only=True: never unpickles
        an object)."""
        return torch.load(io.BytesIO(self.weights), map_location="cpu", weights_only=True)


@dataclass
class TrainingPaused:
    """Not yielded by train(): sent by a consumer that stopped pulling train()'s events (the
    app's worker, on Pause or after a Step). The loop is paused after optimiser step
    `global_step` (epoch `epoch`, step `step` within it); `by` is what paused it ("pause",
    "step" or "epoch"); `commands`: how many pause/resume/step commands the consumer had received
    (a pause that answers an older command than the latest is already out of date). Pulling the
    next event resumes it exactly where it was."""

    global_step: int
    epoch: int
    step: int
    by: str
    commands: int = 0


@dataclass
class SettingsChanged:
    """Yielded by train() when settings changed while it was paused (its `changes` callable
    returned some) take effect: from optimiser step `global_step` + 1 on (epoch `epoch`), which
    sits at `progress` on the epoch axis (StepMetrics.progress of the step before). `changes`:
    setting name -> new value (live settings only, changed_config); `lr`: the optimiser's
    learning rate from that step on (the new base rate with the cosine schedule applied)."""

    global_step: int
    epoch: int
    progress: float
    changes: dict
    lr: float


def live_settings() -> dict[str, str]:
    """The training settings that may change while a training is paused, name -> label (those
    declared live=True: learning rate, weight decay, mask ratio, patch-loss weight)."""
    from bharateo.config.settings import settings_of

    return {s.name: s.label for s in settings_of(TrainConfig) if s.live}


def changed_config(config: TrainConfig, changes: dict) -> TrainConfig:
    """`config` with `changes` (setting name -> new value) for a paused training to go on with.

    Raises ConfigError, in words: for a setting that changes the model's shape (a ModelConfig
    field: the weights could not be kept), one fixed once training started (epochs, batch size,
    seed, schedule, device, precision: the run's step plan and draws), an unknown name, or a value
    its declaration refuses (TrainConfig.validate)."""
    from bharateo.config.settings import settings_of

    live = live_settings()
    labels = {s.name: s.label for cls in (TrainConfig, ModelConfig) for s in settings_of(cls)}
    allowed = ", ".join(live.values())
    for name in changes:
        label = labels.get(name, name)
        if name in {s.name for s in settings_of(ModelConfig)}:
            raise ConfigError(f"'{label}' changes the model's shape, so it can't change in a paused "
                              f"training (the trained weights would not fit). While paused you can "
                              f"change {allowed}; for another {label}, stop and train a new run.")
        if name not in live:
            raise ConfigError(f"'{label}' is fixed once a training has started (it sets the run's "
                              f"steps or random draws). While paused you can change {allowed}; "
                              f"for another {label}, stop and train a new run." if name in labels
                              else f"There is no training setting '{name}'. While paused you can "
                                   f"change {allowed}.")
    return replace(config, **changes).validate()


def _apply_changes(config: TrainConfig, changes: dict, optimizer, scheduler
                   ) -> tuple[TrainConfig, float]:
    """changed_config, and the optimiser set to it from the next step: every param group's
    weight decay, and its learning rate as the new base rate under the schedule so far (the
    cosine factor of the epochs done, CosineAnnealingLR's closed form with eta_min 0, whose
    recursive update then goes on from there). -> (new config, learning rate from now on)."""
    config = changed_config(config, changes)
    factor = 1.0
    if scheduler is not None:
        factor = (1 + math.cos(math.pi * scheduler.last_epoch / scheduler.T_max)) / 2
        scheduler.base_lrs = [config.lr for _ in scheduler.base_lrs]
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr
        group["lr"] = config.lr * factor
        group["weight_decay"] = config.weight_decay
    return config, optimizer.param_groups[0]["lr"]


def make_model(model_config: ModelConfig, seed: int) -> nn.Module:
    """A freshly initialised model; the same seed always gives the same weights."""
    torch.manual_seed(seed)
    return build_model(model_config)


# Cui et al. 2019 try 0.9-0.9999 and find 0.9999 best on long-tailed CIFAR-10 with softmax
# cross-entropy. At 0.999 the effective number of a class saturates near 1,000 patches, so the
# ~12,000 tree patches of a São Tomé quick demo still outweighed every other class together and
# the model kept answering tree (docs/honest_scores.md); at 0.9999 it saturates near 10,000.
EFFECTIVE_BETA = 0.9999


def class_weights(support, scheme: str, beta: float = EFFECTIVE_BETA) -> torch.Tensor | None:
    """Per-class weights of the patch-class loss from the training patches' class counts.

    `support`: K patch counts per class (evaluate.class_support of the training chips, no-data
    left out). `scheme`:
      "off"        None: the notebook's unweighted cross-entropy;
      "effective"  w_k = (1 - beta) / (1 - beta ** n_k), 1 / the class's effective number of
                   samples (Cui, Jia, Lin, Song, Belongie, "Class-Balanced Loss Based on
                   Effective Number of Samples", CVPR 2019, eq. 4), beta = EFFECTIVE_BETA
                   (0.9999, their best on long-tailed CIFAR-10);
      "inverse"    w_k = 1 / n_k (the beta -> 1 limit of the above).
    Weights of the classes present are scaled to sum to the number of classes present (Cui et
    al.'s normalisation, so the loss keeps its scale); an absent class gets 0 (it is never a
    target). -> K float32 tensor, or None for "off". ConfigError for another scheme.
    """
    if scheme == "off":
        return None
    if scheme not in ("effective", "inverse"):
        raise ConfigError(f"Class weights must be 'off', 'effective' or 'inverse', not {scheme!r}.")
    n = torch.as_tensor(np.asarray(support), dtype=torch.float64)
    present = n > 0
    w = torch.zeros_like(n)
    if scheme == "inverse":
        w[present] = 1.0 / n[present]
    else:
        w[present] = (1.0 - beta) / (1.0 - beta ** n[present])
    if present.any():
        w = w * (int(present.sum()) / w.sum())
    return w.float()


def training_support(chips, block: int = 4096) -> np.ndarray:
    """K patch counts per class over all of `chips` (a ChipSet, or a ChipStore read `block`
    chips at a time so memory does not grow with the store: train() reads a batch at a time),
    no-data left out."""
    if not getattr(chips, "streamed", False):
        return class_support(chips.patch_targets().numpy())
    support = np.zeros(NUM_CLASSES, dtype=np.int64)
    for start in range(0, len(chips), block):
        support += class_support(chips.patch_targets(slice(start, start + block)).numpy())
    return support


def masked_scores(model: TinyRGBMAE, chips: ChipSet, mask_ratio: float, seed: int,
                  batch_size: int = 128, precision: str = "fp32") -> dict:
    """{rec_mae, esa_acc, balanced_acc, majority_acc, confusion (K x K)} over `chips` with seeded masks
    (evaluate.masked_batches: eval mode, the model's device), no-data (IGNORE_INDEX) patches left
    out of all: masked MAE, ESA patch accuracy, its balanced accuracy (evaluate.balanced_accuracy)
    and the majority baseline on the same patches (evaluate.majority_baseline)."""
    abs_sum = n_abs = 0
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for tokens, targets, mask, pred, logits in masked_batches(model, chips, mask_ratio, seed,
                                                              batch_size, precision=precision):
        valid = targets != IGNORE_INDEX  # no-data patches are left out (see bharateo/data/chips.py)
        scored = mask & valid
        abs_sum += (pred[scored] - tokens[scored]).abs().sum().item()
        n_abs += tokens[scored].numel()
        confusion += confusion_matrix(targets.cpu().numpy(), logits.argmax(-1).cpu().numpy())
    total = int(confusion.sum())
    return {"rec_mae": abs_sum / max(n_abs, 1),
            "esa_acc": float(np.trace(confusion)) / max(total, 1),
            "balanced_acc": balanced_accuracy(confusion),
            "majority_acc": majority_baseline(confusion.sum(axis=1))[1],
            "confusion": confusion}


def masked_metrics(model: TinyRGBMAE, chips: ChipSet, mask_ratio: float, seed: int,
                   batch_size: int = 128, precision: str = "fp32") -> tuple[float, float]:
    """(masked MAE, ESA patch accuracy) of masked_scores."""
    scores = masked_scores(model, chips, mask_ratio, seed, batch_size, precision)
    return scores["rec_mae"], scores["esa_acc"]


def train(model: TinyRGBMAE, chips: ChipSet, config: TrainConfig, heldout: ChipSet | None = None,
          stop: threading.Event | None = None, ranks=None, changes=None):
    """Train `model` on `chips`; yields StepMetrics after every step, EpochMetrics after every
    epoch, and finally one TrainingEnd. The model keeps the weights of the last good step.

    `chips`: a ChipSet in memory or a store.ChipStore on disk (streamed batch by batch).
    `ranks`: None for one process, or a distributed.RankGroup under torchrun: every rank draws
    the same global order and masks from the seed, computes its slice of each global batch and
    gets the global batch's numbers back (so every event, and every divergence decision, is the
    same on all ranks and the same as one process's up to float rounding); held-out metrics are
    computed on rank 0 only.
    `changes`: None, or a callable the loop asks before every optimiser step for settings changed
    meanwhile (e.g. while its consumer paused): a dict of live settings (changed_config), or an
    empty one / None. Changes go into the optimiser and the mask draws from that step on, and
    one SettingsChanged is yielded before it; a refused change raises ConfigError.

    Diverged: a NaN/inf loss, or one over BLOW_UP_FACTOR x the first step's (at lr = 1 AdamW
    throws the loss from ~0.8 to ~50 without ever reaching NaN).
    The model is moved to `config.device` (it stays there) and every batch with it; forward and
    losses run under `autocast(device, precision)`, `precision` being config.precision with
    auto resolved for this model and batch (device.resolve_precision). Raises ConfigError for a
    bad config, a device this machine lacks, or chips the model can't read (size, patches,
    channels).
    """
    config.validate()
    if model.config.img_size != chips.chip_size or model.config.patch_size != chips.patch_size:
        raise ConfigError(f"The model expects {model.config.img_size} px chips with "
                          f"{model.config.patch_size} px patches, but the chips are "
                          f"{chips.chip_size} px with {chips.patch_size} px patches.")
    if model.config.in_chans != chips.channels:
        raise ConfigError(f"The model reads {model.config.in_chans} input channels, but the chips "
                          f"have {chips.channels} ({', '.join(chips.bands)}). Build the model "
                          "from the chips' pixel source (RunConfig does).")
    device = resolve_device(config.device)
    precision, _why = resolve_precision(config.precision, device, model.config, config.batch_size,
                                        config.mask_ratio)
    model.to(device)
    if chips.band_stats is not None and model.band_stats is None:
        model.band_stats = chips.band_stats  # the run's normalisation, saved with it (save_run)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay, fused=True)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                 if config.cosine else None)
    n = len(chips)
    steps_per_epoch = math.ceil(n / config.batch_size)
    batch_tokens, batch_targets = _token_source(model, chips, device), _target_source(chips, device)
    n_patches = chips.grid_size ** 2
    # no-data left out: the baseline's patches; a store is read a batch at a time, as in training
    support = training_support(chips, block=config.batch_size)
    majority = majority_baseline(support)[1]
    weights = class_weights(support, config.class_weighting)
    weights = None if weights is None else weights.to(device)
    history: list[dict] = []
    start, global_step, first_loss = time.perf_counter(), 0, None
    good = LastGoodWeights(model)
    model.train()
    for epoch in range(1, config.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        order = torch.randperm(n, generator=generator).numpy()
        totals = dict.fromkeys(("loss", "rec", "esa", "rec_mae", "esa_acc"), 0.0)
        confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
        epoch_start = time.perf_counter()
        for step in range(1, steps_per_epoch + 1):
            if stop is not None and stop.is_set():
                yield TrainingEnd("stopped", f"Stopped by you during epoch {epoch}.",
                                  epoch - 1, history)
                return
            if changes is not None and (asked := changes()):
                config, lr = _apply_changes(config, dict(asked), optimizer, scheduler)
                yield SettingsChanged(global_step, epoch, epoch - 1 + (step - 1) / steps_per_epoch,
                                      dict(asked), lr)
            step_start = time.perf_counter()
            idx = order[(step - 1) * config.batch_size: step * config.batch_size]
            mask = random_patch_mask(len(idx), n_patches, config.mask_ratio, generator).to(device)
            if ranks is None:
                tokens, targets = batch_tokens(idx), batch_targets(idx)
                with autocast(device, precision):
                    out = model.training_losses(tokens, targets, mask, config.patch_loss_weight,
                                                weights)
                batch_confusion = out.pop("confusion")
                values = {k: v.item() for k, v in out.items()}  # the step's numbers, read once
                step_loss = out["loss"]
            else:  # this rank's slice; values are the global batch's
                with autocast(device, precision):
                    step_loss, values = ranks.losses(idx, mask, batch_tokens, batch_targets,
                                                     config.patch_loss_weight, weights)
                batch_confusion = values.pop("confusion")
            loss = values["loss"]
            first_loss = loss if first_loss is None else first_loss
            if not math.isfinite(loss) or loss > BLOW_UP_FACTOR * first_loss:
                good.restore()  # these weights gave this loss: go back to the step before
                yield TrainingEnd("diverged", divergence_message(config, epoch, step, loss, first_loss),
                                  epoch - 1, history)
                return
            good.keep()  # the weights that gave a good loss, before this step changes them
            optimizer.zero_grad(set_to_none=True)
            step_loss.backward()
            optimizer.step()
            for k, v in values.items():
                totals[k] += v * len(idx)
            confusion += batch_confusion.cpu()
            global_step += 1
            yield StepMetrics(epoch, step, steps_per_epoch, global_step, lr=lr,
                              chips_per_s=len(idx) / (time.perf_counter() - step_start),
                              elapsed=time.perf_counter() - start, majority_acc=majority,
                              **values)
        if scheduler is not None:
            scheduler.step()
        if not good.current_is_finite():  # the epoch's last step broke the weights
            good.restore()
            yield TrainingEnd("diverged", divergence_message(config, epoch, steps_per_epoch,
                                                             math.nan, first_loss), epoch - 1, history)
            return
        row = EpochMetrics(epoch, lr=lr, chips_per_s=n / (time.perf_counter() - epoch_start),
                           elapsed=time.perf_counter() - start,
                           esa_balanced=balanced_accuracy(confusion.numpy()),
                           majority_acc=majority, **{k: v / n for k, v in totals.items()})
        if heldout is not None and len(heldout) and (ranks is None or ranks.rank == 0):
            held = masked_scores(model, heldout, config.mask_ratio, HELDOUT_MASK_SEED,
                                 precision=precision)
            row.heldout_rec_mae, row.heldout_esa_acc = held["rec_mae"], held["esa_acc"]
            row.heldout_esa_balanced = held["balanced_acc"]
            row.heldout_majority_acc = held["majority_acc"]
        history.append(asdict(row))
        yield row
    yield TrainingEnd("finished", f"Finished {plural(config.epochs, 'epoch')}.", config.epochs,
                      history)


class LastGoodWeights:
    """A copy of the model's parameters and buffers as they were at the last step whose loss was
    good (0.8M floats for the notebook's model: one copy per step costs ~0.3 ms of a ~45 ms step).
    Before the first keep() the model is untouched, so restore() does nothing."""

    def __init__(self, model: TinyRGBMAE):
        self.live = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.copy: list[torch.Tensor] | None = None

    @torch.no_grad()
    def keep(self) -> None:
        if self.copy is None:
            self.copy = [t.detach().clone() for t in self.live]
        else:
            for saved, live in zip(self.copy, self.live):
                saved.copy_(live)

    @torch.no_grad()
    def restore(self) -> None:
        if self.copy is not None:
            for saved, live in zip(self.copy, self.live):
                live.copy_(saved)

    @torch.no_grad()
    def current_is_finite(self) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in self.live)


def _token_source(model, chips: ChipSet, device: torch.device = torch.device("cpu")):
    """idx (numpy int array) -> B x N x T tokens on `device`: from one up-front rendering when it
    is small enough (the default 384 chips: 75 MB, saving ~2 ms a step), else rendered batch by
    batch and moved (always for a chip store on disk: its memory must not grow with the chip
    count)."""
    size = len(chips) * chips.grid_size ** 2 * chips.channels * chips.patch_size ** 2 * 4
    if size > PRERENDER_BYTES or getattr(chips, "streamed", False):
        return lambda idx: tokens_for(model, chips, idx).to(device, non_blocking=True)
    everything = tokens_for(model, chips).to(device)
    return lambda idx: everything[torch.from_numpy(idx).to(device)]


def _target_source(chips: ChipSet, device: torch.device = torch.device("cpu")):
    """idx (numpy int array) -> B x N int64 patch labels on `device`: all held as one tensor for
    chips in memory (8 bytes a token), read batch by batch from a chip store."""
    if getattr(chips, "streamed", False):
        return lambda idx: chips.patch_targets(idx).to(device, non_blocking=True)
    everything = chips.patch_targets().to(device)
    return lambda idx: everything[torch.from_numpy(idx).to(device)]


def divergence_message(config: TrainConfig, epoch: int, step: int, loss: float,
                       first_loss: float) -> str:
    what = ("became NaN/infinite" if not math.isfinite(loss) else
            f"blew up from {first_loss:.3g} to {loss:.3g} (over {BLOW_UP_FACTOR:g}x)")
    return (f"The loss {what} at epoch {epoch}, step {step}, so training stopped and kept the "
            f"weights from the step before. A learning rate of {config.lr:g} is probably too "
            "high: try 4e-4 (the notebook's) or something between 1e-4 and 2e-3.")
