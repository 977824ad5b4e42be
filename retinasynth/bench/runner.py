"""Running the plan: train one cell's model (or find it cached) and score a model on one evaluation set (or
find the score cached). What trains and scores a cell lives here and in :mod:`retinasynth.segmenter`; both
modules' source enters the cache keys (see :mod:`retinasynth.bench.plan`).

Layout under the benchmark's ``OUT``:
    runs/<arm>_n<n>_s<seed>.json       the training record of a cell (its training key, log, provenance)
    models/<arm>_n<n>_s<seed>.safetensors   its weights, with the config that rebuilds them and the key
    models/pretrain_base_<key>.safetensors  the synthetic pretraining shared by a seed's 'pretrain' cells
    scores/<train key[:20]>/<eval>.json      per-image scores of a model on an evaluation set, with the score key
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retinasynth.bench.config import BenchConfig
from retinasynth.bench.guards import EvalSet
from retinasynth.bench.plan import (
    KEY_FORMAT,
    Cell,
    Environment,
    branch_budgets,
    branch_key,
    pretrain_key,
    samples_fingerprint,
    with_steps,
)
from retinasynth.metrics.seg import METRICS
from retinasynth.provenance import portable_path, process_record, write_json_atomic
from retinasynth.segmenter import evaluate_segmenter, load_segmenter, save_segmenter, train_segmenter

RUNS, MODELS, SCORES = "runs", "models", "scores"


@dataclass
class Context:
    """What every cell of one benchmark shares."""

    out: Path
    cfg: BenchConfig
    env: Environment
    synth: list  # synthetic samples, preprocessed for the segmenter
    synth_fp: str | None
    device: torch.device
    progress: bool


def read_json(path: Path) -> dict | None:
    """A JSON object, or None when missing or damaged (a damaged cache file is a cache miss: rewritten)."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def cached_training(ctx: Context, cell: Cell) -> dict | None:
    rec = read_json(ctx.out / RUNS / f"{cell.name}.json")
    if rec is None or rec.get("status") != "complete" or rec.get("train_key") != cell.train_key:
        return None
    model = ctx.out / rec.get("model", "")
    if not rec.get("model") or not model.is_file():
        return None
    if any(not (ctx.out / b.get("model", "")).is_file() for b in rec.get("branches", [])):
        return None
    return rec


def model_path(ctx: Context, rec: dict) -> Path:
    return ctx.out / rec["model"]


def _pretrained(ctx: Context, seed: int, desc: str, real=(), model=None) -> tuple[dict, Path, bool]:
    """Weights of the synthetic pretraining of ``seed``: loaded from OUT/models if this exact pretraining was
    done before (by the 'synth' arm or another regime), else trained now and saved there. With
    ``pretrain_mix`` > 0 it also draws real patches from ``real`` (the regime's subset)."""
    cfg, mix = ctx.cfg, ctx.cfg.pretrain_mix
    key = pretrain_key(cfg, seed, ctx.synth_fp, ctx.env, samples_fingerprint(real) if mix else None)
    path = ctx.out / MODELS / f"pretrain_base_{key[:16]}.safetensors"
    if model is not None:  # the 'synth' arm just trained exactly this model: keep it for 'pretrain'
        save_segmenter(path, model, cfg, {"train_key": key})
        return {}, path, False
    if path.is_file():
        m, _ = load_segmenter(path)
        return m.state_dict(), path, True
    if mix:
        m, _ = train_segmenter(dataclasses.replace(cfg, synth_ratio=1.0 - mix), list(real), ctx.synth,
                               "real+synth", seed, ctx.device, progress=ctx.progress, desc=desc + " (pretrain)")
    else:
        m, _ = train_segmenter(cfg, [], ctx.synth, "synth", seed, ctx.device, progress=ctx.progress,
                               desc=desc + " (pretrain)")
    save_segmenter(path, m, cfg, {"train_key": key})
    return {k: v.detach().clone() for k, v in m.state_dict().items()}, path, False


def train_cell(ctx: Context, cell: Cell, real: list) -> tuple[dict, torch.nn.Module]:
    """Train ``cell``'s model on ``real`` (its subset, preprocessed) and the shared synthetic pool; save the
    weights and the training record. Returns (record, model)."""
    spec = cell.spec
    cfg = ctx.cfg if spec.augment is None else dataclasses.replace(ctx.cfg, augment=spec.augment)
    real = list(real) if spec.uses_real else []
    synth = ctx.synth if spec.uses_synth and not spec.pretrain else []
    t0 = time.perf_counter()
    extra: dict = {}
    branches: list[dict] = []
    offset = 0  # steps before the run the branches are read off (the pretraining of a 'pretrain' arm)

    def on_branch(b: int, model, blog: dict) -> None:
        key = branch_key(cell.train_key, b)
        path = ctx.out / MODELS / f"{cell.name}@{b}.safetensors"
        save_segmenter(path, model, cfg, {"train_key": key})
        branches.append({"steps": b, "total_steps": offset + b, "train_key": key,
                         "model": portable_path(path, ctx.out), "log": blog})

    if spec.pretrain:
        init, base, reused = _pretrained(ctx, cell.seed, cell.name, real=real)
        extra = {"pretrained_from": portable_path(base, ctx.out), "pretrain_reused": reused,
                 "pretrain_steps": cfg.steps, "finetune_lr": cfg.finetune_lr or cfg.lr,
                 "pretrain_mix": cfg.pretrain_mix}
        offset = cfg.steps
        ft = with_steps(cfg, spec.steps - 1)
        ft = dataclasses.replace(ft, lr=cfg.finetune_lr) if cfg.finetune_lr is not None else ft
        model, log = train_segmenter(ft, real, [], "real", cell.seed, ctx.device, progress=ctx.progress,
                                     desc=cell.name, init=init, branches=branch_budgets(cfg, ft.steps),
                                     on_branch=on_branch)
    else:
        run = with_steps(cfg, spec.steps)
        model, log = train_segmenter(run, real, synth, spec.sampling, cell.seed, ctx.device,
                                     progress=ctx.progress, desc=cell.name, branches=branch_budgets(cfg, run.steps),
                                     on_branch=on_branch)
        if spec.uses_synth and not spec.uses_real and not cfg.pretrain_mix:
            _pretrained(ctx, cell.seed, cell.name, model=model)
    if branches:
        extra["branches"] = branches
    path = ctx.out / MODELS / f"{cell.name}.safetensors"
    # Kept for scoring other evaluation sets later, and e.g. for `retinasynth synthesize --filter-model`.
    save_segmenter(path, model, cfg, {"train_key": cell.train_key})
    rec = {"format_version": KEY_FORMAT, "status": "complete", "name": cell.name, "arm": cell.arm,
           "regime": cell.regime, "seed": cell.seed, "train_key": cell.train_key,
           "real_ids": [s.id for s in real], "n_synth_pool": len(ctx.synth) if spec.uses_synth else 0,
           "total_steps": spec.steps * cfg.steps, **extra, "train": log, "train_wall_s": time.perf_counter() - t0,
           "precision": ctx.env.precision, "device": str(ctx.device), "model": portable_path(path, ctx.out),
           "record": {**process_record(), "seed": cell.seed}}
    write_json_atomic(ctx.out / RUNS / f"{cell.name}.json", rec)
    return rec, model


def reuse_training(ctx: Context, cell: Cell, src: dict) -> dict:
    """A cell whose training key equals an already trained one's (e.g. 'synth' at every regime): its record
    points at the same weights."""
    rec = {**src, "name": cell.name, "regime": cell.regime, "reused_from": src.get("reused_from") or src["name"]}
    write_json_atomic(ctx.out / RUNS / f"{cell.name}.json", rec)
    return rec


def score_path(ctx: Context, train_key: str, ev: EvalSet) -> Path:
    return ctx.out / SCORES / train_key[:20] / f"{ev.name}.json"


def cached_score(ctx: Context, train_key: str, ev: EvalSet, skey: str) -> dict | None:
    rec = read_json(score_path(ctx, train_key, ev))
    if rec is None or rec.get("score_key") != skey or rec.get("status") != "complete":
        return None
    return rec


def score_model(ctx: Context, model: torch.nn.Module, train_key: str, ev: EvalSet, eval_in: list,
                skey: str) -> dict:
    """Per-image scores of ``model`` on ``ev`` at native resolution inside the FOV; written to the score cache."""
    t0 = time.perf_counter()
    per_image = evaluate_segmenter(model, ctx.cfg, eval_in, {s.id: s for s in ev.native.samples}, ctx.device)
    keys = [k for k in next(iter(per_image.values())) if k in METRICS]
    mean = {k: _nanmean([v[k] for v in per_image.values()]) for k in keys}
    rec = {"format_version": KEY_FORMAT, "status": "complete", "train_key": train_key, "score_key": skey,
           "eval": ev.name, "mean": mean, "per_image": per_image, "eval_wall_s": time.perf_counter() - t0,
           "record": process_record()}
    write_json_atomic(score_path(ctx, train_key, ev), rec)
    return rec


def load_model(ctx: Context, rec: dict) -> torch.nn.Module:
    model, _ = load_segmenter(model_path(ctx, rec), ctx.device)
    return model


def _nanmean(values: list[float]) -> float:
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")
