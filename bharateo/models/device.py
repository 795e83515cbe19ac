"""Where the model runs (device) and in what arithmetic (precision policy).

Training (`train.train`), evaluation and reconstruction (`bharateo/training/evaluate.py`) run on the
model's device inside `autocast(device, precision)`; batches are moved there, and results come
back as CPU tensors / numpy arrays. Random masks are always drawn by a CPU torch.Generator and
then moved, so the same seed masks the same patches on every device.

A precision policy is a name in PRECISIONS mapped to the autocast dtype it uses (None: plain
fp32, the notebook's exact numerics). bf16 is torch.autocast with bfloat16: the weights and the
optimiser stay float32 (master weights), matmuls run in bf16, and the losses are computed in
float32 (model.scored_losses casts the heads' outputs). `auto` is resolved once per training by
resolve_precision, which says which it picked and why.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from bharateo.errors import ConfigError

DEVICES = ("cpu", "cuda", "mps")
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,  # no autocast: every op in float32, bit-identical to the notebook on CPU
    "bf16": torch.bfloat16,  # autocast; fp32 master weights and fp32 losses
}
PRECISIONS = (*AUTOCAST_DTYPES, "auto")  # auto: resolve_precision picks fp32 or bf16
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic
# Training FLOPs per step from which bf16 autocast pays (below it, casting weights and
# activations costs more than the faster multiplies save). CPU: measured on an AVX512-BF16
# AMD EPYC (Zen 4), one thread, fp32 vs bf16 steps alternating: 0.8 GFLOP (mae, embed 64 x 2)
# 1.02x, 1.0 GFLOP (notebook, embed 64 x 2) 1.22x, 1.7 GFLOP (mae default) 1.23x, 4.5 GFLOP
# (notebook default) 1.62x, 3.6 GFLOP (mae, embed 192 x 4) 1.36x; whole 20-epoch runs of
# the former bench/fast_mode.py (now bench/speed.py) on an idle machine: notebook default 1.65x, mae default 1.27x (under heavy
# load its --quick mode showed 1.00x). Set between the small mae (0.8 GFLOP, no gain) and the
# mae default (1.7 GFLOP), so the small models that issue 13's AMX probe saw get slower in bf16
# keep fp32: auto must never be slower than fp32. CUDA: NOT measured here (no GPU); these models
# are kernel-launch bound on a GPU well past this size, so bf16's extra cast kernels only pay later.
BF16_MIN_STEP_FLOPS = {"cpu": 1.2e9, "cuda": 20e9}


def check_device_name(name: str) -> str:
    """`name` if it is one of DEVICES, else ConfigError naming them. Says nothing about whether
    this machine has that device (resolve_device does): a run trained on a GPU still loads here."""
    if name not in DEVICES:
        raise ConfigError(f"Unknown device {name!r}: use one of {', '.join(DEVICES)}.")
    return name


def check_precision(name: str) -> str:
    """`name` if it is one of PRECISIONS, else ConfigError naming them."""
    if name not in PRECISIONS:
        raise ConfigError(f"Unknown precision {name!r}: use one of {', '.join(PRECISIONS)}.")
    return name


def resolve_device(name: str) -> torch.device:
    """'cpu' | 'cuda' | 'mps' -> torch.device, checked on this machine.

    Raises ConfigError for an unknown name, or a device this machine's torch can't use, saying
    what to use instead (e.g. 'CUDA is not available on this machine
    (torch.cuda.is_available() is False): use --device cpu').
    """
    check_device_name(name)
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA is not available on this machine (torch.cuda.is_available() is "
                          "False): use --device cpu, or a machine with an NVIDIA GPU and a CUDA "
                          "build of torch.")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("Apple's MPS is not available on this machine "
                          "(torch.backends.mps.is_available() is False): use --device cpu.")
    return torch.device(name)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of `model`'s parameters (where its forward pass runs)."""
    return next(model.parameters()).device


@functools.cache  # read once: the processor doesn't change under a running lab
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device | str) -> tuple[bool, str]:
    """(whether `device` does bf16 arithmetic natively, in words). CPU: the AVX512-BF16 or AMX
    flags (without them torch emulates bf16, slower than fp32); CUDA: torch.cuda.is_bf16_supported
    (Ampere and newer); Apple MPS: not relied on."""
    kind = torch.device(device).type
    if kind == "cpu":
        found = [f for f in BF16_CPU_FLAGS if f in cpu_flags()]
        if found:
            return True, f"this CPU has {' and '.join(f.upper() for f in found)}"
        return False, ("this CPU has no AVX512-BF16 or AMX, so bf16 would be emulated and slower "
                       "than fp32")
    if kind == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, f"the GPU ({torch.cuda.get_device_name()}) supports bf16"
        return False, "this GPU has no native bf16 (it needs an Ampere or newer NVIDIA GPU)"
    return False, f"bf16 on {kind} is not relied on here"


def resolve_precision(name: str, device: torch.device | str, model=None, batch_size: int = 16,
                      mask_ratio: float = 0.75) -> tuple[str, str]:
    """-> (the precision to run: "fp32" or "bf16", why), for the policy `name` on `device`.

    fp32 and bf16 are taken as asked. auto picks bf16 only where it is native (native_bf16) AND
    a training step is big enough for it to pay: batch_size x the FLOPs per chip of `model` (a
    ModelConfig; its variant's flops_per_chip at `mask_ratio`) >= BF16_MIN_STEP_FLOPS of the
    device type (source and measurements there). Without a model the size is unknown and auto
    stays fp32 (never slower). Deterministic: the same machine and settings pick the same, so a
    run is reproducible; the pick is recorded in the run's metrics.json. ConfigError for an
    unknown name.
    """
    check_precision(name)
    if name != "auto":
        return name, "asked for"
    native, why = native_bf16(device)
    if not native:
        return "fp32", why
    threshold = BF16_MIN_STEP_FLOPS.get(torch.device(device).type)
    if model is None or threshold is None:
        return "fp32", f"{why}, but the size of a training step is not known here"
    from bharateo.models.registry import model_class  # it imports model, which imports nothing here

    flops = batch_size * model_class(model.arch).flops_per_chip(model, mask_ratio)
    size = (f"a step is {flops / 1e9:.1f} GFLOP ({batch_size} chips x "
            f"{flops / batch_size / 1e6:.0f} MFLOP)")
    if flops < threshold:
        return "fp32", (f"{why}, but {size}, under the {threshold / 1e9:g} GFLOP from which "
                        "bf16 pays (smaller matmuls run slower in bf16: casting costs more than "
                        "it saves)")
    return "bf16", f"{why} and {size}, over the {threshold / 1e9:g} GFLOP from which bf16 pays"


def autocast(device: torch.device | str, precision: str = "fp32"):
    """Context manager running the ops inside under `precision` on `device`'s type.

    fp32: no autocast context at all, so every op runs in float32 exactly as written. bf16:
    torch.autocast with bfloat16 (weights stay float32). auto: resolved here without knowing the
    model (fp32; train.train resolves it with the model's size first). Raises ConfigError for an
    unknown precision.
    """
    precision = resolve_precision(precision, device)[0]
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def cpu_state_dict(model: torch.nn.Module) -> dict:
    """`model.state_dict()` with every tensor on the CPU (the same tensors when the model is
    there), keeping the module version metadata, so a saved model.pt loads on any machine."""
    state = model.state_dict()
    cpu = type(state)((k, v.detach().cpu()) for k, v in state.items())
    if hasattr(state, "_metadata"):
        cpu._metadata = state._metadata
    return cpu
