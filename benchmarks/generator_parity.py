"""The generator's bf16-vs-fp32 parity (issue 18): fits that differ only in training precision, over seeds.

Each RUN is a `retinasynth fit` directory with `evaluate --split val` output in RUN/metrics-val/ (every run
scored at one precision, so only the training precision differs). Per run it reads the EMA validation L1
that `fit` logged last (its own validation images) and, from `evaluate`, the vessel-consistency proxy
(rendered − real Dice of the reader, 0 is the target), SSIM and MSE on the held-out images, and thin-vessel
contrast. Parity holds for a metric when |mean(bf16) − mean(fp32)| is no larger than the larger of the two
precisions' seed standard deviations (the rule written into runs/chain5.sh before the runs).

    python benchmarks/generator_parity.py runs/gparity/bf16-s0 runs/gparity/fp32-s0 ... --out DIR

Writes DIR/parity.json and DIR/parity.md; exits 1 when parity fails for the L1 or the proxy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from retinasynth.provenance import write_text_atomic

METRICS = {  # name -> label; the first two are issue 18's
    "val_l1_ema": "EMA validation L1 (fit's own 2 val images)",
    "proxy": "consistency proxy, rendered − real Dice",
    "ssim": "SSIM, held-out images",
    "mse": "MSE, held-out images",
    "thin": "thin (1-2 px) contrast, rendered / real",
}
GATED = ("val_l1_ema", "proxy")


def read_run(run: Path) -> dict:
    cfg = json.loads((run / "config.json").read_text())
    last = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if "val_l1_ema" in line][-1]
    m = json.loads((run / "metrics-val" / "metrics.json").read_text())
    vc = m["vessel_consistency"]
    sc = m["sound_protocol"]["scores"]
    return {"run": run.name, "precision": cfg["precision"]["precision"], "seed": cfg["config"]["train"]["seed"], "steps": last["step"], "val_l1_ema": last["val_l1_ema"],
            "proxy": vc["rendered"]["mean"] - vc["real"]["mean"], "ssim": sc["ssim"]["mean"], "mse": sc["mse"]["mean"],
            "thin": m["fidelity"]["vessel_contrast"]["thin_1_2_px_ratio"], "eval_precision": m["precision"],
            "held_out": m["image_ids"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = [read_run(r) for r in args.runs]
    by = {p: [r for r in rows if r["precision"] == p] for p in ("fp32", "bf16")}
    if not all(len(v) >= 2 for v in by.values()):
        print(f"error: need at least 2 runs at each of fp32 and bf16, got "
              f"{ {p: len(v) for p, v in by.items()} }", file=sys.stderr)
        return 2
    table, ok = {}, True
    for k in METRICS:
        f, b = (np.array([r[k] for r in by[p]]) for p in ("fp32", "bf16"))
        spread = max(f.std(ddof=1), b.std(ddof=1))
        d = b.mean() - f.mean()
        table[k] = {"fp32_mean": f.mean(), "fp32_sd": f.std(ddof=1), "bf16_mean": b.mean(), "bf16_sd": b.std(ddof=1),
                    "diff": d, "spread": spread, "parity": bool(abs(d) <= spread)}
        ok &= table[k]["parity"] or k not in GATED
    lines = ["| run | precision | seed | steps | " + " | ".join(METRICS) + " |", "|---" * (4 + len(METRICS)) + "|"]
    for r in sorted(rows, key=lambda r: (r["seed"], r["precision"])):
        lines.append(f"| {r['run']} | {r['precision']} | {r['seed']} | {r['steps']} | "
                     + " | ".join(f"{r[k]:.4f}" for k in METRICS) + " |")
    lines += ["", "| metric | fp32 mean ± sd | bf16 mean ± sd | bf16 − fp32 | larger seed sd | parity |",
              "|---|---|---|---|---|---|"]
    for k, label in METRICS.items():
        t = table[k]
        lines.append(f"| {label} | {t['fp32_mean']:.4f} ± {t['fp32_sd']:.4f} | {t['bf16_mean']:.4f} ± "
                     f"{t['bf16_sd']:.4f} | {t['diff']:+.4f} | {t['spread']:.4f} | "
                     f"{'yes' if t['parity'] else 'no'}{'' if k in GATED else ' (not gated)'} |")
    md = "\n".join(lines) + "\n"
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "parity.json", json.dumps({"runs": rows, "table": table, "parity": ok,
                                                            "gated": list(GATED)}, indent=2, default=float))
    write_text_atomic(args.out / "parity.md", md)
    print(f"parity {'holds' if ok else 'FAILS'} for {', '.join(GATED)}; written to {args.out}/")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
