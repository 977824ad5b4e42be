"""Two synthetic sets read against each other: the same arms of two benchmark runs that differ only in the set.

    python benchmarks/compare_sets.py runs/bench-val-none/results.json runs/bench-val-camera/results.json \
        --arms synth,pretrain --out benchmarks/results/appearance-val

A benchmark compares arms within one run; choosing a synthesis option (a new default look, a new generator) asks
how the *same* arm moves when only the set changes. This script pairs each (arm, regime, seed) cell of run B
with the cell of run A that trained on the same real images with the same seed, and reports B - A per image with
the benchmark's own crossed bootstrap 95% CI (:func:`retinasynth.bench.stats.paired`) and whether B is
**non-inferior**: the upper end of the CI is >= 0 (B not significantly lower than A).

It refuses (one line, exit 2, nothing written) runs of different protocols (the config, arms aside), different
training or scoring code, different evaluation images, or cells whose real training images differ. Writes
``comparison.json`` and ``comparison.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from combine_results import _load, check_same_protocol  # the sibling script's reader and checks

from retinasynth.bench.stats import paired
from retinasynth.provenance import write_json_atomic, write_text_atomic


def _mean_dice(runs: list[dict], ev: str) -> float:
    return sum(r["scores"][ev]["mean"]["dice"] for r in runs) / len(runs)


def compare(a: dict, b: dict, arms: list[str], n_boot: int = 10000) -> list[dict]:
    """Rows of B - A per (eval set, arm, regime). Raises ValueError with a one-line reason."""
    check_same_protocol(b, a)
    rows = []
    for arm in arms:
        cells_a = {(r["regime"], r["seed"]): r for r in a["runs"] if r["arm"] == arm}
        cells_b = {(r["regime"], r["seed"]): r for r in b["runs"] if r["arm"] == arm}
        if not cells_a or not cells_b:
            raise ValueError(f"arm {arm!r} is not in both runs (A: {sorted({r['arm'] for r in a['runs']})}, "
                             f"B: {sorted({r['arm'] for r in b['runs']})}).")
        for key in sorted(set(cells_a) & set(cells_b)):
            if cells_a[key].get("real_ids") != cells_b[key].get("real_ids"):
                raise ValueError(f"{arm} n={key[0]} seed {key[1]}: the two runs trained on different real images.")
        evs = sorted(set.intersection(*[set(r["scores"]) for r in [*cells_a.values(), *cells_b.values()]]))
        for ev in evs:
            seen = set()
            for n in sorted({k[0] for k in set(cells_a) & set(cells_b)}):
                # an arm without real images (synth) trains one model per seed, listed under every regime: once
                keys = tuple(sorted((c[k].get("train_key"), k[1]) for c in (cells_a, cells_b) for k in c if k[0] == n))
                if keys in seen:
                    continue
                seen.add(keys)
                p = paired(b["runs"], ev, arm, arm, n, "dice", n_boot, runs_base=a["runs"])
                if p is None:
                    continue
                lo, hi = p["ci95"]
                rows.append({"eval": ev, "arm": arm, "regime": n, "seeds": p["seeds"], "n_images": p["n_images"],
                             "a_dice": _mean_dice([cells_a[(n, s)] for s in p["seeds"]], ev),
                             "b_dice": _mean_dice([cells_b[(n, s)] for s in p["seeds"]], ev),
                             "b_minus_a": p["mean_diff"], "ci95": [lo, hi], "per_seed_diff": p["per_seed_diff"],
                             "wilcoxon_p": p["wilcoxon_p"], "non_inferior": hi >= 0.0})
    return rows


def markdown(rows: list[dict], name_a: str, name_b: str) -> str:
    lines = [f"# {name_b} against {name_a}: the same arms, only the synthetic set differs", "",
             "Dice, mean over seeds; B − A per image with the benchmark's crossed bootstrap 95% CI. "
             "Non-inferior: the CI's upper end >= 0.", "",
             "| eval | arm | n | seeds | images | A | B | B − A [95% CI] | non-inferior |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['eval']} | {r['arm']} | {r['regime']} | {','.join(map(str, r['seeds']))} | "
                     f"{r['n_images']} | {r['a_dice']:.4f} | {r['b_dice']:.4f} | {r['b_minus_a']:+.4f} "
                     f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] | {'yes' if r['non_inferior'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="results.json of the reference set's run (A)")
    ap.add_argument("b", type=Path, help="results.json of the candidate set's run (B)")
    ap.add_argument("--arms", default="synth,pretrain", help="comma-separated arms to compare [synth,pretrain]")
    ap.add_argument("--out", type=Path, default=None, help="folder for comparison.json and comparison.md")
    ap.add_argument("--bootstrap", type=int, default=10000)
    x = ap.parse_args(argv)
    try:
        rows = compare(_load(x.a), _load(x.b), [s for s in x.arms.split(",") if s], x.bootstrap)
    except ValueError as e:
        print(f"error: {x.a} vs {x.b}: {e}")
        return 2
    md = markdown(rows, x.a.parent.name, x.b.parent.name)
    print(md, end="")
    if x.out:
        x.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(x.out / "comparison.json", {"a": x.a.parent.name, "b": x.b.parent.name, "rows": rows})
        write_text_atomic(x.out / "comparison.md", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
