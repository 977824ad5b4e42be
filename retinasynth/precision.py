"""Numeric precision, chosen by the hardware: one setting for `fit`, `synthesize`, `evaluate` and the benchmark.

``auto`` (the default) resolves to bf16 autocast where the processor computes bf16 natively (CUDA devices
that support it; CPUs with the ``avx512_bf16`` or ``amx_bf16`` instructions, where oneDNN runs bf16
convolutions and matmuls at several times the fp32 rate), to fp16 on CUDA devices without bf16, and to fp32
everywhere else: on a CPU without those instructions bf16 is emulated and was measured ~50x slower. ``fp32``
and ``bf16`` (and ``fp16`` on CUDA) force a precision; forcing one the device cannot run is a one-line error.

Only the forward pass runs under autocast: master weights, optimiser state and losses stay fp32. The resolved
precision is what every run records and what the benchmark's cache keys hold.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from retinasynth.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Legacy values of the former `amp` setting (CUDA only; the CPU always ran fp32).
LEGACY_AMP = {"off": "fp32", "auto": "auto", "bf16": "bf16", "fp16": "fp16"}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_native_bf16() -> bool:
    """True where the CPU has bf16 arithmetic in hardware (and oneDNN can use it)."""
    return bool(cpu_flags() & set(NATIVE_BF16_FLAGS)) and torch.backends.mkldnn.is_available()


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """'fp32', 'bf16' or 'fp16' for ``requested`` on ``device``; a one-line ConfigError if impossible."""
    dev = torch.device(device)
    if requested not in PRECISIONS:
        raise ConfigError(f"unknown precision {requested!r}; valid: {', '.join(PRECISIONS)} (auto: bf16 where the "
                          "hardware has it, else fp32).")
    if dev.type == "cuda":
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if requested == "auto":
            return "bf16" if bf16 else "fp16"
        if requested == "bf16" and not bf16:
            raise ConfigError("precision bf16 requested but this CUDA device has no bf16; use --precision fp16 "
                              "or auto.")
        return requested
    if requested == "fp16":
        raise ConfigError(f"precision fp16 is for CUDA devices only (device {dev.type}); use --precision fp32, "
                          "bf16 or auto.")
    if requested == "auto":
        return "bf16" if dev.type == "cpu" and cpu_native_bf16() else "fp32"
    if requested == "bf16" and not (dev.type == "cpu" and cpu_native_bf16()):
        raise ConfigError(f"precision bf16 requested but this {dev.type} has no native bf16 (CPU flags "
                          f"{'/'.join(NATIVE_BF16_FLAGS)} absent), where it runs emulated and far slower; use "
                          "--precision fp32 or auto.")
    return requested


def autocast(precision: str, device: torch.device | str):
    """A context manager for the forward pass at a *resolved* precision (fp32: no autocast)."""
    dev = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (bf16 has fp32's range)."""
    dev = torch.device(device)
    return torch.amp.GradScaler(dev.type if dev.type == "cuda" else "cpu", enabled=precision == "fp16")


def describe(precision: str, device: torch.device | str) -> dict:
    """What a run records about its precision: requested-independent facts of this machine."""
    dev = torch.device(device)
    info = {"precision": precision, "device_type": dev.type}
    if dev.type == "cpu":
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["cpu_native_bf16"] = cpu_native_bf16()
    elif dev.type == "cuda" and torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(dev)
    return info


# Memory format (NHWC "channels_last" or NCHW), chosen like the precision: by the device, the resolved
# precision and the CPU's flags, from measurements (benchmarks/RESULTS.md, the speed tables;
# `benchmarks/speed.py --channels-last`, ratios NHWC/NCHW within one run):
#   fit step        Xeon with AMX: bf16 1.04-1.10x, fp32 0.96-1.03x; EPYC avx512_bf16 without AMX: bf16 0.85x,
#                   fp32 1.06x (benchmarks/results/speed-epyc-bf16);
#   generator inference  0.93-0.98x on the Xeon, 0.73-0.75x on the EPYC: NCHW on every CPU;
#   segmenter step  1.11-1.29x everywhere: always channels_last (SegmenterConfig.channels_last).
# So fit goes NHWC on a CPU only at bf16 with AMX tiles; on CUDA, channels_last is what cuDNN's tensor cores prefer.
AMX_FLAGS = ("amx_bf16", "amx_tile")


def cpu_has_amx() -> bool:
    """True where the CPU has AMX bf16 tiles (oneDNN's bf16 NHWC convolutions run several times faster there)."""
    return set(AMX_FLAGS) <= cpu_flags()


def fit_channels_last(device: torch.device | str, precision: str) -> bool:
    """Whether `fit` trains G and D in channels_last when ``train.channels_last`` is null (auto)."""
    dev = torch.device(device)
    return dev.type == "cuda" or (dev.type == "cpu" and precision == "bf16" and cpu_has_amx())


def infer_channels_last(device: torch.device | str, precision: str) -> bool:
    """Whether generator inference (`synthesize`, `evaluate`) runs in channels_last."""
    return torch.device(device).type == "cuda"
