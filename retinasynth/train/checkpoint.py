"""Writing and resuming a `retinasynth fit` run: weights, the weights_only-loadable training state, the
run's config.json. The layout and every reader live in :mod:`retinasynth.rundir`, below this module."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from retinasynth.errors import RetinaSynthError
from retinasynth.provenance import write_bytes_atomic, write_json_atomic
from retinasynth.rundir import (  # noqa: F401 - the layout and readers, re-used here for writing and resuming
    CHECKPOINT_FILES,
    CONFIG,
    FORMAT_VERSION,
    STATE,
    WEIGHTS,
    WEIGHTS_EMA,
    DamagedFile,
    _damaged,
    load_weights,
    prev_path,
    unwrap,
)


def _rotate_write(path: Path, data: bytes, keep_previous: bool) -> None:
    """Write ``data`` atomically to ``path``; with ``keep_previous`` the old file becomes ``*.prev.*``.

    ``path`` never goes missing: the old file is first linked (or copied) to ``*.prev.*``, then the new one
    replaces it atomically, so a reader (`synthesize --run` during a `fit`) always opens a complete file."""
    if keep_previous and path.is_file():
        prev = prev_path(path)
        tmp = prev.with_name(f".{prev.name}.{os.getpid()}.tmp")
        try:
            os.link(path, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, tmp)
        os.replace(tmp, prev)
    write_bytes_atomic(path, data)


def save_weights(path: Path, model: torch.nn.Module, keep_previous: bool = False) -> str:
    """Write the model's weights (safetensors, atomically); returns their sha256."""
    sd = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
    data = save(sd, metadata={"format": "pt"})
    _rotate_write(Path(path), data, keep_previous)
    return hashlib.sha256(data).hexdigest()


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


def write_run_config(run_dir: Path, payload: dict) -> None:
    write_json_atomic(run_dir / CONFIG, {"format_version": FORMAT_VERSION, **payload})
