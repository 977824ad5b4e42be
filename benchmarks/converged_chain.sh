#!/usr/bin/env bash
# The converged-protocol run of issue 34, as one resumable chain: rerun it after a kill and it continues (fit
# --resume, synthesize --resume, the benchmark's cache). Run from the repository root, alone on the machine.
#   benchmarks/converged_chain.sh [OUT_ROOT]      (default runs/converged)
# Steps: the default generator on DRIVE's training split; 1000 synthetic pairs; the candidate protocol
# (benchmarks/configs/bench-converged-candidate.json: patch 192, 3200 steps, arms real, real-2x, real+aug, synth,
# pretrain, pretrain+aug, n = 2 and 20 (15 under eval=val: 5 images held out), seeds 0 and 1) scored on eval=val
# and STARE. DRIVE test is not loaded: score
# it once, at the end, with -o eval=test after the protocol is fixed.
# Open question for whoever runs it: the 2x arms (real-2x, real+aug, pretrain, pretrain+aug) train 2 x 3200 steps,
# and real at 6400 was past its peak on STARE (RESULTS §26); compare -o steps=1600 (2x arms at 3200) on eval=val first.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/converged}
RS=.venv/bin/retinasynth
mkdir -p "$R"
if [ -e "$R/fit/config.json" ]; then
  grep -q '"status": "running"' "$R/fit/config.json" && $RS fit --resume --out "$R/fit" --quiet
else
  $RS fit --data ../shared/data/DRIVE --out "$R/fit" --quiet
fi
if [ ! -e "$R/synth/synth.json" ]; then
  if [ -d "$R/synth" ]; then $RS synthesize --run "$R/fit" --n 1000 --out "$R/synth" --resume
  else $RS synthesize --run "$R/fit" --n 1000 --out "$R/synth"; fi
fi
$RS benchmark-downstream --data ../shared/data/DRIVE --synth "$R/synth" --out "$R/bench" \
  --config benchmarks/configs/bench-converged-candidate.json -o eval=val -o "regimes=[2,15]" --test-data stare=../shared/data/STARE
