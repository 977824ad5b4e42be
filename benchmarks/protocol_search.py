"""Choose the downstream protocol by measurement, on validation images only (how the `cpu` profile was chosen).

For each candidate (a name and `bench` overrides on top of a profile) it runs the `real` arm of
`benchmark-downstream` in validation mode (`eval=val`: 5 training images held out, the test split never
loaded) at the smallest and largest regime, and records the frontier the protocol issue asks for:
Dice at the largest regime, the learning-curve gap (largest - smallest regime, two-level bootstrap CI),
and the minutes one training and one evaluation take, projected to the whole protocol
(4 arms x 3 regimes x 3 seeds: 9 real + 9 real+synth + 3 synth + 9 pretrain fine-tunes + the plateau run).

    .venv/bin/python benchmarks/protocol_search.py --data ../shared/data/DRIVE --out runs/protocol-search \
        --candidate "c2=preprocess=green_clahe,size=576,infer_tile=192,steps=800"

Each candidate's runs are cached in OUT/<name>/runs (rerun to resume); one line per candidate is appended
to OUT/frontier.jsonl and the table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from retinasynth.bench import benchmark_downstream, build_bench_config

# Training-equivalents of the whole protocol besides the `real` arm's 9: 9 real+synth, 3 synth,
# 9 pretrain fine-tunes, 2 for the plateau run (twice the steps), i.e. 32 trainings and 31 evaluations.
PROTOCOL_TRAININGS = 32
PROTOCOL_EVALS = 31


def _split(spec: str) -> tuple[str, list[str]]:
    name, _, rest = spec.partition("=")
    over, cur = [], ""
    for part in rest.split(","):  # keep list values such as decoder_channels=[64,32,16] together
        cur = f"{cur},{part}" if cur else part
        if cur.count("[") == cur.count("]"):
            over.append(cur)
            cur = ""
    return name, [o for o in over if o]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--candidate", action="append", required=True, metavar="NAME=KEY=V,KEY=V")
    ap.add_argument("--regimes", default="2,15")
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for spec in args.candidate:
        name, over = _split(spec)
        cfg = build_bench_config(args.profile, None, [*over, "arms=real", "eval=val", f"regimes={args.regimes}",
                                                      f"seeds={args.seeds}", "plateau=0"])
        t0 = time.perf_counter()
        res = benchmark_downstream(args.data, None, out / name, cfg, progress=True)
        lc = next(p for p in res["paired"] if p["arm"] == p["base"] == "real" and p["metric"] == "dice")
        runs = res["runs"]
        train_s = float(np.mean([r["train_wall_s"] for r in runs]))
        eval_s = float(np.mean([r["eval_wall_s"] for r in runs]))
        hi = max(cfg.regimes)
        row = {"name": name, "overrides": over, "profile": args.profile,
               "dice_hi": float(np.mean([r["scores"]["val"]["mean"]["dice"] for r in runs if r["regime"] == hi])),
               "dice_lo": float(np.mean([r["scores"]["val"]["mean"]["dice"] for r in runs
                                         if r["regime"] == min(cfg.regimes)])),
               "gap": lc["mean_diff"], "gap_ci95": lc["ci95"], "per_seed_gap": lc["per_seed_diff"],
               "regimes": list(cfg.regimes), "seeds": list(cfg.seeds), "train_s": train_s, "eval_s": eval_s,
               "protocol_min_projected": (PROTOCOL_TRAININGS * train_s + PROTOCOL_EVALS * eval_s) / 60,
               "wall_s": time.perf_counter() - t0, "n_trained": res["n_trained"],
               "machine": f"{platform.machine()} {os.cpu_count()} cpu", "val_ids": res["data"]["real"]["val_ids"]}
        with (out / "frontier.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row))
    print("\n| candidate | Dice n=hi | Dice n=lo | gap [95% CI] | train s | eval s | protocol min (proj.) |")
    print("|---|---|---|---|---|---|---|")
    for line in (out / "frontier.jsonl").read_text().splitlines():
        r = json.loads(line)
        lo, hi = r["gap_ci95"]
        print(f"| {r['name']} | {r['dice_hi']:.4f} | {r['dice_lo']:.4f} | {r['gap']:+.4f} [{lo:+.4f}, {hi:+.4f}] | "
              f"{r['train_s']:.0f} | {r['eval_s']:.1f} | {r['protocol_min_projected']:.0f} |")


if __name__ == "__main__":
    main()
