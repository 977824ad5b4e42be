"""Run directories: config.json, safetensors weights and a weights_only-loadable training state.

Layout of a run directory::

    config.json               resolved config, generator geometry, data fingerprint, versions, git rev
    generator.safetensors     raw generator weights
    generator_ema.safetensors EMA generator weights (used for inference by default)
    state.pt                  discriminator, optimisers, schedulers, scaler, RNG states, step
    log.jsonl                 one JSON line per logged step
    samples/step_XXXXXX.png   mask | generated | real grids on held-out masks
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from retinasynth.errors import RetinaSynthError
from retinasynth.provenance import write_bytes_atomic, write_json_atomic

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "generator.safetensors"
WEIGHTS_EMA = "generator_ema.safetensors"
STATE = "state.pt"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers (what gets saved)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_weights(path: Path, model: torch.nn.Module) -> None:
    sd = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
    write_bytes_atomic(path, save(sd, metadata={"format": "pt"}))


def load_weights(path: Path, model: torch.nn.Module) -> None:
    unwrap(model).load_state_dict(load_file(str(path)))


def save_state(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_run_config(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    p = run_dir / CONFIG
    if not run_dir.is_dir():
        raise RetinaSynthError(f"{run_dir}: run directory not found; train one with `retinasynth fit`.")
    if not p.is_file():
        raise RetinaSynthError(f"{p}: missing; {run_dir} is not a retinasynth run directory.")
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise RetinaSynthError(f"{p}: not valid JSON ({e}); the run directory is damaged.") from None
    if cfg.get("format_version") != FORMAT_VERSION:
        raise RetinaSynthError(f"{p}: format_version {cfg.get('format_version')} is not supported "
                               f"(this retinasynth reads {FORMAT_VERSION}).")
    return cfg


def write_run_config(run_dir: Path, payload: dict) -> None:
    write_json_atomic(run_dir / CONFIG, {"format_version": FORMAT_VERSION, **payload})
