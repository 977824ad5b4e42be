"""Aggregation, paired statistics and the benchmark's summary.csv, report.md and dice_vs_n.png."""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from retinasynth.metrics.seg import METRICS
from retinasynth.provenance import write_bytes_atomic, write_text_atomic

LABELS = {"dice": "Dice", "iou": "IoU", "sensitivity": "Sens", "specificity": "Spec", "accuracy": "Acc",
          "auc": "AUC", "cldice": "clDice"}
COMPARISONS = (("real+synth", "real"), ("pretrain", "real"), ("synth", "real"), ("real-2x", "real"),
               ("pretrain", "real-2x"))  # the last: pretrain against the real arm with the same steps


def metrics_of(runs: list[dict]) -> list[str]:
    have = set()
    for r in runs:
        for ev in r["scores"].values():
            have |= set(ev["mean"])
    return [m for m in METRICS if m in have]


def eval_names(runs: list[dict]) -> list[str]:
    names: list[str] = []
    for r in runs:
        names += [n for n in r["scores"] if n not in names]
    return names


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def summarize(runs: list[dict], arms, regimes) -> list[dict]:
    """One row per (eval set, arm, regime): mean and std over seeds of the per-run mean scores."""
    rows = []
    metrics = metrics_of(runs)
    for ev in eval_names(runs):
        for arm in arms:
            for n in regimes:
                sel = [r for r in runs if r["arm"] == arm and r["regime"] == n and ev in r["scores"]]
                if not sel:
                    continue
                row = {"eval": ev, "arm": arm, "regime": n, "n_seeds": len(sel)}
                for m in metrics:
                    row[f"{m}_mean"], row[f"{m}_std"] = _mean_std([r["scores"][ev]["mean"][m] for r in sel])
                rows.append(row)
    return rows


def _by_seed(runs: list[dict], ev: str, arm: str, n: int) -> dict[int, dict]:
    return {r["seed"]: r for r in runs if r["arm"] == arm and r["regime"] == n and ev in r["scores"]}


def two_level_bootstrap(d: np.ndarray, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% CI of the mean of ``d`` (seeds x images) from a two-level bootstrap.

    Each resample draws the seeds with replacement, then, within each drawn seed, the images with
    replacement; so the CI counts both the seed-to-seed variance of training and the variance over test
    images (resampling images alone would ignore the first).
    """
    d = np.asarray(d, dtype=np.float64)
    s, n = d.shape
    rng = np.random.default_rng(seed)
    si = rng.integers(0, s, size=(n_boot, s))
    ii = rng.integers(0, n, size=(n_boot, s, n))
    boot = d[si[:, :, None], ii].mean(axis=(1, 2))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def paired(runs: list[dict], ev: str, arm: str, base: str, n: int, metric: str, n_boot: int,
           seed: int = 0, base_regime: int | None = None, runs_base: list[dict] | None = None) -> dict | None:
    """Paired difference ``arm (n) - base (base_regime, default n)`` on the images of one eval set.

    Pairs are the seeds both sides completed and the images both scored. The mean difference gets a
    two-level bootstrap 95% CI (seeds, then images within seeds; ``n_boot`` seeded resamples), the
    per-seed mean differences are listed, and a Wilcoxon signed-rank test (scipy, two-sided) is run on
    the per-image differences averaged over seeds. Images whose score is not finite in any pair
    (e.g. AUC of an image without vessels) are left out.
    """
    base_regime = n if base_regime is None else base_regime
    a = _by_seed(runs, ev, arm, n)
    b = _by_seed(runs if runs_base is None else runs_base, ev, base, base_regime)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    ids = sorted(set.intersection(*[set(a[s]["scores"][ev]["per_image"]) & set(b[s]["scores"][ev]["per_image"])
                                    for s in seeds]))

    def table(by_seed):
        return np.array([[by_seed[s]["scores"][ev]["per_image"][i].get(metric, np.nan) for i in ids]
                         for s in seeds], dtype=np.float64)

    d = table(a) - table(b)
    d = d[:, np.all(np.isfinite(d), axis=0)]
    if d.size == 0:
        return None
    lo, hi = two_level_bootstrap(d, n_boot, seed)
    out = {"eval": ev, "comparison": f"{arm} - {base}" if base_regime == n else
           f"{base} n={n} - {base} n={base_regime}" if arm == base else f"{arm} n={n} - {base} n={base_regime}",
           "arm": arm, "base": base, "regime": n, "base_regime": base_regime, "metric": metric,
           "seeds": seeds, "n_images": int(d.shape[1]), "mean_diff": float(d.mean()), "ci95": [lo, hi],
           "ci_method": "two-level bootstrap (seeds, then images within seeds)",
           "per_seed_diff": [float(v) for v in d.mean(axis=1)],
           "n_bootstrap": n_boot, "verdict": verdict(lo, hi)}
    out["wilcoxon_p"], out["wilcoxon_note"] = _wilcoxon(d.mean(axis=0))
    return out


def _wilcoxon(d: np.ndarray) -> tuple[float | None, str]:
    from scipy.stats import wilcoxon

    if not np.any(d != 0):
        return None, "all differences are zero"
    try:
        return float(wilcoxon(d).pvalue), f"two-sided, n={d.size}"
    except ValueError as e:
        return None, str(e)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None and does not count)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(idx, key=lambda i: pvalues[i])
    m, out, running = len(idx), list(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "CI above zero"
    if hi < 0:
        return "below zero"
    return "includes zero"


def is_learning_curve(p: dict) -> bool:
    return p["arm"] == "real" and p["base"] == "real" and p["regime"] != p["base_regime"]


def paired_all(runs: list[dict], arms, regimes, n_boot: int) -> list[dict]:
    """Every arm against 'real' in every regime, plus the learning curve 'real n=max - real n=min', for
    Dice, AUC and clDice; Wilcoxon p-values get a Holm adjustment over the Dice comparisons of an eval set
    (``wilcoxon_p_holm``), the family whose size the report states."""
    out = []
    metrics = [m for m in ("dice", "auc", "cldice") if m in metrics_of(runs)]
    lo_n, hi_n = min(regimes), max(regimes)
    for ev in eval_names(runs):
        these = []
        for arm, base in COMPARISONS:
            if arm not in arms or base not in arms:
                continue
            for n in regimes:
                for m in metrics:
                    p = paired(runs, ev, arm, base, n, m, n_boot)
                    if p is not None:
                        these.append(p)
        if "real" in arms and lo_n != hi_n:
            for m in metrics:
                p = paired(runs, ev, "real", "real", hi_n, m, n_boot, base_regime=lo_n)
                if p is not None:
                    these.append(p)
        dice = [p for p in these if p["metric"] == "dice"]
        for p, adj in zip(dice, holm([p.get("wilcoxon_p") for p in dice])):
            p["wilcoxon_p_holm"] = adj
        out += these
    return out


def learning_curve_warnings(pairs: list[dict]) -> list[str]:
    """A plain warning for each eval set whose learning curve (real n=max - real n=min Dice) is not
    clearly above zero: such a protocol is compute-bound and cannot show a benefit from more data."""
    out = []
    for p in pairs:
        if is_learning_curve(p) and p["metric"] == "dice" and p["ci95"][0] <= 0:
            lo, hi = p["ci95"]
            out.append(f"{p['eval']}: real n={p['regime']} - real n={p['base_regime']} ΔDice {p['mean_diff']:+.4f}, "
                       f"95% CI [{lo:+.4f}, {hi:+.4f}] includes zero or lies below it: the protocol is "
                       "compute-bound and cannot show a benefit from extra data of any kind (more real images "
                       "do not help it either).")
    return out


def plateau_summary(runs: list[dict], plateau_runs: list[dict], n: int, n_boot: int) -> dict:
    """The plateau check: 'real' at the largest regime trained with twice the steps, minus the same
    runs at the protocol's steps (same seeds and subsets). A small difference means the 'real' arm is
    trained to convergence, so arms with more steps (pretrain) are not ahead by compute alone."""
    out: dict = {"regime": n, "seeds": sorted(r["seed"] for r in plateau_runs),
                 "steps": plateau_runs[0]["train"]["steps"] if plateau_runs else None, "paired": []}
    twice = [{**r, "arm": "real-2x"} for r in plateau_runs]
    for ev in eval_names(plateau_runs):
        for m in [m for m in ("dice", "auc", "cldice") if m in metrics_of(plateau_runs)]:
            p = paired(twice, ev, "real-2x", "real", n, m, n_boot, runs_base=runs)
            if p is not None:
                p["comparison"] = f"real 2x steps - real (n={n})"
                out["paired"].append(p)
    return out


def write_summary_csv(path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text_atomic(path, buf.getvalue())


def _fmt(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.4f} ± {std:.4f}"


def scores_table(rows: list[dict], ev: str) -> str:
    sel = [r for r in rows if r["eval"] == ev]
    if not sel:
        return ""
    metrics = [m for m in METRICS if f"{m}_mean" in sel[0]]
    head = ["arm", "n real", "seeds"] + [LABELS[m] for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    synth_rows = {tuple(v for k, v in r.items() if k != "regime") for r in sel if r["arm"] == "synth"}
    shown_synth = False
    for r in sel:
        regime = str(r["regime"])
        if r["arm"] == "synth" and len(synth_rows) == 1:  # no real image in this arm: one row for every n
            if shown_synth:
                continue
            regime, shown_synth = "any", True
        cells = [r["arm"], regime, str(r["n_seeds"])] + [_fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pfmt(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")


def paired_table(pairs: list[dict], ev: str) -> str:
    sel = [p for p in pairs if p["eval"] == ev]
    if not sel:
        return ""
    lines = ["| comparison | n real | metric | mean Δ | 95% CI | per-seed Δ | Wilcoxon p (Holm) | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for p in sel:
        lo, hi = p["ci95"]
        wp = ""
        if p["metric"] == "dice":
            wp = f"{_pfmt(p.get('wilcoxon_p'))} ({_pfmt(p.get('wilcoxon_p_holm'))})"
        per_seed = " ".join(f"{v:+.4f}" for v in p.get("per_seed_diff", []))
        n = f"{p['regime']} vs {p['base_regime']}" if p.get("base_regime", p["regime"]) != p["regime"] else p["regime"]
        lines.append(f"| {p['comparison']} | {n} | {LABELS[p['metric']]} | {p['mean_diff']:+.4f} | "
                     f"[{lo:+.4f}, {hi:+.4f}] | {per_seed} | {wp} | {p['verdict']} |")
    return "\n".join(lines)


_MEANING = {
    "real+synth": {"CI above zero": "adding the synthetic pairs helped",
                   "below zero": "adding the synthetic pairs hurt",
                   "includes zero": "no difference detectable with these test images and seeds"},
    "pretrain": {"CI above zero": "pretraining on the synthetic pairs, then fine-tuning on the real images, helped",
                 "below zero": "pretraining on the synthetic pairs, then fine-tuning on the real images, hurt",
                 "includes zero": "no difference detectable with these test images and seeds"},
    "synth": {"CI above zero": "synthetic pairs alone beat the real images",
              "below zero": "synthetic pairs alone are worse than the real images",
              "includes zero": "synthetic pairs alone are indistinguishable from the real images"},
    "real-2x": {"CI above zero": "twice the steps alone help the real arm: the protocol is not at a plateau",
                "below zero": "twice the steps hurt the real arm (overfitting)",
                "includes zero": "twice the steps do not measurably help the real arm"},
    "pretrain|real-2x": {"CI above zero": "pretraining on the synthetic pairs beat spending the same steps on the "
                                          "real images: a data effect, not compute",
                         "below zero": "the same steps spent on the real images alone did better than synthetic "
                                       "pretraining",
                         "includes zero": "synthetic pretraining did no better than the same steps on the real "
                                          "images"},
    "real": {"CI above zero": "more real images help: the protocol is data-bound and can show a data effect",
             "below zero": "more real images hurt: the protocol cannot show a data effect",
             "includes zero": "more real images do not measurably help: the protocol is compute-bound"},
}


def verdict_lines(pairs: list[dict], ev: str) -> list[str]:
    out = []
    for p in pairs:
        if p["eval"] != ev or p["metric"] != "dice":
            continue
        lo, hi = p["ci95"]
        what = _MEANING.get(f"{p['arm']}|{p['base']}", _MEANING[p["arm"]])[p["verdict"]]
        n = (f"n={p['regime']} vs n={p['base_regime']}" if p.get("base_regime", p["regime"]) != p["regime"]
             else f"n={p['regime']} real images")
        out.append(f"- {n}, {p['comparison']}: ΔDice {p['mean_diff']:+.4f}, 95% CI "
                   f"[{lo:+.4f}, {hi:+.4f}] — {p['verdict']}: {what} (Wilcoxon p = {_pfmt(p.get('wilcoxon_p'))}, "
                   f"Holm-adjusted {_pfmt(p.get('wilcoxon_p_holm'))}; {p['n_images']} images, seeds {p['seeds']}).")
    return out


def steps_line(results: dict) -> str:
    steps = results.get("arm_steps") or {}
    if not steps:
        return ""
    parts = [f"{arm}: {n}" + (" (synthetic pretraining + real fine-tune)" if arm == "pretrain" else
                              " (real only: the compute-matched control of pretrain)" if arm == "real-2x" else "")
             for arm, n in steps.items()]
    return ("- Optimiser steps behind each model: " + "; ".join(parts) + ". Compare arms with more steps against "
            "the plateau check below, not as a data effect.")


def plateau_lines(results: dict) -> list[str]:
    pl = results.get("plateau")
    if not pl or not pl.get("paired"):
        return []
    lines = ["## Plateau check", "",
             f"`real` at n={pl['regime']} retrained with {pl['steps']} steps (twice the protocol's) for seeds "
             f"{pl['seeds']}; Δ = 2x steps − protocol steps, on the same subsets. A small |Δ| means the real "
             "baseline is trained to convergence, so extra steps alone do not explain an arm's gain.", ""]
    for p in pl["paired"]:
        lo, hi = p["ci95"]
        lines.append(f"- {p['eval']}, {LABELS[p['metric']]}: Δ {p['mean_diff']:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}]"
                     f", per seed {' '.join(f'{v:+.4f}' for v in p['per_seed_diff'])}.")
    return lines + [""]


def _inference(cfg: dict) -> str:
    if not cfg.get("infer_tile"):
        return "whole image"
    return f"sliding window {cfg['infer_tile']} px, overlap {cfg['infer_overlap']}"


def report_markdown(results: dict) -> str:
    cfg, rows, pairs = results["config"], results["summary"], results["paired"]
    synth = results.get("synth") or {}
    lines = ["# Downstream segmentation benchmark", ""]
    lines.append(f"Does adding synthetic image/mask pairs improve a {cfg['arch']}/{cfg['encoder']} segmenter on "
                 "**real** images? Scores are computed at the images' native resolution, inside the FOV.")
    lines.append("")
    real = results["data"]["real"]
    if real.get("eval_mode") == "val":
        lines.append(f"- **Validation mode**: {len(real.get('val_ids', []))} training images held out as the "
                     f"evaluation set ({', '.join(real.get('val_ids', []))}); the test split was not loaded.")
    lines.append(f"- Real data: `{real['root']}` ({real['layout']}), {real['n_train']} training images for the "
                 f"regimes, {real['n_test']} evaluated images.")
    if synth:
        state = "verified against the evaluated images" if synth.get("verified") else "**UNVERIFIED**"
        lines.append(f"- Synthetic data: `{synth.get('synth_dir')}`, {synth.get('n', '?')} pairs ({state}).")
    for w in results.get("warnings", []):
        lines.append(f"- **WARNING: {w}**")
    lines.append(f"- Protocol: profile `{cfg['profile']}`, {cfg['arch']}/{cfg['encoder']} depth "
                 f"{cfg['encoder_depth']}, {cfg['steps']} AdamW steps of {cfg['batch_size']} patches of "
                 f"{cfg['patch']} px at working resolution {cfg['size']}, input `{cfg.get('preprocess', 'rgb')}`, "
                 f"lr {cfg['lr']} ({cfg['lr_schedule']}), synth_ratio {cfg['synth_ratio']}, seeds {cfg['seeds']}, "
                 f"inference {_inference(cfg)}, "
                 f"threshold {cfg['threshold']}; same batches and augmentation in every arm. Device: "
                 + results.get("device", "?") + ".")
    sl = steps_line(results)
    if sl:
        lines.append(sl)
    lines.append(f"- Wall time: {results['wall_s'] / 60:.1f} min ({results['n_trained']} runs trained now, "
                 f"{results['n_cached']} from cache, {results['n_reused']} reused).")
    lines.append("")
    for ev in eval_names(results["runs"]):
        info = results["data"]["eval"].get(ev, {})
        lines += [f"## {ev}: `{info.get('root', '?')}` split `{info.get('split', '?')}` "
                  f"({info.get('n', '?')} images)", "", "Mean ± std over seeds of the per-run mean scores "
                  "(the synth arm uses no real image: it is trained once per seed and holds for every n).", "",
                  scores_table(rows, ev), ""]
        pt = paired_table(pairs, ev)
        if pt:
            k = (results.get("n_comparisons") or {}).get(ev, "?")
            lines += ["### Paired differences", "",
                      f"Δ = arm − real in the same regime, on the same images and seeds (and the learning curve, "
                      f"real at the largest minus the smallest regime). 95% CI from a two-level bootstrap "
                      f"({cfg['bootstrap']} resamples: seeds, then images within seeds), so seed-to-seed variance "
                      f"counts; per-seed Δ beside it; Wilcoxon signed-rank test on the per-image differences "
                      f"averaged over seeds, Holm-adjusted over the {k} Dice comparisons this report makes.", "",
                      pt, "", "### Verdict", ""]
            lines += verdict_lines(pairs, ev) + [""]
    lines += plateau_lines(results)
    lines += ["![Dice vs number of real images](dice_vs_n.png)", ""]
    return "\n".join(lines)


def plot_dice_vs_n(path, rows: list[dict], arms, regimes) -> None:
    """Dice against the number of real training images, one line per arm, error bars = std over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    evs = list(dict.fromkeys(r["eval"] for r in rows)) or ["test"]
    fig = Figure(figsize=(5.5 * len(evs), 4.2))
    FigureCanvasAgg(fig)
    for k, ev in enumerate(evs):
        ax = fig.add_subplot(1, len(evs), k + 1)
        for j, arm in enumerate(arms):
            sel = sorted((r for r in rows if r["eval"] == ev and r["arm"] == arm), key=lambda r: r["regime"])
            if not sel:
                continue
            x = [r["regime"] * 1.04 ** (j - 1) for r in sel]  # small offsets keep error bars apart
            ax.errorbar(x, [r["dice_mean"] for r in sel], yerr=[r["dice_std"] for r in sel], marker="o",
                        capsize=4, label=arm, linestyle="--" if arm == "synth" else "-")
        ax.set_xscale("log")
        ax.set_xticks(list(regimes))
        ax.set_xticklabels([str(n) for n in regimes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("real training images")
        ax.set_ylabel("Dice (native resolution, FOV)")
        ax.set_title(f"{ev}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_bytes_atomic(path, buf.getvalue())
