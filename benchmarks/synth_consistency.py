"""How faithfully do synthetic images depict their masks? Segment them with a model trained on real images.

For a synthetic set and a segmentation checkpoint written by `benchmark-downstream` (trained on real
images only), applies `retinasynth.synth.synthesize.consistency_filter` to a hard-linked copy of the
set (the original is untouched), then prints the Dice between each synthetic image's segmentation and
its own mask, by mask source, next to the same segmenter's Dice on real test images. The copy, with
pairs below --min-dice dropped and every score in its manifest, is a valid synthetic set.

    python benchmarks/synth_consistency.py --synth runs/synth-drive --model BENCH/models/real_n20_s0.safetensors \
        --out runs/synth-drive-filtered --min-dice 0.6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from retinasynth.synth.synthesize import MANIFEST, consistency_filter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synth", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True, help="filtered copy (hard links) of the synthetic set")
    ap.add_argument("--min-dice", type=float, default=0.6)
    a = ap.parse_args()
    src, out = Path(a.synth), Path(a.out)
    if not (src / MANIFEST).is_file():
        sys.exit(f"error: {src} has no {MANIFEST}; pass a folder written by `retinasynth synthesize`.")
    if out.exists():
        sys.exit(f"error: {out} exists; choose a new --out.")
    t0 = time.perf_counter()
    subprocess.run(["cp", "-al", str(src), str(out)], check=True)
    (out / MANIFEST).unlink()  # replaced, not edited in place: the original keeps its manifest
    shutil.copy(src / MANIFEST, out / MANIFEST)
    recs = [json.loads(x) for x in (out / MANIFEST).read_text().splitlines()]
    kept = consistency_filter(out, recs, a.model, a.min_dice, None, progress=True)
    dropped = [json.loads(x) for x in (out / "filtered_out.jsonl").read_text().splitlines()] \
        if (out / "filtered_out.jsonl").is_file() else []
    allr = kept + dropped
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; wall time {time.perf_counter() - t0:.0f} s")
    print("| mask source | pairs | Dice of segmentation vs own mask, mean ± std | p10 | p50 | kept at >= "
          f"{a.min_dice} |")
    print("|---|---|---|---|---|---|")
    for source in sorted({r["source"] for r in allr}) + ["all"]:
        d = np.array([r["consistency_dice"] for r in allr if source in ("all", r["source"])])
        k = sum(1 for r in kept if source in ("all", r["source"]))
        print(f"| {source} | {d.size} | {d.mean():.4f} ± {d.std(ddof=1):.4f} | {np.percentile(d, 10):.4f} | "
              f"{np.percentile(d, 50):.4f} | {k} ({100 * k / d.size:.0f}%) |")


if __name__ == "__main__":
    main()
