"""Training past one process: DistributedDataParallel under torchrun, over a chip store.

    torchrun --nproc_per_node=N -m bharateo train --chips-dir DIR ...

torchrun starts N copies and gives each RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; `join()` reads them and opens the process group (gloo on CPU, nccl on CUDA) with
a timeout, so a rank that stops answering ends the job instead of hanging it. Then the one
training loop, train.train, runs on every rank with a RankGroup:

  - every rank draws the same global order and masks from the seed; rank r takes the r-th
    contiguous slice of each global batch (sizes differ by at most one chip) and reads only
    those chips from the store;
  - losses are weighted so that the gradients DDP averages equal the one-process gradient of
    the global batch exactly (see RankGroup.losses), for uneven slices and no-data patches too;
  - the step's numbers are all-reduced, so every rank sees, logs and judges divergence on the
    global batch's loss;
  - rank 0 alone prints progress, evaluates the held-out chips and writes the run (runs.save_run,
    atomic); a failing rank ends the job (torchrun stops the others) and nothing half-written is
    left.
With the same global batch and seed, N ranks give one process's losses and weights up to float
rounding (tests/test_distributed.py).
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import replace

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from bharateo.config import environment
from bharateo.errors import ConfigError, DistributedError
from bharateo.data.worldcover import IGNORE_INDEX

TIMEOUT_S = environment.DIST_TIMEOUT_S.default  # 300 s, BHARATEO_DIST_TIMEOUT_S: longest wait for another rank in one collective
LOSS_KEYS = ("rec", "esa", "rec_mae", "esa_acc")


class _Losses(nn.Module):
    """model.training_losses as forward(), so DDP sees the step (DDP hooks only forward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, patch_labels, mask, patch_loss_weight, class_weights=None):
        return self.model.training_losses(tokens, patch_labels, mask, patch_loss_weight,
                                          class_weights)


def rank_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's environment; None outside torchrun.
    DistributedError for values that don't make sense."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except (KeyError, ValueError):
        raise DistributedError("WORLD_SIZE is set but RANK or LOCAL_RANK is missing or not a "
                               "number: start distributed training with torchrun "
                               "(torchrun --nproc_per_node=N -m bharateo train ...).") from None
    if not (world >= 1 and 0 <= rank < world and local >= 0):
        raise DistributedError(f"Rank {rank} of world size {world} is impossible; start with torchrun.")
    return rank, world, local


def timeout_s() -> float:
    """BHARATEO_DIST_TIMEOUT_S (TIMEOUT_S unset). DistributedError, with the message of
    bharateo/config/environment.py, for a value that is not 1-86,400 seconds."""
    try:
        return environment.DIST_TIMEOUT_S.get()
    except ConfigError as exc:
        raise DistributedError(str(exc)) from None


class RankGroup:
    """This process's place in a distributed training: rank, world size, device, and the
    DDP-wrapped loss of the model (wrap()). Created by join()."""

    def __init__(self, rank: int, world_size: int, device: torch.device, backend: str):
        self.rank, self.world_size, self.device, self.backend = rank, world_size, device, backend
        self.ddp: DistributedDataParallel | None = None

    def wrap(self, model: nn.Module) -> None:
        """DDP over `model`'s losses (DDP broadcasts rank 0's weights; all ranks seed alike)."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(_Losses(model), device_ids=ids)

    def part(self, batch: int) -> slice:
        """This rank's contiguous share of a global batch of `batch` chips (np.array_split's)."""
        q, r = divmod(batch, self.world_size)
        start = self.rank * q + min(self.rank, r)
        return slice(start, start + q + (self.rank < r))

    def losses(self, idx, mask, tokens_of, targets_of, patch_loss_weight: float,
               class_weights: torch.Tensor | None = None):
        """One step on this rank's slice of the global batch `idx` (B chip indices, B x N mask)
        -> (loss to backpropagate, the global batch's {loss, rec, esa, rec_mae, esa_acc} and its
        K x K `confusion` tensor, summed over ranks).

        The model's losses are means: rec and rec_mae over the masked valid tokens it scores,
        esa_acc over the valid patches (IGNORE_INDEX ones left out), esa over the valid patches
        weighted by their class weight (`class_weights`, train.class_weights; 1 each when None).
        Weighting rank r's mean by its share of the global count (n_r / n) and by the world size
        W gives, after DDP averages the gradients over W ranks, sum_r (n_r / n) grad(mean_r) =
        the gradient of the global batch's mean: the same step as one process, whatever the
        slice sizes. A rank whose slice is empty (a last batch smaller than W) runs the batch's
        first chip with weight 0, so every rank takes part in DDP's gradient all-reduce.
        """
        part = self.part(len(idx))
        empty = part.start == part.stop
        local = slice(0, 1) if empty else part
        tokens, targets = tokens_of(idx[local]), targets_of(idx[local])
        tokens, targets, mask = (t.to(self.device) for t in (tokens, targets, mask[local]))
        out = self.ddp(tokens, targets, mask, patch_loss_weight, class_weights)
        valid = targets != IGNORE_INDEX
        weighed = (valid.sum().double() if class_weights is None else
                   class_weights.to(self.device, torch.float64)[targets[valid]].sum())
        counts = (torch.stack([(mask & valid).sum().double(), weighed, valid.sum().double()])
                  * (0.0 if empty else 1.0))
        means = torch.stack([out[k].detach() for k in LOSS_KEYS]).double()
        weights = counts[[0, 1, 0, 2]]
        confusion = out["confusion"].double().ravel() * (0.0 if empty else 1.0)
        numbers = torch.cat([torch.where(weights > 0, means * weights, 0.0), counts, confusion])
        try:
            dist.all_reduce(numbers)  # sums over ranks: one small collective a step
        except RuntimeError as exc:  # gloo/nccl: a peer died, or the timeout passed
            raise peer_failure(exc, self) from None
        total = numbers[4:7].clamp(min=1e-12)
        values = dict(zip(LOSS_KEYS, (numbers[:4] / total[[0, 1, 0, 2]]).tolist()))
        values["loss"] = values["rec"] + patch_loss_weight * values["esa"]
        values["confusion"] = numbers[7:].round().long().reshape(out["confusion"].shape).cpu()
        share = (counts[:2] / total[:2]).float() * self.world_size
        loss = out["rec"] * share[0] + patch_loss_weight * out["esa"] * share[1]
        return loss, values

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def join(device_name: str = "cpu") -> RankGroup | None:
    """Under torchrun with WORLD_SIZE > 1: open the process group (env://; gloo on CPU, nccl on
    CUDA, each rank on cuda:LOCAL_RANK) -> RankGroup. None for a plain single process.
    DistributedError when the backend or device is not available, or the rendezvous fails."""
    env = rank_env()
    if env is None or env[1] == 1:
        return None
    rank, world, local = env
    if device_name == "cuda":
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise DistributedError(f"Rank {rank} wants cuda:{local} but this machine has "
                                   f"{torch.cuda.device_count()} GPU(s): use --nproc_per_node up "
                                   "to that, or --device cpu.")
        device, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(device)
    elif device_name == "cpu":
        device, backend = torch.device("cpu"), "gloo"
    else:
        raise DistributedError(f"Distributed training runs on cpu (gloo) or cuda (nccl), not "
                               f"{device_name!r}.")
    if not dist.is_available() or not dist.is_backend_available(backend):
        raise DistributedError(f"This PyTorch build has no {backend} backend for distributed "
                               "training; install one that does, or train in one process.")
    try:
        dist.init_process_group(backend, timeout=dt.timedelta(seconds=timeout_s()))
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"Rank {rank} could not join the other {world - 1} rank(s) "
                               f"({exc}). Start all ranks with the same torchrun command.") from None
    return RankGroup(rank, world, device, backend)


def _collective_failed(exc: BaseException) -> bool:
    """A RuntimeError raised by a gloo/nccl collective (rather than by a bug in this rank)."""
    text = str(exc).lower()
    return isinstance(exc, dist.DistError) or any(
        word in text for word in ("gloo", "nccl", "connection reset", "connection closed", "timed out"))


def peer_failure(exc: BaseException, ranks: RankGroup) -> DistributedError:
    """The message for a collective that failed because another rank died or stopped answering."""
    return DistributedError(
        f"rank {ranks.rank}: stopped because another rank failed or stopped answering "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). "
        "Nothing was saved. The failing rank's own error is printed above: fix that and run again.")


def open_store(config, store_dir):
    """-> (`config` with the store's regions, chip settings (its pixel source too) and bands,
    checked; the store's training chips; its held-out chips or None; a Sentinel-2 store's chips
    carry its band_stats, which train() gives the model). ChipStoreError for a store that can't
    be read."""
    from bharateo.storage.chipstore import ChipStore, roi_specs

    store = ChipStore(store_dir, "train")
    heldout = ChipStore(store_dir, "heldout") if "heldout" in store.manifest["splits"] else None
    # the model reads the store's bands: its chip config's source's, which read_manifest checked
    config = replace(config, rois=roi_specs(store.manifest), chips=store.chip_config()).validate()
    return config, store, heldout


def train_from_store(config, store_dir, name=None, on_event=None, ranks: RankGroup | None = None):
    """Train on the chip store in `store_dir` (its "train" chips; held-out metrics on its
    "heldout" chips if it has them) with `config`'s model and training settings, through
    experiment.experiment_events (the one experiment loop); one process, or one rank of a
    distributed training. The run's chips and regions are the store's. `on_event` sees every
    StepMetrics/EpochMetrics.

    -> experiment.ExperimentResult (path set when `name` is given and this is rank 0), or None on
    ranks other than 0, which never write. ChipStoreError for a store that can't be read, or
    whose shards or manifest changed during the training (store.ChipStore.check_unchanged: then
    nothing is saved),
    ConfigError for settings that don't fit, RunSaveError when the run can't be written,
    DistributedError when another rank fails or stops answering.
    """
    from bharateo.training.experiment import ExperimentResult, experiment_events
    from bharateo.storage.runs import save_run
    from bharateo.training.loop import TrainedWeights, TrainingEnd, make_model

    config, store, heldout = open_store(config, store_dir)
    model = make_model(config.model, config.train.seed)
    if ranks is not None:
        model.to(ranks.device)
        ranks.wrap(model)
    end = metrics = None
    try:
        for event in experiment_events(config, store, heldout, model=model, ranks=ranks):
            if isinstance(event, TrainedWeights):
                metrics = event.metrics
            elif isinstance(event, TrainingEnd):
                end = event
            elif on_event is not None:
                on_event(event)
    except RuntimeError as exc:  # DDP's gradient all-reduce in backward() lost a peer
        if ranks is None or not _collective_failed(exc):
            raise
        raise peer_failure(exc, ranks) from None
    if ranks is not None and ranks.rank != 0:
        return None
    result = ExperimentResult(model, end.history, end, metrics, store, heldout)
    if name:
        for chips in (store, heldout):  # the run records this store: what it read must be it
            if chips is not None:
                chips.check_unchanged()
        meta = {**config.to_dict(), "data": store.manifest["regions"],
                "chip_store": store.describe(),
                "distributed": {"world_size": ranks.world_size if ranks else 1,
                                "backend": ranks.backend if ranks else None}}
        result.path = save_run(name, model, meta, result.history, result.metrics)
    return result
