"""Aggregation and rendering: the benchmark's summary.csv, report.md and dice_vs_n.png.

The statistics (crossed bootstrap, primary family, multiplicity) live in :mod:`retinasynth.bench.stats`; the
names below are re-exported from there for callers that import them from here. How each comparison is read
(its words, whether it is compute-matched) comes from the arm registry, :mod:`retinasynth.bench.arms`.
"""

from __future__ import annotations

import io
import math

import numpy as np

from retinasynth.bench.arms import ABOVE, ARMS, BELOW, INCLUDES
from retinasynth.bench.stats import (  # noqa: F401  (re-exported)
    EXPLORATORY,
    PRIMARY,
    PROTOCOL,
    ci_method,
    crossed_bootstrap,
    eval_names,
    family_sizes,
    holm,
    is_learning_curve,
    learning_curve_warnings,
    metrics_of,
    paired,
    paired_all,
    plateau_summary,
    verdict,
)
from retinasynth.metrics.seg import METRICS
from retinasynth.provenance import write_bytes_atomic, write_csv_atomic

LABELS = {"dice": "Dice", "iou": "IoU", "sensitivity": "Sens", "specificity": "Spec", "accuracy": "Acc",
          "auc": "AUC", "cldice": "clDice"}
# The learning curve (real at the largest minus the smallest regime) is a protocol check, not an arm.
LEARNING_CURVE_MEANING = {
    ABOVE: "more real images help: the protocol is data-bound and can show a data effect",
    BELOW: "more real images hurt: the protocol cannot show a data effect",
    INCLUDES: "more real images do not measurably help: the protocol is compute-bound"}


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


def write_summary_csv(path, rows: list[dict]) -> None:
    write_csv_atomic(path, rows, ".6f")


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
    no_real = {r["arm"] for r in sel if r["arm"] in ARMS and not ARMS[r["arm"]].uses_real}
    distinct = {a: {tuple(v for k, v in r.items() if k != "regime") for r in sel if r["arm"] == a} for a in no_real}
    shown: set[str] = set()
    for r in sel:
        regime = str(r["regime"])
        if r["arm"] in no_real and len(distinct[r["arm"]]) == 1:  # no real image in this arm: one row for every n
            if r["arm"] in shown:
                continue
            regime = "any"
            shown.add(r["arm"])
        cells = [r["arm"], regime, str(r["n_seeds"])] + [_fmt(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pfmt(p: float | None) -> str:
    return "n/a" if p is None else (f"{p:.2g}" if p < 0.001 else f"{p:.3f}")


def _ci(ci) -> str:
    lo, hi = ci
    return f"[{lo:+.4f}, {hi:+.4f}]"


def _level(level: float) -> str:
    return f"{100 * level:.4g}%"


def _n(p: dict) -> str:
    return f"{p['regime']} vs {p['base_regime']}" if p.get("base_regime", p["regime"]) != p["regime"] else str(p["regime"])


def _family(p: dict) -> str:
    fam = p.get("family") or "n/a"
    return f"{fam} ({p['note']})" if p.get("note") else fam


def paired_table(pairs: list[dict], ev: str) -> str:
    """The paired differences of one eval set: family, unadjusted 95% CI, the Bonferroni-adjusted CI of the
    primary family, per-seed differences, Wilcoxon p (Holm-adjusted over the primary family) and verdict."""
    sel = [p for p in pairs if p["eval"] == ev]
    if not sel:
        return ""
    lines = ["| comparison | n real | metric | family | mean Δ | 95% CI | adjusted CI | per-seed Δ | "
             "Wilcoxon p (Holm) | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in sel:
        adj = f"{_ci(p['ci_adj'])} ({_level(p['ci_adj_level'])})" if p.get("ci_adj") else ""
        wp = ""
        if p["metric"] == "dice":
            wp = _pfmt(p.get("wilcoxon_p"))
            if p.get("family") == PRIMARY:
                wp += f" ({_pfmt(p.get('wilcoxon_p_holm'))})"
        per_seed = " ".join(f"{v:+.4f}" for v in p.get("per_seed_diff", []))
        lines.append(f"| {p['comparison']} | {_n(p)} | {LABELS[p['metric']]} | {_family(p)} | {p['mean_diff']:+.4f} | "
                     f"{_ci(p['ci95'])} | {adj} | {per_seed} | {wp} | {p['verdict']} |")
    return "\n".join(lines)


def _times(ratio: float) -> str:
    return {2.0: "twice", 0.5: "half", 3.0: "three times"}.get(ratio, f"{ratio:g} times")


def compute_note(p: dict, present=None) -> str | None:
    """Why a comparison gives no verdict on the arm, in words, when the arm trains a different number of
    steps than the base (and is not the base's own model trained longer): its verdict is read against its
    compute-matched control. None for compute-matched comparisons."""
    arm, base = ARMS.get(p["arm"]), ARMS.get(p["base"])
    if arm is None or base is None or arm.name == base.name or arm.steps == base.steps \
            or arm.same_model_as == base.name:
        return None
    s = f"{arm.name} trains {_times(arm.steps / base.steps)} the steps of {base.name}"
    if arm.control and arm.control != base.name:
        s += f"; its verdict is read against {arm.control}"
        if present is not None and arm.control not in present:
            s += (", which was not run here, so this difference mixes data and compute and is no evidence of a "
                  "benefit")
    else:
        s += ": this difference mixes data and compute and is no evidence of a benefit"
    return s


def reading(p: dict, present=None) -> str:
    """The words for a Dice comparison's verdict. An arm's ``meaning`` is used only against its compute-matched
    control (a primary comparison, whose verdict comes from the adjusted CI) or, for an arm without a control
    that is another arm's model trained longer (real-2x), against that arm; the learning curve has its own
    words; anything else gets no benefit sentence."""
    if is_learning_curve(p):
        return LEARNING_CURVE_MEANING.get(p["verdict"], "")
    note = compute_note(p, present)
    if note:
        return note
    arm = ARMS.get(p["arm"])
    if arm is None:
        return ""
    if p["base"] == arm.control and p.get("family") == PRIMARY:
        return arm.meaning.get(p["verdict"], "")
    if arm.control is None and arm.same_model_as == p["base"]:
        return arm.meaning.get(p["verdict"], "")
    if p.get("note"):
        return f"{p['note']}; no verdict on {arm.name}"
    return f"not {arm.name}'s compute-matched comparison; descriptive only"


def verdict_lines(pairs: list[dict], ev: str, present=None) -> list[str]:
    """One line per Dice comparison of an eval set: primary (adjusted CI, the verdict) first, then exploratory."""
    sel = [p for p in pairs if p["eval"] == ev and p["metric"] == "dice"]
    if present is None:
        present = {a for p in pairs for a in (p["arm"], p["base"])}
    out = []
    for p in sel:
        n = (f"n={p['regime']} vs n={p['base_regime']}" if p.get("base_regime", p["regime"]) != p["regime"]
             else f"n={p['regime']} real images")
        seeds = p["seeds"]
        tail = (f"{p['n_images']} images, seeds {seeds}" + (" — one seed: images only" if len(seeds) == 1 else ""))
        if p.get("family") == PRIMARY and p.get("ci_adj"):
            k = p.get("family_size")
            out.append(f"- **primary** {n}, {p['comparison']}: ΔDice {p['mean_diff']:+.4f}, 95% CI {_ci(p['ci95'])}; "
                       f"Bonferroni {_level(p['ci_adj_level'])} CI (k={k}) {_ci(p['ci_adj'])} — {p['verdict']}: "
                       f"{reading(p, present)} (Wilcoxon p = {_pfmt(p.get('wilcoxon_p'))}, Holm-adjusted "
                       f"{_pfmt(p.get('wilcoxon_p_holm'))}; {tail}).")
        else:
            out.append(f"- exploratory {n}, {p['comparison']}: ΔDice {p['mean_diff']:+.4f}, 95% CI "
                       f"{_ci(p['ci95'])} — {p['verdict']}: {reading(p, present)} (unadjusted; Wilcoxon p = "
                       f"{_pfmt(p.get('wilcoxon_p'))}; {tail}).")
    return out


def steps_line(results: dict) -> str:
    steps = results.get("arm_steps") or {}
    if not steps:
        return ""
    controls_of: dict[str, list[str]] = {}
    for a in steps:
        arm = ARMS.get(a)
        if arm is not None and arm.control in steps:
            controls_of.setdefault(arm.control, []).append(a)
    parts = []
    for a, n in steps.items():
        arm, extra = ARMS.get(a), []
        if arm is not None and arm.pretrain:
            extra.append("synthetic pretraining + real fine-tune")
        if arm is not None and a in controls_of:
            extra.append(f"{arm.sampling} only: the compute-matched control of {', '.join(controls_of[a])}")
        parts.append(f"{a}: {n}" + (f" ({'; '.join(extra)})" if extra else ""))
    return ("- Optimiser steps behind each model: " + "; ".join(parts) + ". Each arm's verdict is read against its "
            "compute-matched control (the same steps); a difference across step counts mixes data and compute.")


def plateau_lines(results: dict) -> list[str]:
    pl = results.get("plateau")
    if not pl or not pl.get("paired"):
        return []
    one = pl.get("one_seed", len(pl.get("seeds") or []) == 1)
    lines = ["## Plateau check (protocol check" + (", one seed)" if one else ")"), "",
             f"`real` at n={pl['regime']} retrained with {pl['steps']} steps (twice the protocol's) for seeds "
             f"{pl['seeds']}; Δ = 2x steps − protocol steps, on the same subsets. A small |Δ| means the real "
             "baseline is trained to convergence, so extra steps alone do not explain an arm's gain. A protocol "
             "check, not a comparison of arms: unadjusted 95% CI."]
    if one:
        lines += ["", "**One seed**: its interval is an image bootstrap and leaves out seed-to-seed variance."]
    lines.append("")
    words = ARMS["real-2x"].meaning if "real-2x" in ARMS else {}
    for p in pl["paired"]:
        what = f" — {p['verdict']}: {words[p['verdict']]}" if p["metric"] == "dice" and words.get(p["verdict"]) else ""
        lines.append(f"- {p['eval']}, {LABELS[p['metric']]}: Δ {p['mean_diff']:+.4f}, 95% CI {_ci(p['ci95'])}"
                     f", per seed {' '.join(f'{v:+.4f}' for v in p['per_seed_diff'])}"
                     + (" (one seed)" if len(p["seeds"]) == 1 else "") + what + ".")
    return lines + [""]


def how_to_read(results: dict) -> list[str]:
    """The report's "How to read" paragraph: the arms (from the registry), regimes, families, the bootstrap."""
    runs = results.get("runs") or []
    cfg = results.get("config") or {}
    present = [a for a in (cfg.get("arms") or list(dict.fromkeys(r["arm"] for r in runs)))
               if any(r["arm"] == a for r in runs)]
    lines = ["## How to read", ""]
    for a in present:
        arm = ARMS.get(a)
        if arm is None:
            continue
        ctl = (f" Compute-matched control: `{arm.control}`" + ("." if arm.control in present else
                                                              " (not run here: no verdict on this arm).")
               if arm.control else "")
        lines.append(f"- `{a}` ({arm.steps}x steps): {arm.label}.{ctl}")
    ks = family_sizes(results.get("paired") or [])
    kt = ", ".join(f"{ev}: k={k}" for ev, k in ks.items()) or "none"
    lines += ["", "*n real* is the regime: the number of real labelled training images an arm may use. Δ = arm − "
              "base on the same test images and the same seeds (a paired difference). Every interval is a "
              f"percentile interval from a crossed bootstrap ({cfg.get('bootstrap', '?')} resamples): seeds and "
              "test images are crossed (every seed is scored on the same images), so a resample draws the seeds "
              "with replacement and one set of images with replacement shared by all drawn seeds; it counts the "
              "seed-to-seed and the image-to-image variance once each. With one seed it is an image bootstrap and "
              "says nothing about seed variance; with a few seeds its seed part is coarse, so read intervals as "
              "approximate.",
              "",
              "**Primary** comparisons are each arm against its compute-matched control (the same optimiser "
              "steps), on Dice, in every regime; on each evaluation set the k of them form one family "
              f"({kt}). Their intervals are Bonferroni-adjusted to level 1 − 0.05/k, so all k hold together at "
              "95%, and their verdict comes from the adjusted interval; their Wilcoxon p-values are Holm-adjusted "
              "over the same k. The Wilcoxon test runs on the per-image differences averaged over seeds: it treats "
              "the trained models as fixed and leaves seed variance out, so it can be far more confident than the "
              "interval; the interval gives the verdict. **Exploratory** comparisons are everything else (AUC and clDice, an arm against a "
              "base that is not its control, the learning curve): unadjusted 95% intervals that describe, not "
              "conclude. A verdict only says where the interval lies: `CI above zero`, `below zero` or `includes "
              "zero`.", ""]
    return lines


def labelled_table(results: dict) -> list[str]:
    rows = results.get("labelled") or []
    if not rows:
        return []
    lines = ["## Labelled images behind each arm", "",
             "Real labelled images the arm trains on, and the labelled images behind the generator of its "
             "synthetic pairs (— where it uses none).", "",
             "| arm | n real | real images | generator images | total |", "|---|---|---|---|---|"]
    for r in rows:
        g = r.get("generator_images")
        total = r.get("total", (r.get("real_images") or 0) + (g or 0))
        lines.append(f"| {r.get('arm', '?')} | {r.get('regime', '?')} | {r.get('real_images', '?')} | "
                     f"{'—' if g is None else g} | {total} |")
    return lines + [""]


def provenance_lines(results: dict) -> list[str]:
    pv = results.get("provenance")
    if not pv:
        return []
    lines = ["## Provenance", ""]
    if pv.get("command"):
        lines.append(f"- Command: `{pv['command']}`")
    if pv.get("git_revision"):
        lines.append(f"- Git revision: `{pv['git_revision']}`")
    if pv.get("code_sha256"):
        lines.append(f"- Source hash: `{pv['code_sha256']}`")
    for key, name in (("precision", "Precision"), ("device_type", "Device type"), ("cuda_device", "GPU"),
                      ("cpu_capability", "CPU capability")):
        if pv.get(key):
            lines.append(f"- {name}: {pv[key]}")
    if pv.get("versions"):
        lines.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in pv["versions"].items()))
    if pv.get("code"):
        lines.append("- Code:")
        lines += [f"  - `{k}`: `{v}`" for k, v in pv["code"].items()]
    return lines + [""]


def _inference(cfg: dict) -> str:
    if not cfg.get("infer_tile"):
        return "whole image"
    return f"sliding window {cfg['infer_tile']} px, overlap {cfg.get('infer_overlap', '?')}"


def _protocol(cfg: dict, device: str) -> str:
    return (f"- Protocol: profile `{cfg.get('profile', '?')}`, {cfg.get('arch', '?')}/{cfg.get('encoder', '?')} depth "
            f"{cfg.get('encoder_depth', '?')}, {cfg.get('steps', '?')} AdamW steps of {cfg.get('batch_size', '?')} "
            f"patches of {cfg.get('patch', '?')} px at working resolution {cfg.get('size', '?')}, input "
            f"`{cfg.get('preprocess', 'rgb')}`, lr {cfg.get('lr', '?')} ({cfg.get('lr_schedule', '?')}), "
            f"synth_ratio {cfg.get('synth_ratio', '?')}, seeds {cfg.get('seeds', '?')}, inference "
            f"{_inference(cfg)}, threshold {cfg.get('threshold', '?')}; same batches and augmentation in every "
            f"arm. Device: {device}.")


def report_markdown(results: dict) -> str:
    cfg, rows, pairs = results.get("config") or {}, results.get("summary") or [], results.get("paired") or []
    runs = results.get("runs") or []
    present = {r["arm"] for r in runs}
    synth = results.get("synth") or {}
    data = results.get("data") or {}
    lines = ["# Downstream segmentation benchmark", ""]
    lines.append(f"Does adding synthetic image/mask pairs improve a {cfg.get('arch', '?')}/{cfg.get('encoder', '?')} "
                 "segmenter on **real** images? Scores are computed at the images' native resolution, inside the "
                 "FOV.")
    lines.append("")
    real = data.get("real") or {}
    if real.get("eval_mode") == "val":
        lines.append(f"- **Validation mode**: {len(real.get('val_ids', []))} training images held out as the "
                     f"evaluation set ({', '.join(real.get('val_ids', []))}); the test split was not loaded.")
    if real:
        lines.append(f"- Real data: `{real.get('root', '?')}` ({real.get('layout', '?')}), {real.get('n_train', '?')} "
                     f"training images for the regimes, {real.get('n_test', '?')} evaluated images.")
    if synth:
        state = "verified against the evaluated images" if synth.get("verified") else "**UNVERIFIED**"
        fp = f", fingerprint `{synth['fingerprint']}`" if synth.get("fingerprint") else ""
        lines.append(f"- Synthetic data: `{synth.get('synth_dir')}`, {synth.get('n', '?')} pairs ({state}){fp}.")
    for w in results.get("warnings", []):
        lines.append(f"- **WARNING: {w}**")
    lines.append(_protocol(cfg, results.get("device", "?")))
    sl = steps_line(results)
    if sl:
        lines.append(sl)
    if "wall_s" in results:
        lines.append(f"- Wall time: {results['wall_s'] / 60:.1f} min ({results.get('n_trained', '?')} runs trained "
                     f"now, {results.get('n_cached', '?')} from cache, {results.get('n_reused', '?')} reused"
                     + (f", {results['n_read_off']} read off a longer run's branch at their steps (bitwise the "
                        "model a run of their own ends with)" if results.get("n_read_off") else "") + ").")
    lines.append("")
    lines += how_to_read(results)
    lines += labelled_table(results)
    ks = family_sizes(pairs)
    for ev in eval_names(runs):
        info = (data.get("eval") or {}).get(ev, {})
        lines += [f"## {ev}: `{info.get('root', '?')}` split `{info.get('split', '?')}` "
                  f"({info.get('n', '?')} images)", "", "Mean ± std over seeds of the per-run mean scores "
                  "(an arm without real images is trained once per seed and holds for every n).", "",
                  scores_table(rows, ev), ""]
        pt = paired_table(pairs, ev)
        if pt:
            k = ks.get(ev, 0)
            fam = (f"The primary family on this set is the k = {k} Dice comparisons of an arm with its "
                   f"compute-matched control; their adjusted CIs are Bonferroni at "
                   f"{_level(1 - 0.05 / k)} and give their verdicts, and their Wilcoxon p-values are "
                   "Holm-adjusted over the same k." if k else
                   "No arm's compute-matched control was run here: every comparison is exploratory.")
            lines += ["### Paired differences", "",
                      "Δ = arm − base (named in each row) in the same regime, on the same images and seeds, and the "
                      "learning curve (real at the largest minus the smallest regime). 95% CIs from a crossed "
                      f"bootstrap ({cfg.get('bootstrap', '?')} resamples of seeds and of images, the image draw "
                      "shared by the drawn seeds); per-seed Δ beside them; Wilcoxon signed-rank test on the "
                      f"per-image differences averaged over seeds. {fam} Exploratory rows are unadjusted.", "",
                      pt, "", "### Verdict", ""]
            lines += verdict_lines(pairs, ev, present) + [""]
    lines += plateau_lines(results)
    lines += curve_lines(results)
    lines += ["![Dice vs number of real images](dice_vs_n.png)", ""]
    lines += provenance_lines(results)
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


PLATEAU_TOL = 0.005  # a doubling of the steps that moves Dice by at most this leaves the arm at its plateau


def curve_summary(runs: list[dict], arms, regimes) -> list[dict]:
    """Dice against optimiser steps (``bench.curve``): one row per (eval set, arm, regime, budget), mean and std
    over seeds; ``steps`` counts every optimiser step behind the model (pretraining included), ``run_steps``
    those of the run the budgets were read off (a 'pretrain' arm's fine-tune)."""
    rows = []
    for ev in eval_names(runs):
        for arm in arms:
            for n in regimes:
                sel = [r for r in runs if r["arm"] == arm and r["regime"] == n and r.get("curve")]
                by_steps: dict[tuple[int, int], list[float]] = {}
                for r in sel:
                    for point in r["curve"]:
                        if ev in point["mean"]:
                            key = (point["total_steps"], point["steps"])
                            by_steps.setdefault(key, []).append(point["mean"][ev]["dice"])
                for (steps, run_steps) in sorted(by_steps):
                    m, s = _mean_std(by_steps[(steps, run_steps)])
                    rows.append({"eval": ev, "arm": arm, "regime": n, "steps": steps, "run_steps": run_steps,
                                 "n_seeds": len(by_steps[(steps, run_steps)]), "dice_mean": m, "dice_std": s})
    return rows


def arm_plateaus(rows: list[dict]) -> list[dict]:
    """Per (eval set, arm, regime): the last doubling of its curve (Dice after all of its run's steps minus Dice
    after half of them, when both were scored) and whether it gained at most ``PLATEAU_TOL``."""
    out = []
    for ev, arm, n in dict.fromkeys((r["eval"], r["arm"], r["regime"]) for r in rows):
        pts = {r["run_steps"]: r for r in rows if (r["eval"], r["arm"], r["regime"]) == (ev, arm, n)}
        top = max(pts)
        if top % 2 or top // 2 not in pts:
            continue
        full, half = pts[top], pts[top // 2]
        gain = full["dice_mean"] - half["dice_mean"]
        out.append({"eval": ev, "arm": arm, "regime": n, "steps": full["steps"], "half_steps": half["steps"],
                    "dice": full["dice_mean"], "dice_half": half["dice_mean"], "last_doubling": gain,
                    "at_plateau": bool(gain <= PLATEAU_TOL)})
    return out


def cost_rows(runs: list[dict], arms) -> list[dict]:
    """Per arm: optimiser steps and minutes behind one model (mean over its trained cells), and the one-off
    synthetic pretraining a 'pretrain' arm starts from (shared by every regime, the way ImageNet weights are)."""
    out = []
    for arm in arms:
        sel = [r for r in runs if r["arm"] == arm and not r.get("reused_from")]
        if not sel:
            continue
        spec = ARMS.get(arm)
        row = {"arm": arm, "steps": sel[0].get("total_steps"), "models": len(sel),
               "minutes_per_model": float(np.mean([r.get("train_wall_s", np.nan) for r in sel])) / 60.0}
        if spec is not None and spec.pretrain:
            row["pretrain_steps"] = sel[0].get("pretrain_steps")
            row["finetune_steps"] = (sel[0].get("train") or {}).get("steps")
        out.append(row)
    return out


def curve_lines(results: dict) -> list[str]:
    rows, plats = results.get("curves") or [], results.get("arm_plateaus") or []
    if not rows:
        return []
    lines = ["## Dice against compute", "",
             "Each model's run also gave its shorter budgets (`bench.curve`, warm-up-stable-decay schedule: a shorter "
             "run is the same run up to its own decay). Steps count every optimiser step behind a model, its "
             "synthetic pretraining included. Mean Dice over seeds.", ""]
    evs = list(dict.fromkeys(r["eval"] for r in rows))
    for ev in evs:
        sel = [r for r in rows if r["eval"] == ev]
        budgets = sorted({r["steps"] for r in sel})
        head = ["arm", "n real", *[str(b) for b in budgets]]
        lines += [f"**{ev}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for arm, n in dict.fromkeys((r["arm"], r["regime"]) for r in sel):
            pts = {r["steps"]: r["dice_mean"] for r in sel if (r["arm"], r["regime"]) == (arm, n)}
            lines.append(f"| {arm} | {n} | " + " | ".join(f"{pts[b]:.4f}" if b in pts else "" for b in budgets) + " |")
        lines.append("")
    if plats:
        lines += ["Last doubling of each arm (Dice at its steps − at half of them; at its plateau when ≤ "
                  f"{PLATEAU_TOL}):", ""]
        for p in plats:
            state = "at its plateau" if p["at_plateau"] else "**still rising: not at its plateau**"
            lines.append(f"- {p['eval']}, {p['arm']} n={p['regime']}: {p['half_steps']} → {p['steps']} steps "
                         f"{p['last_doubling']:+.4f} ({state}).")
        lines.append("")
    cost = results.get("cost") or []
    if cost:
        lines += ["| arm | steps per model | min per model | one-off synthetic pretraining |", "|---|---|---|---|"]
        for c in cost:
            pre = f"{c['pretrain_steps']} steps (shared)" if c.get("pretrain_steps") else ""
            lines.append(f"| {c['arm']} | {c['steps']} | {c['minutes_per_model']:.1f} | {pre} |")
        lines.append("")
    return lines + ["![Dice vs steps](dice_vs_steps.png)", ""]


def plot_dice_vs_steps(path, rows: list[dict], arms, regimes) -> None:
    """Dice against optimiser steps per arm (log2 axis): solid at the largest regime, dashed at the others."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    evs = list(dict.fromkeys(r["eval"] for r in rows)) or ["test"]
    fig = Figure(figsize=(5.5 * len(evs), 4.2))
    FigureCanvasAgg(fig)
    colours = {arm: f"C{j}" for j, arm in enumerate(arms)}
    for k, ev in enumerate(evs):
        ax = fig.add_subplot(1, len(evs), k + 1)
        for arm in arms:
            for n in regimes:
                sel = sorted((r for r in rows if r["eval"] == ev and r["arm"] == arm and r["regime"] == n),
                             key=lambda r: r["steps"])
                if not sel:
                    continue
                ax.errorbar([r["steps"] for r in sel], [r["dice_mean"] for r in sel],
                            yerr=[r["dice_std"] for r in sel], marker="o", capsize=3, color=colours[arm],
                            linestyle="-" if n == max(regimes) else "--", label=f"{arm} n={n}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("optimiser steps behind the model")
        ax.set_ylabel("Dice (native resolution, FOV)")
        ax.set_title(ev)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_bytes_atomic(path, buf.getvalue())
