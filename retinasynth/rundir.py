"""The run-directory API: the layout of a `retinasynth fit` run, and its readers (config, weights, generator).

`retinasynth evaluate` (retinasynth.train.evaluate), synthesis (retinasynth.synth) and resuming
(retinasynth.train.checkpoint, which writes runs) read a run through this module; it imports nothing of theirs.

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
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load

from retinasynth.config import from_dict
from retinasynth.device import pick_device
from retinasynth.errors import RetinaSynthError
from retinasynth.models.condition import full_condition, tensor_to_image
from retinasynth.models.factory import ModelConfig, create_generator
from retinasynth.precision import autocast, infer_channels_last, resolve_precision

__all__ = ["Generator", "load_generator", "load_weights", "pick_device", "read_run_config"]

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




@dataclass
class Generator:
    """A trained generator with what is needed to use it: config, geometry, weights' sha256."""

    net: torch.nn.Module
    model_config: ModelConfig
    size: int  # working resolution it was trained at
    run_dir: Path
    weights_sha256: str
    device: torch.device
    precision: str = "fp32"  # resolved ('fp32', 'bf16' or 'fp16'): G's forward runs under its autocast
    channels_last: bool = False  # memory format of the weights (retinasynth.precision.infer_channels_last)

    @torch.no_grad()
    def render(self, masks: np.ndarray | list[np.ndarray], fovs: np.ndarray | list[np.ndarray],
               stochastic: bool = False, seed: int | None = None) -> np.ndarray:
        """Render vessel masks into RGB uint8 images, (B, H, W, 3).

        Deterministic by default (eval mode: dropout off). ``stochastic=True`` keeps the decoder's
        dropout active and draws it from a generator seeded with ``seed``, giving several plausible
        images for one mask; the same seed gives the same images. The forward pass runs at
        ``self.precision`` (fp32: no autocast); its output is cast to fp32 before rounding to uint8.
        """
        masks = np.asarray(masks)
        fovs = np.asarray(fovs)
        if masks.ndim == 2:
            masks, fovs = masks[None], fovs[None]
        mc = self.model_config
        cond = np.stack([full_condition(m, f, mc.coords, mc.disc_prior) for m, f in zip(masks, fovs)])
        x = torch.from_numpy(cond).to(self.device)
        if stochastic:
            self.net.train()
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(0 if seed is None else int(seed))
                with autocast(self.precision, self.device):
                    out = self.net(x)
            self.net.eval()
        else:
            self.net.eval()
            with autocast(self.precision, self.device):
                out = self.net(x)
        return tensor_to_image(out.float())


def load_generator(run_dir: str | Path, ema: bool = True, device: str | None = None,
                   precision: str = "fp32") -> Generator:
    """Rebuild the generator from ``config.json`` and load its (EMA by default) weights.

    ``precision`` ('auto', 'fp32', 'bf16', 'fp16') is resolved for the device
    (:func:`retinasynth.precision.resolve_precision`; a one-line ConfigError where impossible) and kept in
    ``Generator.precision``. The default here is fp32; the commands default to 'auto'."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    model_cfg = from_dict(ModelConfig, cfg["config"]["model"])
    weights = run_dir / (WEIGHTS_EMA if ema else WEIGHTS)
    if not weights.is_file():
        raise RetinaSynthError(f"{weights}: missing; the run has not saved weights yet "
                               f"(train it, or resume it with `retinasynth fit --resume`).")
    net = create_generator(model_cfg, cfg["generator"]["depth"])
    sha = load_weights(weights, net)
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    cl = infer_channels_last(dev, prec)
    net.to(dev, memory_format=torch.channels_last if cl else torch.contiguous_format).eval()
    return Generator(net, model_cfg, int(cfg["config"]["data"]["size"]), run_dir, sha, dev, prec, cl)
