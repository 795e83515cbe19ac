"""The machine a benchmark ran on, printed with its figures (the developers' guide: these shared
machines vary, AMD EPYC and Intel Xeon with AMX have both appeared, and drift 10-30 %)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

# the flags that decide bf16 speed on x86 (AVX512-BF16 and AMX run it natively)
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")


def processor() -> dict:
    """The CPU's name, its bf16-relevant flags, the core count, load and torch's view of it."""
    import torch

    flags, name = set(), platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", "x86_64"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"name": name, "flags": [f for f in FLAGS if f in flags], "cores": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 1),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def processor_line() -> str:
    """processor() as one line for a benchmark's header."""
    p = processor()
    return (f"processor: {p['name']} ({p['cores']} cores, flags {' '.join(p['flags']) or 'none'}, "
            f"torch {p['torch']} {p['torch_cpu_capability']}, {p['threads']} threads, load "
            f"average {p['load_average']})")
