#!/usr/bin/env bash
# Issue 36 on the converged protocol: a clinic's camera from unlabelled photographs, against the controls a
# domain-adaptation reviewer expects. STARE plays the clinic: its seeded 75% part (12 images) is scored, its other
# part (4 images) is the unlabelled photographs; no STARE label is used for training. Run it after
# benchmarks/converged_chain.sh on the same machine (it starts from that chain's generator and its `real` n=20
# seed-0 segmenter, read off `real-2x`'s branch), alone on the machine; rerun it to continue (each step resumes or
# is skipped when done; the benchmark's records go to benchmarks/results/target-stare/records, to be committed).
#   benchmarks/target_camera_chain.sh [CONVERGED_ROOT] [OUT_ROOT]
# 1. pseudo-label STARE's unscored part with the source segmenter;
# 2. fine-tune the converged generator on those pairs (800 steps), render 1000 pairs on DRIVE's true masks;
# 3. the benchmark (converged protocol, n = 2 and 20, seeds 0 and 1) scored on STARE's scored part: real, real+aug,
#    the controls real+fda, real+hist and self-train on the same photographs (--adapt), and pretrain /
#    pretrain+aug from the target-look set.
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-runs/converged}
R=${2:-runs/target}
RS=${RS:-.venv/bin/retinasynth}
D=${D:-../shared/data}
REC=${REC:-benchmarks/results}
CFG=benchmarks/configs/bench-converged-wsd.json
SEG=$C/bench/models/real-2x_n20_s0@3200.safetensors
mkdir -p "$R"
[ -f "$SEG" ] || { echo "error: $SEG missing: run benchmarks/converged_chain.sh first (its real arms)"; exit 2; }
[ -f "$C/fit/generator_ema.safetensors" ] || { echo "error: $C/fit missing: run benchmarks/converged_chain.sh first"; exit 2; }
[ -f "$R/pseudo/pseudo.json" ] || { rm -rf "$R/pseudo"
  $RS pseudo-label --photos $D/STARE --split test --model "$SEG" --out "$R/pseudo" --quiet; }
if [ -e "$R/fit/config.json" ]; then
  grep -q '"status": "running"' "$R/fit/config.json" && $RS fit --resume --out "$R/fit" --quiet
else
  $RS fit --init "$C/fit" --data "$R/pseudo" --out "$R/fit" -o train.steps=800 --quiet
fi
if [ ! -e "$R/synth/synth.json" ]; then
  if [ -d "$R/synth" ]; then $RS synthesize --run "$R/fit" --data $D/DRIVE --n 1000 --out "$R/synth" --resume
  else $RS synthesize --run "$R/fit" --data $D/DRIVE --n 1000 --out "$R/synth"; fi
fi
$RS benchmark-downstream --data $D/DRIVE --synth "$R/synth" --out "$R/bench" --config $CFG \
  --test-data stare:train=$D/STARE --adapt stare:test=$D/STARE \
  -o arms=real,real-2x,real+aug,real+fda,real+hist,self-train,pretrain,pretrain+aug \
  --records "$REC/target-stare/records" --quiet
echo CHAIN-DONE
