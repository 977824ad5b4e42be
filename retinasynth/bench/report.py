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
COMPARISONS = (("real+synth", "real"), ("synth", "real"))


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


def paired(runs: list[dict], ev: str, arm: str, base: str, n: int, metric: str, n_boot: int,
           seed: int = 0) -> dict | None:
    """Paired difference ``arm - base`` on the real test images of one eval set and regime.

    Per image, the scores are averaged over the seeds both arms completed; the mean difference gets a
    percentile bootstrap 95% CI (test images resampled ``n_boot`` times with a seeded generator) and,
    for Dice, a Wilcoxon signed-rank test on the per-image differences.
    """
    a = {r["seed"]: r for r in runs if r["arm"] == arm and r["regime"] == n and ev in r["scores"]}
    b = {r["seed"]: r for r in runs if r["arm"] == base and r["regime"] == n and ev in r["scores"]}
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    ids = sorted(a[seeds[0]]["scores"][ev]["per_image"])

    def per_image(runs_by_seed):
        return np.array([[runs_by_seed[s]["scores"][ev]["per_image"][i][metric] for i in ids] for s in seeds],
                        dtype=np.float64).mean(axis=0)

    d = per_image(a) - per_image(b)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
    out = {"eval": ev, "comparison": f"{arm} - {base}", "arm": arm, "base": base, "regime": n, "metric": metric,
           "seeds": seeds, "n_images": int(d.size), "mean_diff": float(d.mean()), "ci95": [lo, hi],
           "n_bootstrap": n_boot, "verdict": verdict(lo, hi)}
    if metric == "dice":
        out["wilcoxon_p"], out["wilcoxon_note"] = _wilcoxon(d)
    return out


def _wilcoxon(d: np.ndarray) -> tuple[float | None, str]:
    from scipy.stats import wilcoxon

    if not np.any(d != 0):
        return None, "all differences are zero"
    try:
        return float(wilcoxon(d).pvalue), f"two-sided, n={d.size}"
    except ValueError as e:
        return None, str(e)


def verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "CI above zero"
    if hi < 0:
        return "below zero"
    return "includes zero"


def paired_all(runs: list[dict], arms, regimes, n_boot: int) -> list[dict]:
    out = []
    metrics = [m for m in ("dice", "auc", "cldice") if m in metrics_of(runs)]
    for ev in eval_names(runs):
        for arm, base in COMPARISONS:
            if arm not in arms or base not in arms:
                continue
            for n in regimes:
                for m in metrics:
                    p = paired(runs, ev, arm, base, n, m, n_boot)
                    if p is not None:
                        out.append(p)
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
    lines = ["| comparison | n real | metric | mean Δ | 95% CI | Wilcoxon p | verdict |", "|---|---|---|---|---|---|---|"]
    for p in sel:
        lo, hi = p["ci95"]
        wp = _pfmt(p.get("wilcoxon_p")) if p["metric"] == "dice" else ""
        lines.append(f"| {p['comparison']} | {p['regime']} | {LABELS[p['metric']]} | {p['mean_diff']:+.4f} | "
                     f"[{lo:+.4f}, {hi:+.4f}] | {wp} | {p['verdict']} |")
    return "\n".join(lines)


def verdict_lines(pairs: list[dict], ev: str) -> list[str]:
    out = []
    meaning = {"CI above zero": "adding the synthetic pairs helped",
               "below zero": "adding the synthetic pairs hurt",
               "includes zero": "no difference detectable with these test images and seeds"}
    for p in pairs:
        if p["eval"] != ev or p["metric"] != "dice":
            continue
        lo, hi = p["ci95"]
        what = meaning[p["verdict"]] if p["arm"] == "real+synth" else {
            "CI above zero": "synthetic pairs alone beat the real images",
            "below zero": "synthetic pairs alone are worse than the real images",
            "includes zero": "synthetic pairs alone are indistinguishable from the real images"}[p["verdict"]]
        out.append(f"- n={p['regime']} real images, {p['comparison']}: ΔDice {p['mean_diff']:+.4f}, 95% CI "
                   f"[{lo:+.4f}, {hi:+.4f}] — {p['verdict']}: {what} (Wilcoxon p = {_pfmt(p.get('wilcoxon_p'))}, "
                   f"{p['n_images']} test images, seeds {p['seeds']}).")
    return out


def report_markdown(results: dict) -> str:
    cfg, rows, pairs = results["config"], results["summary"], results["paired"]
    synth = results.get("synth") or {}
    lines = ["# Downstream segmentation benchmark", ""]
    lines.append(f"Does adding synthetic image/mask pairs improve a {cfg['arch']}/{cfg['encoder']} segmenter on "
                 "**real** test images? Scores are computed at the images' native resolution, inside the FOV.")
    lines.append("")
    real = results["data"]["real"]
    lines.append(f"- Real data: `{real['root']}` ({real['layout']}), {real['n_train']} training images, "
                 f"{real['n_test']} test images.")
    if synth:
        state = "verified against the test split" if synth.get("verified") else "**UNVERIFIED**"
        lines.append(f"- Synthetic data: `{synth.get('synth_dir')}`, {synth.get('n', '?')} pairs ({state}).")
    for w in results.get("warnings", []):
        lines.append(f"- **WARNING: {w}**")
    lines.append(f"- Protocol: profile `{cfg['profile']}`, {cfg['steps']} AdamW steps of {cfg['batch_size']} "
                 f"patches of {cfg['patch']} px at working resolution {cfg['size']}, lr {cfg['lr']} "
                 f"({cfg['lr_schedule']}), synth_ratio {cfg['synth_ratio']}, seeds {cfg['seeds']}; same steps, "
                 "batches and augmentation in every arm. Device: " + results.get("device", "?") + ".")
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
            lines += ["### Paired differences", "",
                      f"Per test image, scores averaged over seeds; Δ = arm − real; 95% CI from "
                      f"{cfg['bootstrap']} bootstrap resamples of the test images; Wilcoxon signed-rank test on "
                      "the per-image Dice differences.", "", pt, "", "### Verdict", ""]
            lines += verdict_lines(pairs, ev) + [""]
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
