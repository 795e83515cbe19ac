"""Where the model runs (device) and in what arithmetic (precision policy).

Training (`train.train`), evaluation and reconstruction (`bharateo/evaluate.py`) run on the
model's device inside `autocast(device, precision)`; batches are moved there, and results come
back as CPU tensors / numpy arrays. Random masks are always drawn by a CPU torch.Generator and
then moved, so the same seed masks the same patches on every device.

A precision policy is a name in PRECISIONS mapped to the autocast dtype it uses (None: plain
fp32, the notebook's exact numerics). Adding bf16 is one line in AUTOCAST_DTYPES.
"""
from __future__ import annotations

import contextlib

import torch

from bharateo.errors import ConfigError

DEVICES = ("cpu", "cuda", "mps")
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,  # no autocast: every op in float32, bit-identical to the notebook on CPU
}
PRECISIONS = tuple(AUTOCAST_DTYPES)


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


def autocast(device: torch.device | str, precision: str = "fp32"):
    """Context manager running the ops inside under `precision` on `device`'s type.

    fp32: no autocast context at all, so every op runs in float32 exactly as written.
    Raises ConfigError for an unknown precision.
    """
    dtype = AUTOCAST_DTYPES[check_precision(precision)]
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
