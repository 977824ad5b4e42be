"""Run directories: config.json, safetensors weights and a weights_only-loadable training state.

Layout of a run directory::

    config.json               resolved config (train.precision: the resolved one), generator geometry, data
                              fingerprint, precision record, versions, git rev
    generator.safetensors     raw generator weights
    generator_ema.safetensors EMA generator weights (used for inference by default)
    state.pt                  discriminator, optimisers, schedulers, scaler, RNG states, step, and the
                              sha256 of the two weight files it belongs with
    *.prev.*                  the previous checkpoint (same three files), kept so that a damaged latest
                              checkpoint costs at most one checkpoint interval on `fit --resume`
    log.jsonl                 one JSON line per logged step
    samples/step_XXXXXX.png   mask | generated | real grids on held-out masks
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from retinasynth.errors import RetinaSynthError
from retinasynth.provenance import write_bytes_atomic, write_json_atomic

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "generator.safetensors"
WEIGHTS_EMA = "generator_ema.safetensors"
STATE = "state.pt"
CHECKPOINT_FILES = (WEIGHTS, WEIGHTS_EMA, STATE)  # written in this order: the state last


def prev_path(path: Path) -> Path:
    """``generator.safetensors`` -> ``generator.prev.safetensors`` (the previous checkpoint's copy)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / torch.compile wrappers (what gets saved)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _rotate_write(path: Path, data: bytes, keep_previous: bool) -> None:
    """Write ``data`` atomically to ``path``; with ``keep_previous`` the old file becomes ``*.prev.*``."""
    if keep_previous and path.is_file():
        os.replace(path, prev_path(path))
    write_bytes_atomic(path, data)


def save_weights(path: Path, model: torch.nn.Module, keep_previous: bool = False) -> str:
    """Write the model's weights (safetensors, atomically); returns their sha256."""
    sd = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
    data = save(sd, metadata={"format": "pt"})
    _rotate_write(Path(path), data, keep_previous)
    return hashlib.sha256(data).hexdigest()


class DamagedFile(RetinaSynthError):
    """A run-directory file that cannot be used; ``problem`` says why, without the fix."""

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        self.path, self.problem = Path(path), " ".join(problem.split())
        super().__init__(f"{path}: {self.problem}; {fix}")


def _damaged(path: Path, e: BaseException, fix: str) -> DamagedFile:
    what = " ".join(str(e).split()).split(". ")[0][:120]
    return DamagedFile(path, f"damaged or not a retinasynth file ({type(e).__name__}: {what})", fix)


def weights_fix(path: Path) -> str:
    prev = prev_path(path)
    if prev.is_file():
        return (f"resume training with `retinasynth fit --resume` (it falls back to the previous checkpoint), "
                f"or replace it with {prev.name}.")
    return "restore it from a backup or train the run again."


def load_weights(path: Path, model: torch.nn.Module, expect_sha256: str | None = None) -> str:
    """Load safetensors weights into ``model``; any damage is one RetinaSynthError. Returns the sha256."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RetinaSynthError(f"{path}: cannot be read ({e.strerror}); check the run directory.") from None
    digest = hashlib.sha256(data).hexdigest()
    if expect_sha256 is not None and digest != expect_sha256:
        raise DamagedFile(path, "does not match the checkpoint it belongs to (sha256 differs)", weights_fix(path))
    try:
        unwrap(model).load_state_dict(load(data))
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file, or weights of another model
        raise _damaged(path, e, weights_fix(path)) from None
    return digest


def save_state(path: Path, state: dict[str, Any], keep_previous: bool = False) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    _rotate_write(Path(path), buf.getvalue(), keep_previous)


def load_state(path: Path) -> dict[str, Any]:
    """The training state, loaded with ``weights_only=True`` only; any damage is one RetinaSynthError."""
    path = Path(path)
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, foreign pickle, refused globals
        raise _damaged(path, e, "restore it or start a new run.") from None
    if not isinstance(st, dict) or not isinstance(st.get("step"), int):
        raise DamagedFile(path, "not a retinasynth training state (no step)", "restore it or start a new run.")
    return st


def save_checkpoint(run_dir: Path, G: torch.nn.Module, ema: torch.nn.Module, state: dict[str, Any]) -> None:
    """Write the weights, then the state that names their sha256; the previous set becomes ``*.prev.*``.

    Each file is renamed to its ``.prev`` name and then written anew (atomically), in the order weights,
    EMA weights, state: whenever a write is interrupted, every file of the previous checkpoint is still
    present under one of its two names, and ``load_checkpoint`` finds it.
    """
    run_dir = Path(run_dir)
    shas = {WEIGHTS: save_weights(run_dir / WEIGHTS, G, keep_previous=True),
            WEIGHTS_EMA: save_weights(run_dir / WEIGHTS_EMA, ema, keep_previous=True)}
    save_state(run_dir / STATE, {**state, "weights_sha256": shas}, keep_previous=True)


def load_checkpoint(run_dir: Path, G: torch.nn.Module, ema: torch.nn.Module) -> dict[str, Any] | None:
    """Load the latest intact checkpoint into ``G`` and ``ema``; return its state (None: no checkpoint).

    A damaged latest checkpoint falls back to the previous one with a one-line warning; if neither is
    intact, the latest one's problem is raised as a RetinaSynthError.
    """
    run_dir = Path(run_dir)
    states = [p for p in (run_dir / STATE, prev_path(run_dir / STATE)) if p.is_file()]
    if not states:
        return None
    errors: list[RetinaSynthError] = []
    for sp in states:
        try:
            st = load_state(sp)
            shas = st.get("weights_sha256") or {}
            for name, model in ((WEIGHTS, G), (WEIGHTS_EMA, ema)):
                _load_matching(run_dir / name, model, shas.get(name))
        except RetinaSynthError as e:
            errors.append(e)
            continue
        if errors:
            warnings.warn(f"{_what(errors[0])}; resuming from the previous checkpoint (step {st['step']}) instead: at most one "
                          "checkpoint interval is trained again.", stacklevel=2)
        return st
    if len(errors) > 1:
        raise RetinaSynthError(f"{_what(errors[0])}; the previous checkpoint is unusable too ({_what(errors[1])}); "
                               "start a new run with `retinasynth fit --out NEW_DIR`.")
    raise errors[0]


def _what(e: RetinaSynthError) -> str:
    """An error's problem without its fix."""
    return f"{e.path}: {e.problem}" if isinstance(e, DamagedFile) else str(e).split("; ")[0]


def _load_matching(path: Path, model: torch.nn.Module, sha: str | None) -> None:
    """Load ``path`` or, failing that, its ``.prev`` copy, whichever has the sha256 the state names."""
    candidates = [p for p in (path, prev_path(path)) if p.is_file()]
    if not candidates:
        raise DamagedFile(path, "missing", "the run directory is damaged, start a new run.")
    error: RetinaSynthError | None = None
    for p in candidates if sha else candidates[:1]:  # runs from before the .prev files: the latest only
        try:
            load_weights(p, model, sha)
            return
        except RetinaSynthError as e:
            error = error or e
    assert error is not None
    raise error


def _require(cfg: Any, p: Path, *keys: str) -> None:
    node = cfg
    for i, k in enumerate(keys):
        if not isinstance(node, dict) or k not in node:
            where = ".".join(keys[: i + 1])
            raise RetinaSynthError(f"{p}: damaged ('{where}' missing); restore config.json or train the run again.")
        node = node[k]


def read_run_config(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    p = run_dir / CONFIG
    if not run_dir.is_dir():
        raise RetinaSynthError(f"{run_dir}: run directory not found; train one with `retinasynth fit`.")
    if not p.is_file():
        raise RetinaSynthError(f"{p}: missing; {run_dir} is not a retinasynth run directory.")
    try:
        cfg = json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RetinaSynthError(f"{p}: not UTF-8 text (byte {e.start}); the run directory is damaged, restore "
                               "config.json or train the run again.") from None
    except json.JSONDecodeError as e:
        raise RetinaSynthError(f"{p}: not valid JSON ({e}); the run directory is damaged, restore config.json "
                               "or train the run again.") from None
    except OSError as e:
        raise RetinaSynthError(f"{p}: cannot be read ({e.strerror}); check the run directory.") from None
    if not isinstance(cfg, dict):
        raise RetinaSynthError(f"{p}: not a JSON object; the run directory is damaged, restore config.json or "
                               "train the run again.")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise RetinaSynthError(f"{p}: format_version {cfg.get('format_version')} is not supported "
                               f"(this retinasynth reads {FORMAT_VERSION}).")
    for keys in (("config", "profile"), ("config", "data", "size"), ("config", "model"), ("config", "train"),
                 ("generator", "depth"), ("data", "root"), ("data", "fingerprint"), ("data", "train_ids")):
        _require(cfg, p, *keys)
    return cfg


def write_run_config(run_dir: Path, payload: dict) -> None:
    write_json_atomic(run_dir / CONFIG, {"format_version": FORMAT_VERSION, **payload})
