#!/usr/bin/env bash
# The converged-protocol run of issue 34, as one resumable chain: rerun it after a kill and it continues (fit
# --resume, synthesize --resume, the benchmark's cache). Run from the repository root, alone on the machine.
#   benchmarks/converged_chain.sh [OUT_ROOT]      (default runs/converged)
# 1. selection, eval=val + STARE (DRIVE test not loaded): `real` n=15 under the warm-up-stable-decay schedule with
#    its curve (800, 1600, 3200 steps) and `real-2x` (1600, 3200, 6400): the plateau under wsd, against the cosine
#    runs of benchmarks/results/converge-search (RESULTS §26).
# 2. the default generator on DRIVE's training split and its 1000 pairs.
# 3. the protocol of record, benchmarks/configs/bench-converged-wsd.json (patch 192, 3200 steps, wsd, curve at 1/4
#    and 1/2 of every run; arms real, real-2x, real+aug, synth, pretrain, pretrain+aug; n = 2 and 20; seeds 0, 1)
#    on DRIVE test (scored once, by this step) and STARE. ~6.5 h on the 2-core AMX Xeon: more than one session;
#    rerun the script to continue.
# Touch $R/PAUSE to stop between steps, $R/<step>/STOP (select-wsd, bench) to stop a benchmark before its next model
# (exit 75); delete it and rerun to continue. The protocol of record starts only if the selection finds `real` at its
# plateau (its last doubling gains <= 0.005 Dice on validation and on STARE); else the chain stops and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/converged}
RS=${RS:-.venv/bin/retinasynth}  # override RS/D to run it from a frozen worktree (benchmarks/converged_frozen.sh)
D=${D:-../shared/data}
mkdir -p "$R"
pause() { if [ -e "$R/PAUSE" ]; then echo "paused before $1 ($R/PAUSE)"; exit 0; fi; }
pause selection
$RS benchmark-downstream --data $D/DRIVE --test-data stare=$D/STARE --out "$R/select-wsd" \
  --config benchmarks/configs/bench-converged-wsd.json -o eval=val -o arms=real,real-2x -o regimes=15 -o seeds=0
python_gate() {
  .venv/bin/python - "$R/select-wsd/results.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
rows = [p for p in res["arm_plateaus"] if p["arm"] in ("real", "real-2x")]
for p in rows:
    print(f"selection: {p['eval']} {p['arm']} n={p['regime']}: {p['half_steps']} -> {p['steps']} steps "
          f"{p['last_doubling']:+.4f} Dice ({'at its plateau' if p['at_plateau'] else 'still rising'})")
if not rows or not all(p["at_plateau"] for p in rows):
    sys.exit("selection: `real` is not at its plateau under this protocol; the protocol of record is not run.")
PY
}
python_gate
pause fit
if [ -e "$R/fit/config.json" ]; then
  grep -q '"status": "running"' "$R/fit/config.json" && $RS fit --resume --out "$R/fit" --quiet
else
  $RS fit --data $D/DRIVE --out "$R/fit" --quiet
fi
pause synthesize
if [ ! -e "$R/synth/synth.json" ]; then
  if [ -d "$R/synth" ]; then $RS synthesize --run "$R/fit" --n 1000 --out "$R/synth" --resume
  else $RS synthesize --run "$R/fit" --n 1000 --out "$R/synth"; fi
fi
pause protocol
$RS benchmark-downstream --data $D/DRIVE --synth "$R/synth" --out "$R/bench" \
  --config benchmarks/configs/bench-converged-wsd.json --test-data stare=$D/STARE
echo CHAIN-DONE
