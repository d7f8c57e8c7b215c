"""Which device to run on, and how to name the hardware in a model card."""

from __future__ import annotations

import os
import platform

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> the first CUDA GPU if there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def describe_hardware() -> str:
    """One line naming this machine's CPU and GPUs, for ``provenance["hardware"]``."""
    cpu = _cpu_name() or platform.processor() or platform.machine() or "unknown CPU"
    parts = [f"{os.cpu_count() or '?'} x {cpu}, torch threads {torch.get_num_threads()}"]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        parts.append("GPU: " + ", ".join(names))
    return "; ".join(parts)


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up here: CUDA GPUs with bf16, and CPUs with native bf16
    instructions (measured on a 2-core AMD EPYC with avx512_bf16: 1.84x per step for the diffusion
    "small" config, ``benchmarks/train_step_precision.py``)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
