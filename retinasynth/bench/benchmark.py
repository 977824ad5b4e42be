"""`retinasynth benchmark-downstream`: does adding synthetic pairs help a segmenter on REAL images?

For every regime n (real training images), seed and arm (see the registry in :mod:`retinasynth.bench.arms`)
one segmenter is trained, then scored on every evaluation set (the real dataset's test split, or with
``eval=val`` training images held out from the regimes, plus any ``--test-data NAME=PATH``) at native
resolution inside the FOV. This module only orchestrates:

- :mod:`~retinasynth.bench.evalsets` loads the data and the evaluation sets,
- :mod:`~retinasynth.bench.guards` refuses leakage (synthetic set, generator, and the real training images
  against every evaluated image),
- :mod:`~retinasynth.bench.plan` makes the cells and their cache keys,
- :mod:`~retinasynth.bench.runner` trains and scores them (models cached by training key, scores per
  evaluation set by score key: a new evaluation set retrains nothing),
- :mod:`~retinasynth.bench.stats` and :mod:`~retinasynth.bench.report` turn the runs into results.json,
  summary.csv, report.md and dice_vs_n.png.

Scale-out: the cells are independent given their cache, so they can be spread over torchrun ranks or over
separate jobs (``cells="i/N"``, e.g. SLURM array tasks). :func:`~retinasynth.bench.plan.cell_groups` keeps
together the cells that share work (equal training keys, and per seed the synthetic pretraining), so no two
processes ever train or write the same model. Under torchrun, after a barrier, rank 0 gathers every record and
writes the report; a ``cells`` run writes no report, and a final plain run finds every cell cached and writes it.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path

import torch

from retinasynth.bench.adapt import adapted_pool, load_adapt_set, parse_adapt, refuse_scored
from retinasynth.bench.adapt import self_train as adapt_self_train
from retinasynth.bench.arms import get_arm
from retinasynth.bench.config import BenchConfig
from retinasynth.bench.evalsets import load_sets, parse_test_data
from retinasynth.bench.guards import verify_real, verify_synthetic
from retinasynth.bench.plan import (
    KEY_FORMAT,
    Cell,
    Environment,
    cell_groups,
    cell_share,
    make_plan,
    run_name,
    samples_fingerprint,
    score_key,
    val_ids,
)
from retinasynth.bench.records import restore_records, save_records
from retinasynth.bench.report import (
    arm_plateaus,
    cost_rows,
    curve_summary,
    family_sizes,
    learning_curve_warnings,
    paired_all,
    plateau_summary,
    plot_dice_vs_n,
    plot_dice_vs_steps,
    report_markdown,
    summarize,
    write_summary_csv,
)
from retinasynth.bench.runner import (
    MODELS,
    RUNS,
    Context,
    cached_score,
    cached_training,
    load_model,
    read_json,
    reuse_training,
    score_model,
    score_path,
    train_cell,
)
from retinasynth.data.dataset import load_dataset
from retinasynth.data.preprocess import enhance
from retinasynth.device import pick_device
from retinasynth.errors import ConfigError, DataError, Stopped
from retinasynth.locking import hold, read_holders, try_hold
from retinasynth.metrics.seg import METRICS
from retinasynth.precision import describe, resolve_precision
from retinasynth.provenance import portable_path, process_record, write_json_atomic, write_text_atomic
from retinasynth.scaleout import init_ranks, parse_share, rank_device
from retinasynth.segmenter import create_segmenter, save_segmenter
from retinasynth.segmenter.model import wsd_decay_start

RUN_FORMAT = KEY_FORMAT
__all__ = ["benchmark_downstream", "cell_groups", "cell_share", "run_name", "val_ids", "Cell"]


def arm_steps(cfg: BenchConfig, arm: str) -> int:
    """Optimiser steps behind one model of ``arm`` (pretrain: synthetic pretraining + real fine-tune)."""
    return get_arm(arm).steps * cfg.steps


def _enhanced(samples, mode: str) -> list:
    """Samples with the segmenter's input preprocessing applied (a copy; the originals are untouched)."""
    if mode == "rgb":
        return list(samples)
    return [dataclasses.replace(s, image=enhance(s.image, mode)) for s in samples]


def _progress(total: int, initial: int, show: bool):
    if not show:
        return None
    from retinasynth.progress import progress as progress_bar

    return progress_bar(total=total, initial=initial, desc="benchmark", unit="run", dynamic_ncols=True)

STOP_FILE = "STOP"  # OUT/STOP: stop before the next model is trained (rerun to continue)
LOCKS = "locks"  # OUT/locks/<training key>.lock: one per cell being trained by a process of a shared cache


def benchmark_downstream(real_data: str | Path, synth_data: str | Path | None, out: str | Path, cfg: BenchConfig,
                         test_data=None, progress: bool = True, allow_unverified_synth: bool = False,
                         device: str | None = None, cells: str | None = None,
                         allow_mixed_code: bool = False, records: str | Path | None = None, adapt=None) -> dict:
    """Run the downstream protocol; write runs/, models/, scores/, results.json, summary.csv, report.md and
    dice_vs_n.png under ``out``.

    Args:
        real_data: real dataset root (any supported layout); its train split feeds the regimes, its test
            split is the evaluation set 'test' (with ``cfg.eval == 'val'``: held-out training images, 'val').
        synth_data: a folder written by `retinasynth synthesize`; may be None if no arm uses synthetic pairs.
        out: output folder; models and scores cached there under matching keys are reused (resume).
        cfg: the protocol (see :class:`BenchConfig`).
        test_data: external evaluation sets: 'NAME=PATH' strings (or bare paths, named after the folder),
            a list of them, or a dict {name: path}; each dataset's test split, or all of it if it has none.
            Adding one to a finished benchmark scores the saved models and trains nothing.
        progress: progress over runs and each run's steps (plain lines when stderr is not a terminal).
        allow_unverified_synth: use a synthetic folder lacking manifest.jsonl/synth.json (recorded as a
            warning in results.json). Detected leakage is refused regardless.
        device: torch device; default cuda if available, else cpu (under torchrun: the rank's GPU).
        cells: "i/N": train only share i of N of the runs, write no report, and return ``{"cells", "trained",
            "cached", "reused", "runs"}``. Under torchrun (WORLD_SIZE > 1) each rank trains share
            RANK/WORLD_SIZE and rank 0 writes the report; other ranks return that same small dict.
        allow_mixed_code: assemble a report from runs made by different versions of the code (they are
            listed in results.json); refused otherwise.
        adapt: 'NAME=DIR' (or a bare DIR): unlabelled photographs of a target camera for the domain-adaptation
            control arms ('real+fda', 'real+hist', 'self-train'); refused in one line if any is an evaluated
            image (:mod:`retinasynth.bench.adapt`).
        records: a durable folder for the small records (training records and scores, no weights): its
            records are restored into ``out`` first and every new one is copied there after each model, so a
            protocol longer than one machine's life goes on elsewhere (:mod:`retinasynth.bench.records`).

    Returns:
        the content of results.json.

    Raises:
        RetinaSynthError (one line): bad paths, leakage, an impossible regime or configuration, mixed code.
    """
    process_record()  # provenance of the code this process imported, taken now, at start
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
    dev = pick_device(device)  # checked first: a bad --device is refused before anything is read
    synth_arms = [a for a in cfg.arms if get_arm(a).uses_synth]
    if synth_arms and synth_data is None:
        raise ConfigError(f"arms {', '.join(synth_arms)} need synthetic pairs: pass --synth DIR, or run only "
                          f"arms without them with -o bench.arms={','.join(a for a in cfg.arms if a not in synth_arms) or 'real'}.")
    externals = parse_test_data(test_data)
    adapt_spec = parse_adapt(adapt)
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # One writer per --out: a plain run holds it alone; the processes that share its cache by design (--cells
    # shares, torchrun ranks) hold it together and lock each cell they train (retinasynth.locking).
    try:
        with hold(out, shared=share is not None, what="the benchmark folder"):
            return _benchmark(real_data, synth_data, out, cfg, externals, progress, allow_unverified_synth, dev,
                              bool(synth_arms), t_start, share, ranks, allow_mixed_code, records, adapt_spec)
    finally:
        torch.set_num_threads(threads_before)


def _benchmark(real_data, synth_data, out: Path, cfg: BenchConfig, externals, progress, allow_unverified, dev,
               needs_synth, t_start, share=None, ranks=None, allow_mixed_code=False, records=None,
               adapt_spec=None) -> dict:
    create_segmenter(cfg)  # fail fast on an arch/encoder combination smp cannot build
    env = Environment(precision=resolve_precision(cfg.precision, dev), device_type=dev.type)
    train, evals, held_out = load_sets(real_data, cfg, externals, progress)
    real_guard = verify_real(real_data, train, evals)
    adapt_set, adapt_info = None, None
    if adapt_spec is not None:
        adapt_set = load_adapt_set(*adapt_spec, cfg.data_config(), progress)
        adapt_info = refuse_scored(adapt_set, evals)
        adapt_info["root"] = portable_path(adapt_set.root, out)
    warn: list[str] = []
    synth_info: dict | None = None
    synth_samples: list = []
    if synth_data is not None:
        synth = load_dataset(synth_data, "all", cfg.data_config(), progress=progress)
        synth_info = verify_synthetic(synth_data, synth, evals, allow_unverified)
        synth_info["n"] = len(synth)
        if "warning" in synth_info:
            warn.append(synth_info["warning"])
        if needs_synth:
            synth_samples = list(synth.samples)
    synth_fp = samples_fingerprint(synth_samples) if synth_samples else None
    if synth_info is not None:
        synth_info["fingerprint"] = synth_fp or samples_fingerprint(synth.samples)
    eval_fps = {ev.name: {"work": ev.work.fingerprint(), "native": ev.native.fingerprint()} for ev in evals}
    eval_in = {ev.name: _enhanced(ev.work.samples, cfg.preprocess) for ev in evals}
    ctx = Context(out=out, cfg=cfg, env=env, synth=_enhanced(synth_samples, cfg.preprocess), synth_fp=synth_fp,
                  device=dev, progress=progress)
    ctx.adapt = adapt_set

    plan = make_plan(cfg, train.samples, synth_fp, env, adapt_info["fingerprint"] if adapt_info else None)
    mine = cell_share(plan, *share) if share is not None else set(range(len(plan)))
    (out / RUNS).mkdir(parents=True, exist_ok=True)
    if records is not None:
        restore_records(records, out)
    todo = {i for i in mine if not _scored(ctx, plan[i], evals, eval_fps)}
    bar = _progress(len(mine), len(mine) - len(todo), progress)
    by_name = {c.name: c for c in plan}
    counts = {"trained": 0, "cached": 0, "reused": 0, "scored": 0, "scores_cached": 0}
    done: dict[str, dict] = {}  # training key -> record trained (or found) in this process
    busy: list[str] = []  # cells another process of a shared cache was training: left to it
    try:
        for i, cell in enumerate(plan):
            if i not in mine:
                continue
            def stop(i: int = i, cell: Cell = cell) -> None:  # a clean stop before a model would be trained
                if (out / STOP_FILE).exists():  # (found, reused and read-off models cost nothing: not stopped for)
                    left = sum(1 for j in todo if j >= i)
                    raise Stopped(f"stopped before {cell.name} because {out / STOP_FILE} exists; {left} of "
                                  f"{len(todo)} runs left: delete it and rerun the same command to continue.")
            lock = try_hold(out / LOCKS / f"{cell.train_key[:24]}.lock") if share is not None else None
            if share is not None and lock is None:
                holders = read_holders(out / LOCKS / f"{cell.train_key[:24]}.lock")
                who = f"pid {holders[0]['pid']} on {holders[0]['host']}" if holders else "another process"
                warnings.warn(f"{cell.name}: being trained by {who}, which shares {out}; skipped here (a run "
                              "without --cells assembles it once it is done).", stacklevel=1)
                busy.append(cell.name)
                continue
            try:
                _run_cell(ctx, cell, evals, eval_in, eval_fps, done, counts, bar, by_name, stop)
                if records is not None and i in todo:
                    save_records(out, records)
            finally:
                if lock is not None:
                    lock.release()
            if bar is not None and i in todo:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if share is not None:
        if ranks is not None and ranks.distributed:
            # A collective: every rank has written its records after this.
            summed = ranks.sum([counts["trained"], counts["cached"], counts["reused"]])
            counts.update(zip(("trained", "cached", "reused"), summed))
        if ranks is None or not ranks.distributed or not ranks.main:
            if ranks is not None:
                ranks.finish()  # wait for rank 0's report
            return {"cells": f"{share[0]}/{share[1]}", **{k: counts[k] for k in ("trained", "cached", "reused")},
                    "runs": sorted(plan[i].name for i in mine), "busy": busy}
    runs, plateau_runs = _gather(ctx, plan, evals, eval_fps)
    revisions = _check_code(out, runs, allow_mixed_code)
    if revisions["mixed"]:
        warn.append(f"runs made by {len(revisions['code_sha256'])} versions of the code were assembled "
                    f"(--allow-mixed-code): git revisions {', '.join(revisions['git_revisions'])}.")
    results = _results(real_data, out, cfg, env, dev, train, evals, held_out, real_guard, synth_info, runs,
                       plateau_runs, warn, counts, revisions, t_start)
    results["adapt"] = adapt_info  # the target photographs of --adapt (ids, fingerprint, the scored-image check)
    write_json_atomic(out / "results.json", results)
    write_summary_csv(out / "summary.csv", results["summary"])
    plot_dice_vs_n(out / "dice_vs_n.png", results["summary"], cfg.arms, cfg.regimes)
    if results["curves"]:
        plot_dice_vs_steps(out / "dice_vs_steps.png", results["curves"], cfg.arms, cfg.regimes)
    write_text_atomic(out / "report.md", report_markdown(results))
    if ranks is not None:
        ranks.finish()
    return results


def recorded_training(ctx: Context, cell: Cell) -> dict | None:
    """The cell's complete training record under its training key, whether or not its weights are still in
    OUT/models (a cache restored from committed records holds the records and scores only)."""
    rec = read_json(ctx.out / RUNS / f"{cell.name}.json")
    if rec is None or rec.get("status") != "complete" or rec.get("train_key") != cell.train_key:
        return None
    return rec


def _scored(ctx: Context, cell: Cell, evals, eval_fps) -> bool:
    """Whether the cell needs nothing more: its record and its scores (final model and every branch of
    ``bench.curve``) on every evaluation set are cached. Then its weights are not needed, so a report can be
    assembled from records and scores alone (``benchmarks/cache_records.py`` saves and restores them)."""
    rec = recorded_training(ctx, cell)
    if rec is None:
        return False
    keys = [cell.train_key, *(b["train_key"] for b in rec.get("branches", []))]
    return all(cached_score(ctx, k, ev, score_key(ctx.cfg, k, eval_fps[ev.name], ctx.env)) is not None
               for k in keys for ev in evals)


def _train_self(ctx: Context, cell: Cell, subset: list) -> tuple[dict, torch.nn.Module]:
    """The 'self-train' arm: the 'real' model of this regime and seed (from OUT/models when its record has the
    key a 'real' run would have, else trained now: the same weights), then :func:`retinasynth.bench.adapt.self_train`."""
    from retinasynth.bench.plan import train_key as real_key
    from retinasynth.segmenter import load_segmenter, train_segmenter

    cfg, t0 = ctx.cfg, time.perf_counter()
    key = real_key(cfg, get_arm("real"), cell.regime, cell.seed, samples_fingerprint(cell.subset), None, ctx.env)
    src = read_json(ctx.out / RUNS / f"{run_name('real', cell.regime, cell.seed)}.json")
    weights, reused = None, False
    if src and src.get("status") == "complete" and src.get("train_key") == key and (ctx.out / src["model"]).is_file():
        m, _ = load_segmenter(ctx.out / src["model"])
        weights, reused = m.state_dict(), True
    if weights is None:
        m, _ = train_segmenter(cfg, subset, [], "real", cell.seed, ctx.device, progress=ctx.progress,
                               desc=cell.name + " (source)")
        weights = {k: v.detach().clone() for k, v in m.state_dict().items()}
    model, log = adapt_self_train(cfg, subset, ctx.adapt, cell.seed, ctx.device, weights, ctx.progress, cell.name)
    path = ctx.out / MODELS / f"{cell.name}.safetensors"
    save_segmenter(path, model, cfg, {"train_key": cell.train_key})
    rec = {"format_version": KEY_FORMAT, "status": "complete", "name": cell.name, "arm": cell.arm,
           "regime": cell.regime, "seed": cell.seed, "train_key": cell.train_key,
           "real_ids": [s.id for s in cell.subset], "n_synth_pool": 0, "total_steps": 2 * cfg.steps,
           "source_train_key": key, "source_reused": reused, "adapt": ctx.adapt.name,
           "train": log, "train_wall_s": time.perf_counter() - t0, "precision": ctx.env.precision,
           "device": str(ctx.device), "model": portable_path(path, ctx.out),
           "record": {**process_record(), "seed": cell.seed}}
    write_json_atomic(ctx.out / RUNS / f"{cell.name}.json", rec)
    return rec, model


def _read_off(ctx: Context, cell: Cell, src: Cell, evals, eval_fps) -> dict | None:
    """``cell``'s record and scores read off ``src``'s run, whose branch at ``cell``'s steps is bitwise the model
    ``cell`` would train (:func:`retinasynth.bench.plan.branch_source`): the branch's weights and its scores on
    every evaluation set, recorded under ``cell``'s own keys. None when ``src`` is not done (or lacks a score)."""
    srec = recorded_training(ctx, src)
    if srec is None:
        return None
    steps = get_arm(cell.arm).steps * ctx.cfg.steps
    br = next((b for b in srec.get("branches", []) if b["steps"] == steps), None)
    if br is None:
        return None
    scores = {}
    for ev in evals:
        sc = cached_score(ctx, br["train_key"], ev, score_key(ctx.cfg, br["train_key"], eval_fps[ev.name], ctx.env))
        if sc is None:
            return None
        scores[ev.name] = sc
    for ev in evals:
        skey = score_key(ctx.cfg, cell.train_key, eval_fps[ev.name], ctx.env)
        write_json_atomic(score_path(ctx, cell.train_key, ev),
                          {**scores[ev.name], "train_key": cell.train_key, "score_key": skey,
                           "read_off": {"run": src.name, "branch_train_key": br["train_key"]}})
    main_steps = srec["train"]["steps"]
    log = {**{k: v for k, v in srec["train"].items() if k not in ("branches", "loss_curve")},
           "steps": steps, "final_loss": br["log"]["final_loss"],
           "loss_curve": [p for p in srec["train"].get("loss_curve", []) if p[0] <= wsd_decay_start(steps)]}
    rec = {**{k: v for k, v in srec.items() if k not in ("branches", "reused_from")},
           "name": cell.name, "arm": cell.arm, "regime": cell.regime, "seed": cell.seed, "train_key": cell.train_key,
           "total_steps": steps, "train": log, "model": br["model"],
           "branches": [b for b in srec.get("branches", []) if b["steps"] < steps],
           # the share of the source's wall time up to this budget: what a run of its own would have cost
           "train_wall_s": srec.get("train_wall_s", 0.0) * steps / main_steps,
           "read_off": {"run": src.name, "steps": steps, "branch_train_key": br["train_key"]}}
    write_json_atomic(ctx.out / RUNS / f"{cell.name}.json", rec)
    return rec


def _run_cell(ctx: Context, cell: Cell, evals, eval_in, eval_fps, done: dict, counts: dict, bar,
              by_name: dict | None = None, stop=None) -> None:
    """Train (or find, or read off a longer run's branch) one cell's model, then score it on every evaluation
    set not scored yet. ``stop()``, called only when a model must be trained, may raise :class:`Stopped`."""
    model = None
    rec = cached_training(ctx, cell)
    if rec is None and _scored(ctx, cell, evals, eval_fps):  # records and scores only: nothing to do
        rec = recorded_training(ctx, cell)
    if rec is None and cell.source is not None and by_name and cell.source in by_name:
        rec = _read_off(ctx, cell, by_name[cell.source], evals, eval_fps)
        if rec is not None:
            counts["read_off"] = counts.get("read_off", 0) + 1
            done[cell.train_key] = rec
            return
    if rec is not None:
        counts["cached"] += 1
        done.setdefault(cell.train_key, rec)
    elif cell.train_key in done:
        rec = reuse_training(ctx, cell, done[cell.train_key])
        counts["reused"] += 1
    else:
        if stop is not None:
            stop()
        if bar is not None:
            bar.set_postfix_str(cell.name)
        subset = _enhanced(cell.subset, ctx.cfg.preprocess)
        method = cell.spec.adapt
        if method in ("fda", "hist"):  # the real subset in target looks, trained on like the real images
            pool = adapted_pool(method, list(cell.subset), ctx.adapt, ctx.cfg.adapt_looks, cell.seed,
                                ctx.cfg.fda_beta)
            rec, model = train_cell(ctx, cell, _enhanced(pool, ctx.cfg.preprocess))
        elif method == "self-train":
            rec, model = _train_self(ctx, cell, subset)
        else:
            rec, model = train_cell(ctx, cell, subset)
        done[cell.train_key] = rec
        counts["trained"] += 1
    for ev in evals:
        skey = score_key(ctx.cfg, cell.train_key, eval_fps[ev.name], ctx.env)
        if cached_score(ctx, cell.train_key, ev, skey) is not None:
            counts["scores_cached"] += 1
            continue
        if model is None:
            model = load_model(ctx, rec)
        score_model(ctx, model, cell.train_key, ev, eval_in[ev.name], skey)
        counts["scored"] += 1
    for br in rec.get("branches", []):  # the shorter budgets of bench.curve, scored like the final model
        bmodel = None
        for ev in evals:
            skey = score_key(ctx.cfg, br["train_key"], eval_fps[ev.name], ctx.env)
            if cached_score(ctx, br["train_key"], ev, skey) is not None:
                continue
            bmodel = bmodel or load_model(ctx, br)
            score_model(ctx, bmodel, br["train_key"], ev, eval_in[ev.name], skey)


def _gather(ctx: Context, plan: list[Cell], evals, eval_fps) -> tuple[list[dict], list[dict]]:
    """Every cell's training record with its scores on every evaluation set: what a report is made of."""
    runs, plateau_runs = [], []
    for cell in plan:
        rec = recorded_training(ctx, cell)
        if rec is None:
            raise DataError(f"{ctx.out / RUNS}: run {cell.name} is missing or was made with other settings after "
                            "every share finished; rerun the same command to complete it.")
        scores, keys, records = {}, {}, []
        for ev in evals:
            skey = score_key(ctx.cfg, cell.train_key, eval_fps[ev.name], ctx.env)
            sc = cached_score(ctx, cell.train_key, ev, skey)
            if sc is None:
                raise DataError(f"{ctx.out}: the score of {cell.name} on {ev.name} is missing; rerun the same "
                                "command to complete it.")
            scores[ev.name] = {"mean": sc["mean"], "per_image": sc["per_image"]}
            keys[ev.name] = skey
            records.append(sc.get("record") or {})
        curve = []
        for br in rec.get("branches", []):
            means = {}
            for ev in evals:
                sc = cached_score(ctx, br["train_key"], ev, score_key(ctx.cfg, br["train_key"], eval_fps[ev.name],
                                                                       ctx.env))
                if sc is None:
                    raise DataError(f"{ctx.out}: the score of {cell.name} after {br['steps']} steps on {ev.name} is "
                                    "missing; rerun the same command to complete it.")
                means[ev.name] = sc["mean"]
            curve.append({"steps": br["steps"], "total_steps": br["total_steps"], "mean": means})
        if curve:
            curve.append({"steps": rec["train"]["steps"], "total_steps": rec["total_steps"],
                          "mean": {ev: v["mean"] for ev, v in scores.items()}})
        run = {**rec, "name": cell.name, "regime": cell.regime, "scores": scores, "score_keys": keys,
               "score_records": records, **({"curve": curve} if curve else {})}
        (plateau_runs if cell.plateau else runs).append(run)
    return runs, plateau_runs


def _check_code(out: Path, runs: list[dict], allow_mixed: bool) -> dict:
    """The code behind every assembled training and score record: one source hash, or a refusal."""
    shas, revs = set(), set()
    for r in runs:
        for rec in [r.get("record") or {}, *r.get("score_records", [])]:
            shas.add(rec.get("code_sha256"))
            revs.add(str(rec.get("git_revision")))
    mixed = len(shas) > 1
    if mixed and not allow_mixed:
        raise ConfigError(f"{out}: its runs were made by {len(shas)} different versions of the code (git revisions "
                          f"{', '.join(sorted(revs))}); rerun into a fresh --out to make them all with this code, "
                          "or pass --allow-mixed-code to assemble them anyway (recorded in results.json).")
    return {"mixed": mixed, "code_sha256": sorted(s for s in shas if s), "git_revisions": sorted(revs)}


def _labelled(cfg: BenchConfig, synth_info: dict | None) -> list[dict]:
    """Labelled images behind each arm and regime: the real subset, plus the generator's training images
    for arms that use synthetic pairs."""
    gen = None
    if synth_info:
        for c in synth_info.get("fingerprint_checks") or []:
            gen = c.get("run_images")
            break
        if synth_info.get("labelled_images") is not None:  # recorded by fit: pseudo-labels and init runs counted
            gen = synth_info["labelled_images"]
    out = []
    for arm in cfg.arms:
        spec = get_arm(arm)
        for n in cfg.regimes:
            out.append({"arm": arm, "regime": n, "real_images": n if spec.uses_real else 0,
                        "generator_images": gen if spec.uses_synth else None,
                        "total": (n if spec.uses_real else 0) + ((gen or 0) if spec.uses_synth else 0)})
    return out


def _portable_synth(info: dict | None, out: Path) -> dict | None:
    if info is None:
        return None
    info = dict(info)
    for key in ("synth_dir", "run_dir", "run_data_root"):
        if info.get(key):
            info[key] = portable_path(info[key], out)
    return info


def _results(real_data, out: Path, cfg: BenchConfig, env: Environment, dev, train, evals, held_out, real_guard,
             synth_info, runs, plateau_runs, warn, counts, revisions, t_start) -> dict:
    n_max = max(cfg.regimes)
    if "real-2x" in cfg.arms:  # the arm's cells at the largest regime are the plateau runs
        plateau_runs = [r for r in runs if r["arm"] == "real-2x" and r["regime"] == n_max]
    rows = summarize(runs, cfg.arms, cfg.regimes)
    curves = curve_summary(runs, cfg.arms, cfg.regimes)
    pairs = paired_all(runs, cfg.arms, cfg.regimes, cfg.bootstrap)
    warn = warn + learning_curve_warnings(pairs)
    slim = [{k: v for k, v in r.items() if k != "score_records"} for r in runs]
    return {
        "format_version": RUN_FORMAT,
        "config": cfg.to_dict(),
        "provenance": {**process_record(), "precision": env.precision, **describe(env.precision, dev),
                       "code": {"train": env.train_code, "score": env.score_code}, "key_versions": env.versions},
        "code_revisions": revisions,
        "device": dev.type,
        "warnings": warn,
        "data": {
            "real": {"root": portable_path(real_data, out), "layout": train.layout, "n_train": len(train),
                     "n_test": len(evals[0].work), "train_fingerprint": train.fingerprint(),
                     "train_ids": train.ids, "split_source": train.split_source, "eval_mode": cfg.eval,
                     "val_ids": held_out, "leakage_checks": real_guard},
            "eval": {ev.name: {"root": portable_path(ev.root, out), "split": ev.split, "n": len(ev.work),
                               "ids": ev.ids, "fingerprint": ev.work.fingerprint(),
                               "native_fingerprint": ev.native.fingerprint()} for ev in evals},
        },
        "synth": _portable_synth(synth_info, out),
        "metrics": [m for m in METRICS if cfg.cldice or m != "cldice"],
        "arm_steps": {arm: arm_steps(cfg, arm) for arm in cfg.arms},
        "labelled": _labelled(cfg, synth_info),
        "runs": slim,
        "summary": rows,
        "curves": curves,
        "arm_plateaus": arm_plateaus(curves),
        "cost": cost_rows(runs, cfg.arms),
        "paired": pairs,
        "n_comparisons": family_sizes(pairs),
        "plateau": plateau_summary(runs, plateau_runs, n_max, cfg.bootstrap) if plateau_runs else None,
        "plateau_runs": [{k: v for k, v in r.items() if k != "score_records"} for r in plateau_runs],
        "n_trained": counts["trained"], "n_cached": counts["cached"], "n_reused": counts["reused"],
        "n_scored": counts["scored"], "n_scores_cached": counts["scores_cached"],
        "n_read_off": counts.get("read_off", 0),
        "wall_s": time.perf_counter() - t_start,
    }
