"""How realistic are perturbed and procedural vessel masks? `mask_stats` of three groups, side by side.

Groups, all at SIZE x SIZE and inside their FOV:
  real        the DRIVE training masks, `load_dataset(DRIVE, "train", DataConfig(size=SIZE))`;
  perturbed   N masks, `default_perturbation(SIZE)` applied to real training mask i % n_real with
              `np.random.default_rng([seed, i])`;
  procedural  N trees, `grow_vessel_tree(SIZE, np.random.default_rng([seed, i]))`.

Prints a markdown table: one row per statistic, for each group mean ± std (sample std) and
[min, max], and whether the procedural mean lies inside the real [min, max].

Usage:  python benchmarks/mask_realism.py [--drive PATH] [--size 512] [--n 20] [--seed 0] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
STATS = ("vessel_fraction", "branch_points", "end_points", "width_mean", "width_p50", "width_p90",
         "fractal_dimension", "components")
GROUPS = ("real", "perturbed", "procedural")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--drive", type=Path, default=REPO.parent / "shared" / "data" / "DRIVE",
                   help="DRIVE root folder (default: ../shared/data/DRIVE relative to the repository root).")
    p.add_argument("--size", type=int, default=512, help="Working resolution in pixels (default 512).")
    p.add_argument("--n", type=int, default=20, help="Perturbed masks and procedural trees, each (default 20).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="Also write the report to this markdown file.")
    a = p.parse_args(argv)
    if a.n < 1:
        p.error(f"--n must be >= 1, got {a.n}")
    if a.size < 32:
        p.error(f"--size must be >= 32, got {a.size}")
    return a


def collect(drive: Path, size: int, n: int, seed: int) -> tuple[dict[str, list[dict]], int]:
    from retinasynth.data.dataset import DataConfig, load_dataset
    from retinasynth.masks import default_perturbation, grow_vessel_tree, mask_stats

    train = load_dataset(drive, "train", DataConfig(size=size))
    stats: dict[str, list[dict]] = {g: [] for g in GROUPS}
    for s in train:
        stats["real"].append(mask_stats(s.mask, s.fov))
    perturb = default_perturbation(size)
    for i in range(n):
        s = train[i % len(train)]
        m, f, _ = perturb(s.mask, s.fov, np.random.default_rng([seed, i]))
        stats["perturbed"].append(mask_stats(m, f))
    for i in range(n):
        m, f, _ = grow_vessel_tree(size, np.random.default_rng([seed, i]))
        stats["procedural"].append(mask_stats(m, f))
    return stats, len(train)


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.4f}"


def table(stats: dict[str, list[dict]]) -> str:
    head = ["statistic"]
    for g in GROUPS:
        head += [f"{g} mean ± std", f"{g} [min, max]"]
    head.append("procedural mean in real range")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in STATS:
        row = [k]
        summary = {}
        for g in GROUPS:
            v = np.array([s[k] for s in stats[g]], dtype=np.float64)
            sd = v.std(ddof=1) if v.size > 1 else 0.0
            summary[g] = (v.mean(), v.min(), v.max())
            row += [f"{_fmt(v.mean())} ± {_fmt(sd)}", f"[{_fmt(v.min())}, {_fmt(v.max())}]"]
        mean = summary["procedural"][0]
        row.append("yes" if summary["real"][1] <= mean <= summary["real"][2] else "**no**")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    drive = args.drive.resolve()
    if not drive.is_dir():
        print(f"error: DRIVE folder {drive} not found; download DRIVE there or pass --drive PATH.",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    stats, n_real = collect(drive, args.size, args.n, args.seed)
    wall = time.perf_counter() - t0
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    report = "\n".join([
        f"# Vessel-mask realism: real DRIVE training masks vs perturbed vs procedural ({args.size}x{args.size})",
        "",
        f"command: `{command}`",
        f"machine: processor {platform.processor() or platform.machine() or 'unknown'!r}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"groups: real = {n_real} DRIVE training masks ({drive}); perturbed = {args.n} x default_perturbation"
        f"({args.size}) of real masks, rng [seed={args.seed}, i]; procedural = {args.n} x "
        f"grow_vessel_tree({args.size}), rng [seed={args.seed}, i]",
        "statistics: retinasynth.masks.mask_stats inside each mask's FOV; std is the sample std (ddof=1)",
        "",
        table(stats),
        "",
        f"wall time: {wall:.1f} s (loading, perturbing, growing and measuring)",
    ])
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
