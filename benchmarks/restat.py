"""Re-compute a committed benchmark's paired statistics with the crossed bootstrap and the primary family.

    python benchmarks/restat.py benchmarks/results/<name>/results.json --out benchmarks/results/<name>/restat.md

Reads the per-image scores stored in a results.json (``runs``; ``paired`` and ``plateau`` as the benchmark
wrote them), re-runs :func:`retinasynth.bench.stats.paired_all` and :func:`plateau_summary` on them (no model
is retrained) and writes a markdown table, per Dice comparison, of the old interval (two-level nested
bootstrap, verdict from the unadjusted 95% CI) against the new one (crossed bootstrap; the primary family's
Bonferroni-adjusted CI and verdict), with every verdict that changed, plus the plateau check.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from retinasynth.bench.arms import ARMS
from retinasynth.bench.stats import (
    PRIMARY,
    family_sizes,
    is_learning_curve,
    paired,
    paired_all,
    plateau_summary,
)

ROOT = Path(__file__).resolve().parents[1]


def _key(p: dict) -> tuple:
    return (p["eval"], p.get("arm"), p.get("base"), p["regime"], p.get("base_regime", p["regime"]), p["metric"])


def _ci(ci) -> str:
    return "—" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def _width(ci) -> float:
    return float(ci[1] - ci[0]) if ci is not None else float("nan")


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def restat(results: dict, n_boot: int | None = None) -> dict:
    """The old and the new paired statistics of ``results``: {"rows": [...], "plateau": [...], "k": {...}}.

    Each row: eval, comparison, n, family, note, old (the old entry or None), new (the new entry or None),
    width_ratio (new 95% CI width / old), changed (old verdict != new verdict)."""
    cfg = results.get("config") or {}
    runs = results["runs"]
    n_boot = int(n_boot or cfg.get("bootstrap") or 2000)
    arms = cfg.get("arms") or list(dict.fromkeys(r["arm"] for r in runs))
    regimes = cfg.get("regimes") or sorted({r["regime"] for r in runs})
    new = [p for p in paired_all(runs, arms, regimes, n_boot) if p["metric"] == "dice"]
    old = {_key(p): p for p in results.get("paired") or [] if p["metric"] == "dice"}
    rows, seen = [], set()
    for p in new:
        o = old.get(_key(p))
        seen.add(_key(p))
        rows.append({"eval": p["eval"], "comparison": p["comparison"], "n": _n(p), "family": p["family"],
                     "note": p.get("note"), "old": o, "new": p,
                     "width_ratio": _width(p["ci95"]) / _width(o["ci95"]) if o else float("nan"),
                     "changed": bool(o) and o["verdict"] != p["verdict"]})
    for k, o in old.items():
        if k not in seen:
            rows.append({"eval": o["eval"], "comparison": o["comparison"], "n": _n(o), "family": "not compared now",
                         "note": None, "old": o, "new": None, "width_ratio": float("nan"), "changed": False})
    plateau = []
    pl = results.get("plateau")
    if pl and results.get("plateau_runs"):
        new_pl = plateau_summary(runs, results["plateau_runs"], pl["regime"], n_boot)
        old_pl = {(p["eval"], p["metric"]): p for p in pl.get("paired", [])}
        for p in new_pl["paired"]:
            if p["metric"] == "dice":
                plateau.append({"new": p, "old": old_pl.get((p["eval"], p["metric"])), "one_seed": new_pl["one_seed"],
                                "regime": pl["regime"]})
    if "real-2x" in arms and runs:  # the real-2x arm at the largest regime, every seed: the plateau check
        n_max = max(regimes)
        for ev in dict.fromkeys(e for r in runs for e in r["scores"]):
            p = paired(runs, ev, "real-2x", "real", n_max, "dice", n_boot, family="protocol check")
            if p is not None:
                p["comparison"] = f"real 2x steps - real (n={n_max})"
                plateau.append({"new": p, "old": None, "one_seed": len(p["seeds"]) == 1, "regime": n_max,
                                "all_seeds": True})
    return {"rows": rows, "plateau": plateau, "k": family_sizes(new), "n_boot": n_boot}


def _n(p: dict) -> str:
    br = p.get("base_regime", p["regime"])
    return f"{p['regime']} vs {br}" if br != p["regime"] else str(p["regime"])


def render(path: Path, out: dict) -> str:
    rows = out["rows"]
    ratios = [r["width_ratio"] for r in rows if math.isfinite(r["width_ratio"])]
    flips = [r for r in rows if r["changed"]]
    lines = [f"# Re-statistics of `{_shown(path)}`", "",
             "Recomputed from the per-image scores stored in the file; no model was retrained. **Old**: two-level "
             "nested bootstrap (seeds, then images drawn anew within each seed), verdict from the unadjusted 95% "
             "CI, Holm over every Dice comparison. **New**: crossed bootstrap (seeds with replacement and one image "
             "draw shared by the drawn seeds, as every seed is scored on the same images); the primary family (each "
             "arm against its compute-matched control, Dice, every regime) gets Bonferroni-adjusted CIs at "
             "1 − 0.05/k and its verdict from them; everything else is exploratory (unadjusted 95% CI). "
             f"{out['n_boot']} resamples, seed 0.", ""]
    lines.append("- Primary family size per eval set: "
                 + (", ".join(f"{ev}: k={k}" for ev, k in out["k"].items()) or "none") + ".")
    if ratios:
        lines.append(f"- New / old 95% CI width over {len(ratios)} Dice comparisons: median "
                     f"{float(np.median(ratios)):.2f}, range {min(ratios):.2f}–{max(ratios):.2f}.")
    demoted = {}
    for r in rows:
        p = r["new"]
        if r["old"] and p and r["family"] != PRIMARY and not is_learning_curve(p) \
                and getattr(ARMS.get(p["arm"]), "same_model_as", None) != p["base"]:
            demoted.setdefault((r["eval"], r["comparison"], r["note"]), []).append(r["n"])
    if demoted:
        lines.append("- Read as an arm's verdict in the old report, exploratory now (not the arm's compute-matched "
                     "comparison): " + "; ".join(f"{ev} {c} (n={', '.join(ns)})" + (f": {note}" if note else "")
                                                 for (ev, c, note), ns in demoted.items()) + ".")
    if flips:
        lines.append(f"- Verdicts that changed: {len(flips)}: "
                     + "; ".join(f"{r['eval']} {r['comparison']} n={r['n']}: {r['old']['verdict']} → "
                                 f"{r['new']['verdict']} ({r['family']})" for r in flips) + ".")
    else:
        lines.append("- No verdict changed.")
    lines += ["", "| eval | comparison | n real | family | mean Δ | old 95% CI | old verdict | new 95% CI | "
              "new/old width | adjusted CI (level) | new verdict | changed |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, p = r["old"], r["new"]
        fam = r["family"] + (f" ({r['note']})" if r["note"] else "")
        adj = f"{_ci(p['ci_adj'])} ({100 * p['ci_adj_level']:.4g}%)" if p and p.get("ci_adj") else ""
        mean = (p or o)["mean_diff"]
        ratio = f"{r['width_ratio']:.2f}" if math.isfinite(r["width_ratio"]) else ""
        lines.append(f"| {r['eval']} | {r['comparison']} | {r['n']} | {fam} | {mean:+.4f} | "
                     f"{_ci(o['ci95']) if o else '—'} | {o['verdict'] if o else '—'} | "
                     f"{_ci(p['ci95']) if p else '—'} | {ratio} | {adj} | {p['verdict'] if p else '—'} | "
                     f"{'**yes**' if r['changed'] else ''} |")
    lines.append("")
    if out["plateau"]:
        lines += ["## Plateau check (protocol check)", ""]
        for q in out["plateau"]:
            p, o = q["new"], q["old"]
            one = " — **one seed**: an image bootstrap, no seed variance" if q["one_seed"] else ""
            src = ("every seed of the real-2x arm (not in the old plateau check)" if q.get("all_seeds")
                   else "the plateau runs")
            lines.append(f"- {p['eval']}, real 2x steps − real at n={q['regime']}, {src}, seeds {p['seeds']}: ΔDice "
                         f"{p['mean_diff']:+.4f}; " + (f"old 95% CI {_ci(o['ci95'])} ({o['verdict']}); " if o else "")
                         + f"new 95% CI {_ci(p['ci95'])} ({p['verdict']}){one}.")
        lines.append("")
    else:
        lines += ["No plateau check in this file.", ""]
    primary = [r for r in rows if r["family"] == PRIMARY]
    if not primary:
        lines += ["No primary comparison: no arm's compute-matched control was run, so nothing here is a verdict.",
                  ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a benchmark's results.json")
    ap.add_argument("--out", type=Path, default=None, help="markdown to write (default: print)")
    ap.add_argument("--bootstrap", type=int, default=None, help="resamples (default: the file's bench.bootstrap)")
    a = ap.parse_args(argv)
    results = json.loads(a.results.read_text())
    md = render(a.results, restat(results, a.bootstrap))
    if a.out is None:
        sys.stdout.write(md)
    else:
        a.out.write_text(md)
        print(f"written: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
