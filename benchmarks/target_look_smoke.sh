#!/usr/bin/env bash
# Issue 36's user path on real data at smoke scale: checks that it runs end to end; measures nothing.
#   benchmarks/target_look_smoke.sh SEGMENTER GENERATOR_RUN [OUT]
# SEGMENTER: a benchmark's OUT/models/*.safetensors trained on DRIVE (RESULTS §27 used the converged selection's
# real-2x_n15_s0@3200); GENERATOR_RUN: a finished fit run (§27: the cpu-v1 rebuild). Writes OUT/compare.png (rows:
# source renders, fine-tuned renders, STARE's unscored photographs, their pseudo-labels).
set -euo pipefail
cd "$(dirname "$0")/.."
SEG=$1; GEN=$2; S=${3:-runs/target-smoke}
RS=.venv/bin/retinasynth; D=../shared/data
rm -rf "$S"; mkdir -p "$S"
$RS pseudo-label --photos $D/STARE --split test --model "$SEG" --out "$S/pseudo" --quiet
$RS fit --init "$GEN" --data "$S/pseudo" --out "$S/fit" -o train.steps=150 -o train.sample_every=150 --quiet
$RS synthesize --run "$S/fit" --data $D/DRIVE --n 8 --out "$S/synth" --appearance none --quiet
$RS synthesize --run "$GEN" --data $D/DRIVE --n 8 --out "$S/synth-src" --appearance none --quiet
$RS benchmark-downstream --data $D/DRIVE --out "$S/bench" -o eval=val -o arms=real,real+fda,real+hist,self-train \
  -o regimes=2 -o seeds=0 -o steps=100 --test-data stare:train=$D/STARE --adapt stare:test=$D/STARE --quiet
# the refusal: photographs that are scored
$RS benchmark-downstream --data $D/DRIVE --out "$S/bench-leak" -o eval=val -o arms=real,real+hist -o regimes=2 \
  -o seeds=0 -o steps=1 --test-data stare=$D/STARE --adapt stare:test=$D/STARE --quiet || echo "refused: exit $?"
.venv/bin/python - "$S" <<'PY'
import glob, sys
import cv2
import numpy as np
S = sys.argv[1]
def row(pattern):
    return np.concatenate([cv2.resize(cv2.imread(f), (256, 256)) for f in sorted(glob.glob(pattern))[:4]], 1)
cv2.imwrite(f"{S}/compare.png", np.concatenate([row(f"{S}/synth-src/images/*.png"), row(f"{S}/synth/images/*.png"),
                                                row(f"{S}/pseudo/train/images/*.png"), row(f"{S}/pseudo/train/masks/*.png")], 0))
print(f"{S}/compare.png")
PY
