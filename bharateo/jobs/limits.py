"""A server's limits on one training (docs/limits.md): its time budget, and how much memory it
needs against how much this machine has, with the refusal of a training that can't fit.

Time: BHARATEO_MAX_TRAINING_S seconds per training, DEFAULT_MAX_TRAINING_S (30 min) when unset,
"none" for no limit (a server of its own); the app stops a training that reaches it, and refuses
one whose estimate exceeds it. Memory:

A training's peak is estimated before anything is built, from its config alone:
  chips        K chips of S x S px: labels (1 byte a pixel), patch labels (8 bytes a patch) and,
               for a source with its own values (Sentinel-2), C float32 bands a pixel; held
               CHIP_COPIES times (the server's chip set, the training process's copy, the pickle
               that carries it between them);
  model        its parameters, 4 bytes each, times 4 (weights, gradients, Adam's two moments);
  activations  one batch of B chips through the encoder and the decoder: per layer and chip,
               about ACTIVATION_FLOATS_PER_TOKEN x width floats per token plus two H x N x N
               attention maps (scores, softmax), x BACKWARD_FACTOR for the backward pass;
  process      the training process itself with torch loaded (PROCESS_BYTES, measured).
It is an estimate (within about 10 % of the peak resident memory measured for two sizes on a
2-core Intel Xeon, CPU training, docs/limits.md); a training is refused only when the estimate exceeds the
memory the machine has free (available_bytes), so whatever is refused would not have fit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bharateo.config import environment

DEFAULT_MAX_TRAINING_S = environment.MAX_TRAINING_S.default  # 1800 s: half a 60-minute lesson:
# the one training slot of a laptop is free again within the lesson; every preset fits with room
# (the largest, "bigger", is ~5 min on the 2-core reference machine, ~30 min at the 3-8x slowdown
# a busy laptop showed, issue 22)
CHIP_COPIES = 3  # server, training process, and the pickle between them while it is sent
OPTIMISER_COPIES = 4  # weights, gradients, Adam's exp_avg and exp_avg_sq (float32)
ACTIVATION_FLOATS_PER_TOKEN = 16  # saved per token and layer, in units of the layer's width:
# 2 layer norms, q, k, v, attention output, projection, 4x MLP hidden before and after GELU
BACKWARD_FACTOR = 1.25  # backward's gradients beside the saved activations (fitted: measured peaks
# of 0.52 and 2.8-3.2 GB were estimated at 0.55 and 3.06 GB, docs/limits.md)
PROCESS_BYTES = 450 * 2**20  # a training process with torch imported (~310 MB) and its buffers


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training needs at its peak, by part (see the module docstring)."""

    chips: int
    model: int
    activations: int
    process: int = PROCESS_BYTES

    @property
    def total(self) -> int:
        return self.chips + self.model + self.activations + self.process


def chip_bytes(n_chips: int, chip_size: int, patch_size: int, channels: int,
               palette: bool) -> int:
    """Bytes of one copy of `n_chips` chips of `chip_size` px (chips.ChipSet: uint8 labels,
    int64 patch labels, and float32 `channels` bands a pixel unless `palette`: palette-RGB
    chips are rendered from their labels per batch)."""
    grid = chip_size // max(patch_size, 1)
    per_chip = chip_size ** 2 + 8 * grid ** 2 + (0 if palette else 4 * channels * chip_size ** 2)
    return n_chips * per_chip


def training_memory(config) -> MemoryEstimate:
    """The peak memory of training `config` (experiment.RunConfig) in the app's worker, by part
    (MemoryEstimate, bytes). Held-out chips count as chips."""
    from bharateo.data.sources import DEFAULT_SOURCE

    c, m, t = config.chips, config.model, config.train
    held = c.n_holdout_chips if c.holdout_roi else 0
    chips = CHIP_COPIES * chip_bytes(c.n_chips + held, c.chip_size, c.patch_size, m.in_chans,
                                     c.source == DEFAULT_SOURCE)
    model = OPTIMISER_COPIES * 4 * config.parameters
    tokens = (c.chip_size // max(c.patch_size, 1)) ** 2
    per_chip = tokens * m.in_chans * c.patch_size ** 2 * 4  # input, target, prediction, loss
    for depth, width, heads in ((m.depth, m.embed_dim, m.heads),
                                (m.decoder_depth, m.decoder_dim, m.decoder_heads)):
        per_chip += depth * (ACTIVATION_FLOATS_PER_TOKEN * width * tokens + 2 * heads * tokens ** 2)
    activations = BACKWARD_FACTOR * 4 * t.batch_size * per_chip
    return MemoryEstimate(chips, model, activations)


def max_training_seconds() -> float | None:
    """BHARATEO_MAX_TRAINING_S: the server's time budget for one training in s. Unset or empty:
    DEFAULT_MAX_TRAINING_S; "none" (any case): no limit. EnvironmentVariableError for a value
    that is not a number from 1 to 604,800 (bharateo/config/environment.py)."""
    return environment.MAX_TRAINING_S.get()


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError):
        return None


def available_bytes() -> int | None:
    """Memory this process may still use, in bytes: the least of the machine's MemAvailable
    (/proc/meminfo) and, in a container, its cgroup's limit less what it uses (cgroup v2
    memory.max - memory.current, or v1's limit_in_bytes - usage_in_bytes). None where neither
    can be read (not Linux): no check is made then. BHARATEO_MEMORY_BYTES overrides (tests,
    a server that knows better)."""
    if (given := environment.MEMORY_BYTES.get()) is not None:
        return given
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, used in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                         "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        cap, now = _read_int(limit), _read_int(used)
        if cap is not None and now is not None and cap < 2**60:  # v1 writes "no limit" as ~2^63
            found.append(max(0, cap - now))
    return min(found) if found else None


def gigabytes(n: int) -> str:
    """2.3 GB, 850 MB."""
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


OUT_OF_MEMORY = "ran out of memory: reduce chips, chip size or model size"


def memory_problem(config, available: int | None = None) -> str | None:
    """None if training `config` fits the memory this machine has free (`available` bytes,
    default available_bytes(); None: unknown, never refused); else one sentence: the estimate
    by part, what is free, and what to reduce (its largest part first)."""
    available = available_bytes() if available is None else available
    need = training_memory(config)
    if available is None or need.total <= available:
        return None
    parts = {"chips": need.chips, "model and optimiser": need.model,
             "a batch's activations": need.activations, "the training process": need.process}
    largest = max(("chips", "a batch's activations", "model and optimiser"), key=parts.get)
    advice = {"chips": "fewer chips or a smaller chip size",
              "a batch's activations": "a smaller batch size, chip size, embed dim or depth",
              "model and optimiser": "a smaller embed dim or depth"}[largest]
    listed = ", ".join(f"{name} {gigabytes(size)}" for name, size in parts.items())
    return (f"This training would need about {gigabytes(need.total)} of memory (an estimate: "
            f"{listed}), more than the {gigabytes(available)} this machine has free, so it would "
            f"run out of memory. Reduce chips, chip size or model size: {advice} first.")
