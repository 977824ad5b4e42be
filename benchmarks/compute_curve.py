"""Dice against compute: benchmark runs of one protocol family at several budgets, read as a learning-against-steps
curve per evaluation set, with the gain of each doubling (the plateau test: a doubling that adds <= 0.005).

Each ``--run LABEL=DIR`` is a finished `benchmark-downstream` output; runs with the same ``--family`` key
(the label before the first '@', e.g. ``p192@800``) form one curve. Written to ``--out``: ``results.json``,
``summary.csv``, ``report.md`` and ``dice_vs_steps.png``.

    .venv/bin/python benchmarks/compute_curve.py --out benchmarks/results/converge-search \\
        --run frame@400=runs/conv/p192-s400 --run frame@800=runs/conv/p192-s800 ...
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import sys
from pathlib import Path

import numpy as np

from retinasynth.provenance import process_record, write_json_atomic, write_text_atomic

PLATEAU = 0.005


def read_run(label: str, folder: Path) -> dict:
    folder = Path(folder)
    res = json.loads((folder / "results.json").read_text())
    cfg = res["config"]
    rows = {}
    for s in res["summary"]:
        if s["arm"] != "real":
            continue
        rows.setdefault(s["eval"], {})[s["regime"]] = s["dice_mean"]
    walls = [r["train_wall_s"] for r in res["runs"] if r["arm"] == "real"]
    pixels = cfg["steps"] * cfg["batch_size"] * cfg["patch"] ** 2
    return {"label": label, "family": label.split("@")[0], "folder": folder.name, "steps": cfg["steps"],
            "patch": cfg["patch"], "batch": cfg["batch_size"], "scale": cfg.get("scale", "frame"),
            "training_pixels": pixels, "dice": rows, "train_wall_s_mean": float(np.mean(walls)),
            "precision": res.get("precision", {}).get("precision") if isinstance(res.get("precision"), dict) else None,
            "seeds": cfg["seeds"], "regimes": cfg["regimes"]}


def doublings(points: list[dict], ev: str, n: int) -> list[dict]:
    pts = sorted(points, key=lambda p: p["steps"])
    out = []
    for a, b in zip(pts, pts[1:]):
        if b["steps"] == 2 * a["steps"] and n in a["dice"].get(ev, {}) and n in b["dice"].get(ev, {}):
            d = b["dice"][ev][n] - a["dice"][ev][n]
            # a plateau: the doubling moves Dice by at most PLATEAU either way; a larger drop is past the peak
            out.append({"from": a["steps"], "to": b["steps"], "gain": d, "plateau": abs(d) <= PLATEAU,
                        "past_peak": d < -PLATEAU})
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="FAMILY@STEPS=DIR")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rec = process_record()
    points = [read_run(*spec.split("=", 1)) if "=" in spec else sys.exit(f"error: --run {spec}: use LABEL=DIR")
              for spec in args.run]
    for p in points:
        p["folder"] = Path(dict(s.split("=", 1) for s in args.run)[p["label"]]).name
    evals = sorted({ev for p in points for ev in p["dice"]}, key=lambda e: (e != "val", e))
    families = sorted({p["family"] for p in points})
    n = max(max(p["regimes"]) for p in points)
    curves = {f: {ev: doublings([p for p in points if p["family"] == f], ev, n) for ev in evals} for f in families}
    out = Path(args.out)
    result = {"command": " ".join(["python", *sys.argv]), "record": rec, "machine": platform.machine(),
              "regime": n, "plateau_threshold": PLATEAU, "points": points, "doublings": curves}
    write_json_atomic(out / "results.json", result)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["family", "steps", "patch", "batch", "scale", "training_pixels", "train_wall_s", *evals])
    for p in sorted(points, key=lambda p: (p["family"], p["steps"])):
        w.writerow([p["family"], p["steps"], p["patch"], p["batch"], p["scale"], p["training_pixels"],
                    round(p["train_wall_s_mean"], 1), *[round(p["dice"].get(ev, {}).get(n, float("nan")), 4)
                                                         for ev in evals]])
    write_text_atomic(out / "summary.csv", buf.getvalue())
    lines = [f"# Dice against compute: `real` at n={n}", "", f"Command: `{result['command']}`", "",
             "| family | steps | training pixels | s / model | " + " | ".join(f"Dice {ev}" for ev in evals) + " |",
             "|---|---|---|---|" + "---|" * len(evals)]
    for p in sorted(points, key=lambda p: (p["family"], p["steps"])):
        lines.append(f"| {p['family']} | {p['steps']} | {p['training_pixels']:.2e} | {p['train_wall_s_mean']:.0f} | "
                     + " | ".join(f"{p['dice'].get(ev, {}).get(n, float('nan')):.4f}" for ev in evals) + " |")
    lines += ["", f"Each doubling of the steps (plateau: Dice moves by <= {PLATEAU} either way):", ""]
    for f in families:
        for ev in evals:
            for d in curves[f][ev]:
                lines.append(f"- {f}, {ev}: {d['from']} -> {d['to']} steps: {d['gain']:+.4f}"
                             + (" (plateau)" if d["plateau"] else " (past the peak: more steps hurt)"
                                if d["past_peak"] else " (still rising)"))
    write_text_atomic(out / "report.md", "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(evals), figsize=(5 * len(evals), 4), squeeze=False)
    for ax, ev in zip(axes[0], evals):
        for f in families:
            pts = sorted((p for p in points if p["family"] == f and n in p["dice"].get(ev, {})),
                         key=lambda p: p["steps"])
            ax.plot([p["steps"] for p in pts], [p["dice"][ev][n] for p in pts], "o-", label=f)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("optimiser steps")
        ax.set_ylabel(f"Dice on {ev} (real, n={n})")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    from retinasynth.provenance import write_bytes_atomic

    write_bytes_atomic(out / "dice_vs_steps.png", buf.getvalue())
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
