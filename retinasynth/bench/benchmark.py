"""`retinasynth benchmark-downstream`: does adding synthetic pairs help a segmenter on REAL test images?

For every regime n (real training images), seed and arm ('real', 'real+synth', 'synth', 'pretrain') one
segmenter is trained with the same steps, batch size and augmentation, then scored on the real test split
(or, with ``eval=val``, on training images held out from the regimes) at native resolution inside the
FOV. Each run is written to ``OUT/runs/<arm>_n<regime>_s<seed>.json`` with a hash of everything that
determines it; a rerun skips runs whose hash matches, and runs with identical inputs (the 'synth' arm,
which sees no real image, for different n) are trained once. The 'pretrain' arm fine-tunes the 'synth'
model of its seed, which is kept in ``OUT/models/pretrain_base_<key>.safetensors`` and trained once.

Scale-out: the runs ("cells") are independent given their cache, so they can be spread over torchrun
ranks or over separate jobs (``cells="i/N"``, e.g. SLURM array tasks). :func:`cell_groups` keeps together
the cells that share work: runs with equal hashes (the 'synth' arm of every regime) and, per seed, the
'synth' cells with all 'pretrain' cells (the pretraining they share), so no two processes ever train or
write the same model. Group ``g`` (in plan order) goes to share ``g % N``. Under torchrun, after a
barrier, rank 0 loads every run record and writes the report; a ``cells`` run writes no report, and a
final plain run finds every cell cached and writes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from retinasynth.bench.config import BenchConfig
from retinasynth.bench.guards import EvalSet, verify_synthetic
from retinasynth.bench.report import (
    learning_curve_warnings,
    paired_all,
    plateau_summary,
    plot_dice_vs_n,
    report_markdown,
    summarize,
    write_summary_csv,
)
from retinasynth.bench.sampling import real_subset
from retinasynth.bench.segmenter import (
    create_segmenter,
    evaluate_segmenter,
    load_segmenter,
    save_segmenter,
    train_segmenter,
)
from retinasynth.data.dataset import DataConfig, Dataset, index_dataset, load_dataset
from retinasynth.data.preprocess import enhance
from retinasynth.errors import ConfigError, DataError
from retinasynth.metrics.seg import METRICS
from retinasynth.provenance import fingerprint_arrays, run_record, write_json_atomic, write_text_atomic
from retinasynth.scaleout import init_ranks, parse_share, rank_device

RUNS = "runs"
RUN_FORMAT = 2
# Settings that do not change what a single run computes (they choose which runs exist or how the
# report aggregates them), so they stay out of the run hash.
_NOT_IN_HASH = ("profile", "arms", "regimes", "seeds", "bootstrap", "threads", "plateau")
# Settings that change only how a model is scored, not how it is trained.
_EVAL_ONLY = ("infer_tile", "infer_overlap", "threshold", "cldice", "eval", "val_count", "val_seed")
# Settings of the 'pretrain' arm only: in no other arm's hash, and left out of every hash at their default so
# that cells recorded before they existed stay valid. The pretraining's key adds pretrain_mix itself.
_PRETRAIN_ONLY = {"finetune_lr": None, "pretrain_mix": 0.0}


def run_name(arm: str, regime: int, seed: int) -> str:
    return f"{arm}_n{regime}_s{seed}"


def arm_steps(cfg: BenchConfig, arm: str) -> int:
    """Optimiser steps behind one model of ``arm`` (pretrain: synthetic pretraining + real fine-tune)."""
    return 2 * cfg.steps if arm in ("pretrain", "real-2x") else cfg.steps


def val_ids(ids: list[str], cfg: BenchConfig) -> list[str]:
    """The training images held out as the evaluation set of ``eval=val``: ``val_count`` ids drawn with
    ``default_rng([val_seed, 1])`` from the sorted ids (fixed for a dataset and seed, recorded)."""
    ordered = sorted(ids)
    if cfg.val_count >= len(ordered):
        raise ConfigError(f"bench.val_count={cfg.val_count} leaves no training image of the {len(ordered)} in the "
                          "training split; lower bench.val_count.")
    idx = np.random.default_rng([cfg.val_seed, 1]).choice(len(ordered), size=cfg.val_count, replace=False)
    return sorted(ordered[int(i)] for i in idx)


def pretrain_key(cfg: BenchConfig, seed: int, synth_fp: str | None, device_type: str,
                 subset_fp: str | None = None) -> str:
    """What the pretraining depends on: config, seed, synthetic set; with ``pretrain_mix`` > 0 also the share
    and the real subset (with 0 it is the 'synth' arm's model)."""
    c = {k: v for k, v in cfg.to_dict().items() if k not in (*_NOT_IN_HASH, *_EVAL_ONLY, *_PRETRAIN_ONLY)}
    key = {"format": RUN_FORMAT, "config": c, "seed": seed, "synth": synth_fp, "device": device_type}
    if cfg.pretrain_mix > 0:
        key.update(pretrain_mix=cfg.pretrain_mix, real=subset_fp)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()


def _enhanced(samples, mode: str) -> list:
    """Samples with the segmenter's input preprocessing applied (a copy; the originals are untouched)."""
    if mode == "rgb":
        return list(samples)
    return [dataclasses.replace(s, image=enhance(s.image, mode)) for s in samples]


def _samples_fingerprint(samples) -> str:
    items = []
    for s in samples:
        items += [(s.id + ":image", s.image), (s.id + ":mask", s.mask), (s.id + ":fov", s.fov)]
    return fingerprint_arrays(items)


def run_hash(cfg: BenchConfig, arm: str, regime: int, seed: int, subset_fp: str | None, synth_fp: str | None,
             eval_fps: dict, device_type: str) -> str:
    """sha256 of everything a run's result depends on. The synth arm sees no real image, so its hash
    leaves out the regime and the subset: equal hashes mean identical runs."""
    c = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_HASH
         and not (k in _PRETRAIN_ONLY and (arm != "pretrain" or v == _PRETRAIN_ONLY[k]))}
    if arm == "real":
        c.pop("synth_ratio")
    key = {"format": RUN_FORMAT, "config": c, "arm": arm, "seed": seed, "eval": eval_fps, "device": device_type,
           "regime": None if arm == "synth" else regime, "real": None if arm == "synth" else subset_fp,
           "synth": None if arm == "real" else synth_fp}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()


def cell_groups(plan: list[tuple]) -> list[list[int]]:
    """Indices of ``plan`` (entries ``(arm, regime, seed, subset, hash, cfg)``) grouped so that cells sharing
    work stay together: equal hashes, and per seed the 'synth' and 'pretrain' cells. Groups are in
    plan order, each sorted; every index is in exactly one group."""
    parent = list(range(len(plan)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict = {}
    for i, (arm, _n, seed, _subset, h, _cfg) in enumerate(plan):
        keys = [("hash", h)] + ([("pretraining", seed)] if arm in ("synth", "pretrain") else [])
        for key in keys:
            if key in first:
                a, b = find(i), find(first[key])
                parent[max(a, b)] = min(a, b)
            else:
                first[key] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(plan)):
        groups.setdefault(find(i), []).append(i)
    return [groups[r] for r in sorted(groups)]


def cell_share(plan: list[tuple], part: int, parts: int) -> set[int]:
    """The plan indices that share ``part`` of ``parts`` trains: group ``g`` goes to ``g % parts``."""
    return {i for g, idx in enumerate(cell_groups(plan)) if g % parts == part for i in idx}


def _external_split(root: str | Path, cfg: DataConfig) -> str:
    """The test split of a dataset that has one, else all of it."""
    _, index, records = index_dataset(root, cfg)
    if index.split_source == "seeded" or not any(r.split == "test" for r in records):
        return "all"
    return "test"


def _eval_set(name: str, root, split: str, size: int, progress: bool) -> EvalSet:
    work = load_dataset(root, split, DataConfig(size=size), progress=progress)
    native = load_dataset(root, split, DataConfig(size=None), progress=progress)
    if work.ids != native.ids:
        raise DataError(f"{root}: the {split} split has different samples at native and working resolution "
                        f"({len(native)} vs {len(work)}); check the folder for unreadable files.")
    return EvalSet(name, Path(root), split, work, native)


def _subset(ds: Dataset, ids, split: str) -> Dataset:
    keep = set(ids)
    return dataclasses.replace(ds, samples=[s for s in ds.samples if s.id in keep], split=split)


def _load_cached(path: Path, h: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # a damaged record is a cache miss: the run is trained again and the record rewritten
    if not isinstance(rec, dict):
        return None
    return rec if rec.get("config_hash") == h and rec.get("status") == "complete" else None


def _progress(total: int, initial: int, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="benchmark", unit="run", dynamic_ncols=True)


def benchmark_downstream(real_data: str | Path, synth_data: str | Path | None, out: str | Path, cfg: BenchConfig,
                         test_data: str | Path | None = None, progress: bool = True,
                         allow_unverified_synth: bool = False, device: str | None = None,
                         cells: str | None = None) -> dict:
    """Run the downstream protocol; write runs/, results.json, summary.csv, report.md, dice_vs_n.png.

    Args:
        real_data: real dataset root (any supported layout); its train split feeds the regimes, its
            test split is the evaluation.
        synth_data: a folder written by `retinasynth synthesize`; may be None if ``cfg.arms`` is ('real',).
        out: output folder; completed runs in ``out/runs`` with a matching config hash are reused.
        cfg: the protocol (see :class:`BenchConfig`).
        test_data: an extra evaluation set: another dataset's test split, or all of it if it has none.
        progress: tqdm bars over runs (remaining count, ETA) and over each run's steps.
        allow_unverified_synth: use a synthetic folder lacking manifest.jsonl/synth.json (recorded as a
            warning in results.json). Detected leakage is refused regardless.
        device: torch device; default cuda if available, else cpu (under torchrun: the rank's GPU).
        cells: "i/N": train only share i of N of the runs (see :func:`cell_share`), write no report, and
            return ``{"cells", "trained", "cached", "reused", "runs"}``. Under torchrun (WORLD_SIZE > 1)
            each rank trains share RANK/WORLD_SIZE and rank 0 writes the report; other ranks return that
            same small dict.

    Returns:
        the content of results.json.

    Raises:
        RetinaSynthError (one line): bad paths, leakage, an impossible regime or configuration.
    """
    t_start = time.perf_counter()
    out = Path(out)
    ranks = init_ranks()
    if ranks.distributed and cells is not None:
        raise ConfigError(f"--cells {cells} under torchrun: each rank already takes its share from "
                          "RANK/WORLD_SIZE; drop --cells (or run the shares as separate jobs).")
    share = parse_share(cells, "--cells") if cells is not None else None
    if ranks.distributed:
        share = (ranks.rank, ranks.world)
        progress = progress and ranks.main
        device = rank_device(device, ranks)
    synth_arms = [a for a in cfg.arms if a not in ("real", "real-2x")]
    needs_synth = bool(synth_arms)
    if needs_synth and synth_data is None:
        raise ConfigError(f"arms {', '.join(synth_arms)} need synthetic pairs: pass "
                          "--synth DIR, or run only the real arm with -o bench.arms=real.")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu.")
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _benchmark(real_data, synth_data, out, cfg, test_data, progress, allow_unverified_synth, dev,
                          needs_synth, t_start, share, ranks)
    finally:
        torch.set_num_threads(threads_before)


def _benchmark(real_data, synth_data, out: Path, cfg: BenchConfig, test_data, progress, allow_unverified, dev,
               needs_synth, t_start, share=None, ranks=None) -> dict:
    create_segmenter(cfg)  # fail fast on an arch/encoder combination smp cannot build
    data_cfg = DataConfig(size=cfg.size)
    if cfg.eval == "val" and test_data is not None:
        raise ConfigError("--test-data scores another test set, but bench.eval=val is for choosing settings "
                          "without touching any test data; drop --test-data or use -o bench.eval=test.")
    train = load_dataset(real_data, "train", data_cfg, progress=progress)
    held_out: list[str] = []
    if cfg.eval == "val":
        # The evaluation set is carved from the training split; the test split is never decoded.
        held_out = val_ids(train.ids, cfg)
        native_train = load_dataset(real_data, "train", DataConfig(size=None), progress=progress)
        work_val, native_val = _subset(train, held_out, "val"), _subset(native_train, held_out, "val")
        train = _subset(train, [i for i in train.ids if i not in set(held_out)], "train")
        evals = [EvalSet("val", Path(real_data), "train (held out)", work_val, native_val)]
    too_big = [n for n in cfg.regimes if n > len(train)]
    if too_big:
        what = (f"the {len(train)} training images left after holding out {len(held_out)} for eval=val"
                if held_out else f"the {len(train)} training images")
        raise ConfigError(f"bench.regimes {too_big} exceed {what} of {real_data}; valid: 1..{len(train)} "
                          f"(e.g. -o bench.regimes=2,5,{len(train)}).")
    if cfg.eval == "test":
        evals = [_eval_set("test", real_data, "test", cfg.size, progress)]
        if test_data is not None:
            evals.append(_eval_set("external", test_data, _external_split(test_data, data_cfg), cfg.size, progress))
    warn: list[str] = []
    synth: Dataset | None = None
    synth_info: dict | None = None
    if synth_data is not None:
        synth = load_dataset(synth_data, "all", data_cfg, progress=progress)
        synth_info = verify_synthetic(synth_data, synth, evals, allow_unverified)
        synth_info["n"] = len(synth)
        if "warning" in synth_info:
            warn.append(synth_info["warning"])
    synth_samples = list(synth.samples) if synth is not None and needs_synth else []
    synth_fp = _samples_fingerprint(synth_samples) if synth_samples else None
    eval_fps = {ev.name: {"work": ev.work.fingerprint(), "native": ev.native.fingerprint()} for ev in evals}
    # The segmenter's input preprocessing, identical for every arm and every image.
    synth_in = _enhanced(synth_samples, cfg.preprocess)
    eval_in = {ev.name: _enhanced(ev.work.samples, cfg.preprocess) for ev in evals}

    cfg2 = dataclasses.replace(cfg, steps=2 * cfg.steps)
    plan = []
    for n in cfg.regimes:
        for seed in cfg.seeds:
            subset = real_subset(train.samples, n, seed)
            subset_fp = _samples_fingerprint(subset)
            for arm in sorted(cfg.arms, key=lambda a: a == "pretrain"):  # 'synth' first: it is the pretraining
                # real-2x is 'real' at twice the steps: hashed as such, so it and the plateau run are one cell
                h = (run_hash(cfg2, "real", n, seed, subset_fp, None, eval_fps, dev.type) if arm == "real-2x"
                     else run_hash(cfg, arm, n, seed, subset_fp, synth_fp, eval_fps, dev.type))
                plan.append((arm, n, seed, subset, h, cfg))
    n_max = max(cfg.regimes)
    plateau_cells: set[int] = set()  # plan indices of the plateau runs (when 'real-2x' is not an arm)
    if "real-2x" not in cfg.arms:
        for seed in cfg.seeds[:cfg.plateau]:
            subset = real_subset(train.samples, n_max, seed)
            h = run_hash(cfg2, "real", n_max, seed, _samples_fingerprint(subset), None, eval_fps, dev.type)
            plateau_cells.add(len(plan))
            plan.append(("real-2x", n_max, seed, subset, h, cfg))

    runs_dir = out / RUNS
    runs_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    results_runs: list[dict] = []
    plateau_runs: list[dict] = []
    mine = cell_share(plan, *share) if share is not None else set(range(len(plan)))
    cached = [p for i, p in enumerate(plan) if i in mine and _load_cached(runs_dir / f"{run_name(*p[:3])}.json", p[4])]
    unique_todo = {p[4] for i, p in enumerate(plan) if i in mine} - {p[4] for p in cached}
    bar = _progress(len(unique_todo), 0, progress)
    n_trained = n_cached = n_reused = 0
    record = run_record(None)
    ctx = {"synth": synth_in, "synth_fp": synth_fp, "evals": evals, "eval_in": eval_in, "dev": dev,
           "progress": progress, "models": out / "models"}
    try:
        for i, (arm, n, seed, subset, h, run_cfg) in enumerate(plan):
            if i not in mine:
                continue
            name = run_name(arm, n, seed)
            path = runs_dir / f"{name}.json"
            rec = _load_cached(path, h)
            if rec is not None:
                n_cached += 1
                done.setdefault(h, rec)
            elif h in done:
                src = done[h]
                rec = {**src, "name": name, "regime": n, "reused_from": src.get("reused_from") or src["name"]}
                write_json_atomic(path, rec)
                n_reused += 1
            else:
                if bar is not None:
                    bar.set_postfix_str(name)
                rec = _one_run(run_cfg, arm, n, seed, _enhanced(subset, cfg.preprocess), h, name, ctx)
                write_json_atomic(path, rec)
                done[h] = rec
                n_trained += 1
                if bar is not None:
                    bar.update(1)
            (plateau_runs if i in plateau_cells else results_runs).append(rec)
    finally:
        if bar is not None:
            bar.close()
    if share is not None:
        counts = {"trained": n_trained, "cached": n_cached, "reused": n_reused}
        if ranks is not None and ranks.distributed:
            # A collective: every rank has written its run records after this.
            n_trained, n_cached, n_reused = ranks.sum([n_trained, n_cached, n_reused])
        if ranks is None or not ranks.distributed or not ranks.main:
            if ranks is not None:
                ranks.finish()  # wait for rank 0's report
            return {"cells": f"{share[0]}/{share[1]}", **counts, "runs": sorted(run_name(*plan[i][:3]) for i in mine)}
        results_runs, plateau_runs = [], []
        for i, (arm, n, seed, _s, h, _c) in enumerate(plan):  # rank 0: every record, as a rerun would find them
            rec = _load_cached(runs_dir / f"{run_name(arm, n, seed)}.json", h)
            if rec is None:
                raise DataError(f"{runs_dir}: run {run_name(arm, n, seed)} is missing after every rank finished; "
                                "rerun the same command to complete it.")
            (plateau_runs if i in plateau_cells else results_runs).append(rec)
    if "real-2x" in cfg.arms:  # the arm's cells at the largest regime are the plateau runs
        plateau_runs = [r for r in results_runs if r["arm"] == "real-2x" and r["regime"] == n_max
                        and r["seed"] in cfg.seeds[:cfg.plateau]]

    rows = summarize(results_runs, cfg.arms, cfg.regimes)
    pairs = paired_all(results_runs, cfg.arms, cfg.regimes, cfg.bootstrap)
    warn += learning_curve_warnings(pairs)
    results = {
        "format_version": RUN_FORMAT,
        "config": cfg.to_dict(),
        "record": record,
        "device": str(dev),
        "warnings": warn,
        "data": {
            "real": {"root": str(Path(real_data).resolve()), "layout": train.layout, "n_train": len(train),
                     "n_test": len(evals[0].work), "train_fingerprint": train.fingerprint(),
                     "train_ids": train.ids, "split_source": train.split_source, "eval_mode": cfg.eval,
                     "val_ids": held_out},
            "eval": {ev.name: {"root": str(ev.root.resolve()), "split": ev.split, "n": len(ev.work),
                               "ids": ev.ids, "fingerprint": ev.work.fingerprint()} for ev in evals},
        },
        "synth": synth_info,
        "metrics": [m for m in METRICS if cfg.cldice or m != "cldice"],
        "arm_steps": {arm: arm_steps(cfg, arm) for arm in cfg.arms},
        "runs": results_runs,
        "summary": rows,
        "paired": pairs,
        "n_comparisons": {ev.name: sum(1 for p in pairs if p["eval"] == ev.name and p["metric"] == "dice")
                          for ev in evals},
        "plateau": plateau_summary(results_runs, plateau_runs, n_max, cfg.bootstrap) if plateau_runs else None,
        "plateau_runs": plateau_runs,
        "n_trained": n_trained, "n_cached": n_cached, "n_reused": n_reused,
        "wall_s": time.perf_counter() - t_start,
    }
    write_json_atomic(out / "results.json", results)
    write_summary_csv(out / "summary.csv", rows)
    plot_dice_vs_n(out / "dice_vs_n.png", rows, cfg.arms, cfg.regimes)
    write_text_atomic(out / "report.md", report_markdown(results))
    if ranks is not None:
        ranks.finish()
    return results


def _pretrained(cfg: BenchConfig, seed: int, ctx: dict, desc: str, model=None, real=()) -> tuple[dict, str, bool]:
    """Weights of the synthetic pretraining of ``seed``: loaded from OUT/models if this exact pretraining
    was done before (by the 'synth' arm or another regime), else trained now and saved there. With
    ``pretrain_mix`` > 0 it also draws real patches from ``real`` (the regime's subset)."""
    mix = cfg.pretrain_mix
    key = pretrain_key(cfg, seed, ctx["synth_fp"], ctx["dev"].type, _samples_fingerprint(real) if mix else None)
    path = ctx["models"] / f"pretrain_base_{key[:16]}.safetensors"
    if model is not None:  # the 'synth' arm just trained exactly this model: keep it for 'pretrain'
        save_segmenter(path, model, cfg)
        return {}, str(path), False
    if path.is_file():
        m, _ = load_segmenter(path)
        return m.state_dict(), str(path), True
    if mix:
        m, _ = train_segmenter(dataclasses.replace(cfg, synth_ratio=1.0 - mix), list(real), ctx["synth"],
                               "real+synth", seed, ctx["dev"], progress=ctx["progress"], desc=desc + " (pretrain)")
    else:
        m, _ = train_segmenter(cfg, [], ctx["synth"], "synth", seed, ctx["dev"], progress=ctx["progress"],
                               desc=desc + " (pretrain)")
    save_segmenter(path, m, cfg)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}, str(path), False


def _one_run(cfg: BenchConfig, arm: str, n: int, seed: int, subset, h: str, name: str, ctx: dict) -> dict:
    dev, evals = ctx["dev"], ctx["evals"]
    real = [] if arm == "synth" else subset
    synth = [] if arm in ("real", "real-2x", "pretrain") else ctx["synth"]
    t0 = time.perf_counter()
    extra: dict = {}
    total_steps = arm_steps(cfg, arm)
    if arm == "pretrain":
        init, base, reused = _pretrained(cfg, seed, ctx, name, real=real)
        extra = {"pretrained_from": base, "pretrain_reused": reused, "pretrain_steps": cfg.steps,
                 "finetune_lr": cfg.finetune_lr or cfg.lr, "pretrain_mix": cfg.pretrain_mix}
        ft = dataclasses.replace(cfg, lr=cfg.finetune_lr) if cfg.finetune_lr is not None else cfg
        model, log = train_segmenter(ft, real, [], "real", seed, dev, progress=ctx["progress"], desc=name, init=init)
    else:
        if arm == "real-2x":
            cfg = dataclasses.replace(cfg, steps=2 * cfg.steps)
        model, log = train_segmenter(cfg, real, synth, "real" if arm == "real-2x" else arm, seed, dev,
                                     progress=ctx["progress"], desc=name)
        if arm == "synth" and not cfg.pretrain_mix:
            _pretrained(cfg, seed, ctx, name, model=model)
    # Kept for reuse, e.g. as the consistency filter of `retinasynth synthesize --filter-model`.
    save_segmenter(ctx["models"] / f"{name}.safetensors", model, cfg)
    t1 = time.perf_counter()
    scores = {}
    for ev in evals:
        per_image = evaluate_segmenter(model, cfg, ctx["eval_in"][ev.name], {s.id: s for s in ev.native.samples},
                                       dev)
        keys = [k for k in next(iter(per_image.values())) if k in METRICS]
        mean = {k: _nanmean([v[k] for v in per_image.values()]) for k in keys}
        scores[ev.name] = {"mean": mean, "per_image": per_image}
    t2 = time.perf_counter()
    return {"format_version": RUN_FORMAT, "status": "complete", "name": name, "arm": arm, "regime": n, "seed": seed,
            "config_hash": h, "real_ids": [s.id for s in real], "n_synth_pool": len(synth),
            "total_steps": total_steps, **extra,
            "train": log, "scores": scores, "train_wall_s": t1 - t0, "eval_wall_s": t2 - t1,
            "device": str(dev), "record": run_record(seed)}


def _nanmean(values: list[float]) -> float:
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")
