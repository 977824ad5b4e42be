"""Choose the synthetic recipe by measurement, on validation images only (issue: synthetic pairs that help).

For each lever (a name, `synthesize` settings and `bench` overrides) it renders a synthetic set from a
generator fitted WITHOUT the held-out validation images (`retinasynth fit ... -o data.exclude=<val ids>`),
then runs `benchmark-downstream` in validation mode (`eval=val`: the 5 held-out training images are
scored, the test split is never loaded) and records, per regime, each synthetic arm minus `real`
(two-level bootstrap CI) and the `synth` arm alone against `real` at the largest regime.

    .venv/bin/python benchmarks/lever_search.py --data ../shared/data/DRIVE --run runs/drive-cpu-holdval \
        --out runs/levers --lever "mix=sources=real:0.3,perturbed:0.7|stochastic=true"

A lever is NAME=SYNTH;BENCH: SYNTH is `key=value|key=value` for `SynthConfig` (sources, stochastic,
samples_per_mask, n, filter_model, filter_min_dice, ...), BENCH is `key=value|key=value` bench overrides
(e.g. synth_ratio=0.25). SYNTH may instead be `@OTHER`: reuse lever OTHER's synthetic set, its `synth`
cells and pretrained bases (for levers of how the pairs are used, e.g. `ft=@mix-stoch;finetune_lr=5e-4`).
The `real` arm's cells are the same for every
lever, so they are trained once and copied into each lever's folder (the benchmark's cache checks
their config hash). One line per lever is appended to OUT/levers.jsonl and the table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from retinasynth.bench import benchmark_downstream, build_bench_config
from retinasynth.config import parse_value
from retinasynth.synth.synthesize import SynthConfig, synthesize


def parse_lever(spec: str) -> tuple[str, dict, list[str]]:
    name, _, rest = spec.partition("=")
    synth_part, _, bench_part = rest.partition(";")
    synth: dict = {}
    for item in (p for p in synth_part.split("|") if p):
        k, _, v = item.partition("=")
        synth[k.strip()] = v.strip() if k.strip() == "sources" else parse_value(v.strip())
    bench = [b for b in bench_part.split("|") if b]
    return name, synth, bench


def _seed_real_cells(shared: Path, dest: Path, patterns=(("runs", "real_n*.json"),
                                                          ("models", "real_n*.safetensors"))) -> None:
    """Copy finished cells (records and models) into a lever's benchmark folder; the benchmark's cache
    reuses a cell only if its config hash matches, so copying too much is harmless."""
    for sub, pattern in patterns:
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for f in (shared / sub).glob(pattern):
            if not (dest / sub / f.name).exists():
                shutil.copy2(f, dest / sub / f.name)


def _keep_real_cells(src: Path, shared: Path) -> None:
    for sub, pattern in (("runs", "real_n*.json"), ("models", "real_n*.safetensors")):
        (shared / sub).mkdir(parents=True, exist_ok=True)
        for f in (src / sub).glob(pattern):
            shutil.copy2(f, shared / sub / f.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True, help="generator run fitted with -o data.exclude=<the val ids>")
    ap.add_argument("--out", required=True)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--lever", action="append", required=True,
                    metavar="NAME=k=v|k=v;k=v|k=v (synthesize settings; bench overrides)")
    ap.add_argument("--arms", default="real,synth,pretrain")
    ap.add_argument("--regimes", default="2,5,15")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shared = out / "_real"
    for spec in args.lever:
        name, synth_kw, bench_over = parse_lever(spec)
        t0 = time.perf_counter()
        base = next((k[1:] for k in synth_kw if k.startswith("@")), None)
        synth_dir = out / (base or name) / "synth"
        if base:
            prior = [json.loads(x) for x in (out / "levers.jsonl").read_text().splitlines()]
            synth_kw = next(r["synth"] for r in prior if r["name"] == base)  # recorded as the base's settings
            _seed_real_cells(out / base / "bench", out / name / "bench",
                             (("runs", "synth_n*.json"), ("models", "synth_n*.safetensors"),
                              ("models", "pretrain_base_*.safetensors")))
        elif not (synth_dir / "synth.json").is_file() or json.loads((synth_dir / "synth.json").read_text()).get(
                "status") != "complete":
            synthesize(args.run, synth_dir, SynthConfig(**synth_kw), resume=synth_dir.is_dir(), progress=True)
        synth_s = time.perf_counter() - t0
        cfg = build_bench_config(args.profile, None, [*bench_over, f"arms={args.arms}", "eval=val",
                                                      f"regimes={args.regimes}", f"seeds={args.seeds}", "plateau=0"])
        bench_dir = out / name / "bench"
        _seed_real_cells(shared, bench_dir)
        res = benchmark_downstream(args.data, synth_dir, bench_dir, cfg, progress=True)
        _keep_real_cells(bench_dir, shared)
        runs = res["runs"]

        def dice(arm: str, n: int, runs: list = runs) -> float:
            return float(np.mean([r["scores"]["val"]["mean"]["dice"] for r in runs
                                  if r["arm"] == arm and r["regime"] == n]))

        hi = max(cfg.regimes)
        deltas = {f"{p['arm']} n={p['regime']}": {"mean": p["mean_diff"], "ci95": p["ci95"],
                                                   "per_seed": p["per_seed_diff"]}
                  for p in res["paired"] if p["metric"] == "dice" and p["base"] == "real" and p["arm"] != "real"}
        meta = json.loads((synth_dir / "synth.json").read_text())
        row = {"name": name, "synth": synth_kw, "bench": bench_over, "profile": args.profile,
               "real": {str(n): dice("real", n) for n in cfg.regimes},
               "synth_alone": dice("synth", hi) if "synth" in cfg.arms else None,
               "synth_over_real_hi": (dice("synth", hi) / dice("real", hi)) if "synth" in cfg.arms else None,
               "deltas": deltas, "arm_steps": res["arm_steps"], "counts": meta.get("counts"),
               "synth_s": synth_s, "bench_wall_s": res["wall_s"], "n_trained": res["n_trained"],
               "machine": f"{platform.machine()} {os.cpu_count()} cpu", "val_ids": res["data"]["real"]["val_ids"],
               "regimes": list(cfg.regimes), "seeds": list(cfg.seeds)}
        with (out / "levers.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row))
    print_table(out / "levers.jsonl")


def print_table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    print("\n| lever | arm | " + " | ".join(f"n={n} ΔDice [95% CI]" for n in rows[0]["regimes"])
          + " | synth alone / real n=max | bench min |")
    print("|---|---|" + "---|" * len(rows[0]["regimes"]) + "---|---|")
    for r in rows:
        for arm in ("real+synth", "pretrain"):
            cells = []
            for n in r["regimes"]:
                d = r["deltas"].get(f"{arm} n={n}")
                cells.append(f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d else "-")
            if all(c == "-" for c in cells):
                continue
            ratio = f"{r['synth_over_real_hi']:.3f}" if r.get("synth_over_real_hi") else "-"
            print(f"| {r['name']} | {arm} | " + " | ".join(cells) + f" | {ratio} | {r['bench_wall_s'] / 60:.0f} |")


if __name__ == "__main__":
    main()
