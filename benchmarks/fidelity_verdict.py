"""Issue 20's render bars, read from one or more `retinasynth evaluate` outputs (metrics.json). Runs no model.

    python benchmarks/fidelity_verdict.py runs/fidelity/holdval-c3-val/metrics.json [more.json ...] [--md OUT.md]

Bars, fixed in issue 20 before any run: stripe index <= 1.2x real, thin (1-2 px) vessel contrast >= 0.8x
real, disc offset <= 1.5x real, consistency proxy within +-0.05 of real. Exit status 0 when every file passes
all four, 1 otherwise, so a chained script can branch on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BARS = (
    ("stripe index", lambda f, v: f["stripe_index"]["ratio"], lambda x: x <= 1.2, "<= 1.2x real"),
    ("thin (1-2 px) contrast", lambda f, v: f["vessel_contrast"]["thin_1_2_px_ratio"], lambda x: x >= 0.8,
     ">= 0.8x real"),
    ("disc offset", lambda f, v: f["disc_offset"]["ratio"], lambda x: x <= 1.5, "<= 1.5x real"),
    ("consistency proxy, rendered - real", lambda f, v: v["rendered"]["mean"] - v["real"]["mean"],
     lambda x: abs(x) <= 0.05, "within +-0.05"),
)


def verdict(metrics: dict) -> list[tuple[str, float, bool, str]]:
    f, v = metrics["fidelity"], metrics.get("vessel_consistency")
    if v is None:
        raise SystemExit("error: metrics.json has no vessel_consistency block; run evaluate with --reader-steps > 0.")
    return [(name, get(f, v), ok(get(f, v)), mark) for name, get, ok, mark in BARS]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", nargs="+", type=Path)
    ap.add_argument("--md", type=Path, default=None, help="also write the table as Markdown here")
    a = ap.parse_args(argv)
    runs = []
    for p in a.metrics:
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            print(f"error: {p}: cannot read an evaluate metrics.json ({e}); give the file evaluate wrote.")
            return 2
        runs.append((p, m, verdict(m)))
    head = "| measure | pass mark | " + " | ".join(
        f"`{p.parent.name}` ({m['split']}, n={m['n_images']}, look {m.get('appearance', {}).get('name', 'none')})"
        for p, m, _ in runs) + " |"
    lines = [head, "|" + "---|" * (2 + len(runs))]
    for i, (name, _, _, mark) in enumerate(BARS):
        cells = [f"{r[i][1]:+.3f} {'yes' if r[i][2] else '**no**'}" if name.startswith("consistency")
                 else f"{r[i][1]:.2f}x {'yes' if r[i][2] else '**no**'}" for _, _, r in runs]
        lines.append(f"| {name} | {mark} | " + " | ".join(cells) + " |")
    lines.append("| proxy: rendered / real Dice | | " + " | ".join(
        f"{m['vessel_consistency']['rendered']['mean']:.4f} / {m['vessel_consistency']['real']['mean']:.4f}"
        for _, m, _ in runs) + " |")
    lines.append("| KID rendered vs real [95% CI] | | " + " | ".join(
        "{:.1f} [{:.1f}, {:.1f}]".format(m["fidelity"]["kid"]["rendered_vs_real"]["kid"],
                                         *m["fidelity"]["kid"]["rendered_vs_real"]["ci95"])
        for _, m, _ in runs) + " |")
    text = "\n".join(lines)
    print(text)
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(text + "\n")
    return 0 if all(ok for _, _, r in runs for _, _, ok, _ in r) else 1


if __name__ == "__main__":
    sys.exit(main())
