"""The one device helper of every command: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``, checked up front.

An unknown name or a device this machine lacks is a one-line :class:`~retinasynth.errors.ConfigError` (the CLI
prints it as ``error: ...`` and exits 2), never torch's traceback from deep inside a run.
"""

from __future__ import annotations

import re

import torch

from retinasynth.errors import ConfigError

VALID = "auto, cpu, cuda, cuda:N"
_SPEC = re.compile(r"(cpu|cuda)(?::(\d+))?")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device for ``device``: None/'auto' is CUDA where available, else the CPU."""
    spec = "auto" if device is None else str(device).strip().lower()
    if spec in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m = _SPEC.fullmatch(spec)
    if not m or (m[1] == "cpu" and m[2] not in (None, "0")):
        raise ConfigError(f"unknown device {device!r}; valid: {VALID} (N: a GPU index; auto: cuda if available, "
                          "else cpu).")
    if m[1] == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            built = "with" if torch.version.cuda else "without"
            raise ConfigError(f"device {device!r} requested but this machine has no usable CUDA GPU (torch "
                              f"{torch.__version__}, built {built} CUDA); use --device cpu or --device auto.")
        if m[2] is not None and int(m[2]) >= n:
            raise ConfigError(f"device {device!r}: this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1}); pick one "
                              "of them or --device auto.")
    return torch.device(spec)
