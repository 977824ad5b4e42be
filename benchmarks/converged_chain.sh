#!/usr/bin/env bash
# The converged-protocol run of issue 34, as one resumable chain: rerun it after a kill, or in a later session on
# another machine, and it continues. Run from the repository root, alone on the machine (one torch job at a time).
#   benchmarks/converged_chain.sh [OUT_ROOT]      (default runs/converged; a folder outside the work tree survives
#                                                   a work tree laid anew on the same machine)
# What survives anything: each benchmark's small records (training records and per-image scores, no weights) go to
# benchmarks/results/converged*/records after every model (`--records`), to be committed; a rerun restores them and
# trains only what they lack. Weights, the generator and the synthetic set live under OUT_ROOT only.
# 1. selection, eval=val + STARE (DRIVE test not loaded): `real` n=15 at 6400 steps under the warm-up-stable-decay
#    schedule, read off at 800, 1600, 3200 and 6400 steps (one run: every shorter budget is a branch that decays
#    off the same trajectory, bitwise the model a run of that budget gives). The protocol of record starts only if
#    `real` is at its plateau there (3200 -> 6400 gains <= 0.005 Dice on validation and on STARE).
# 2. the protocol of record's real-image arms (no synthetic set needed): benchmarks/configs/bench-converged-wsd.json
#    (patch 192, 3200 steps, wsd, curve at 1/8, 1/4 and 1/2 of every run) with arms real, real-2x, real+aug at
#    n = 20 then 2, seeds 0, 1; DRIVE test scored once per model, by this step. `real` is read off `real-2x`'s
#    3200-step branch (bitwise the model its own run gives), so each (n, seed) trains two 6400-step runs.
# 3. the default generator on DRIVE's training split and its 1000 pairs, then the synthetic arms (synth, pretrain,
#    pretrain+aug) and the full report. Steps 3's models need the synthetic set of this OUT_ROOT: do them on one
#    machine (a refit elsewhere is another set, with other cache keys).
# Touch $R/PAUSE to stop between steps, $R/<step>/STOP to stop a benchmark before its next model (exit 75); delete
# it and rerun to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/converged}
RS=${RS:-.venv/bin/retinasynth}  # override RS/D to run it from a frozen worktree (benchmarks/converged_frozen.sh)
PY=${PY:-.venv/bin/python}
D=${D:-../shared/data}
REC=${REC:-benchmarks/results}  # where the records are kept (the frozen worktree passes the main tree's)
CFG=benchmarks/configs/bench-converged-wsd.json
mkdir -p "$R"
pause() { if [ -e "$R/PAUSE" ]; then echo "paused before $1 ($R/PAUSE)"; exit 0; fi; }
pause selection
$RS benchmark-downstream --data $D/DRIVE --test-data stare=$D/STARE --out "$R/select-wsd" --config $CFG \
  -o eval=val -o arms=real-2x -o regimes=15 -o seeds=0 -o 'curve=[0.125,0.25,0.5]' \
  --records "$REC/converged-select/records" --quiet
$PY - "$R/select-wsd/results.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
for c in res["curves"]:
    print(f"selection: {c['eval']} {c['arm']} n={c['regime']} after {c['steps']} steps: Dice {c['dice_mean']:.4f}")
rows = res["arm_plateaus"]
for p in rows:
    print(f"selection: {p['eval']} {p['arm']} n={p['regime']}: {p['half_steps']} -> {p['steps']} steps "
          f"{p['last_doubling']:+.4f} Dice ({'at its plateau' if p['at_plateau'] else 'still rising'})")
if not rows or not all(p["at_plateau"] for p in rows):
    sys.exit("selection: `real` is not at its plateau under this protocol; the protocol of record is not run.")
PY
pause real-arms
for n in 20 2; do
  $RS benchmark-downstream --data $D/DRIVE --test-data stare=$D/STARE --out "$R/bench" --config $CFG \
    -o arms=real,real-2x,real+aug -o regimes=$n --records "$REC/converged/records" --quiet
done
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
$RS benchmark-downstream --data $D/DRIVE --synth "$R/synth" --out "$R/bench" --config $CFG \
  --test-data stare=$D/STARE --records "$REC/converged/records" --quiet
echo CHAIN-DONE
