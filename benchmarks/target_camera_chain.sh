#!/usr/bin/env bash
# Issue 36 on the converged protocol: a clinic's camera from unlabelled photographs, against the controls a
# domain-adaptation reviewer expects. STARE plays the clinic: its seeded 75% part (12 images) is scored, its other
# part (4 images) is the unlabelled photographs; no STARE label is used for training. Run it after
# benchmarks/converged_chain.sh on the same machine (it starts from that chain's generator and its `real` n=20
# seed-0 segmenter, read off `real-2x`'s branch), alone on the machine; rerun it to continue (each step resumes or
# is skipped when done; the benchmark's records go to benchmarks/results/target-stare/records, to be committed).
#   benchmarks/target_camera_chain.sh [CONVERGED_ROOT] [OUT_ROOT]
# 1. pseudo-label STARE's unscored part with the source segmenter;
# 2. choose the target look without labels (benchmarks/target_look_select.py): fine-tunes of the converged
#    generator on those pairs, or the converged generator with `synthesize --style` on the same photographs; render
#    1000 pairs on DRIVE's true masks in the chosen look;
# 3. the benchmark (converged protocol, n = 20 then 2, seeds 0 and 1) scored on STARE's scored part: real, real+aug,
#    the controls real+fda and self-train on the same photographs (--adapt), and pretrain / pretrain+aug from the
#    target-look set (or, when no target look qualified, the converged run's default set and its models); then real+hist (the second FDA-like control, 4 models of ~1 h here: last, so that the
#    issue's "FDA or histogram matching" is met first), then the report of all arms (every model found).
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-runs/converged}
R=${2:-runs/target}
RS=${RS:-.venv/bin/retinasynth}
PY=${PY:-.venv/bin/python}
D=${D:-../shared/data}
REC=${REC:-benchmarks/results}
CFG=benchmarks/configs/bench-converged-wsd.json
SEG=$C/bench/models/real-2x_n20_s0@3200.safetensors
mkdir -p "$R"
[ -f "$SEG" ] || { echo "error: $SEG missing: run benchmarks/converged_chain.sh first (its real arms)"; exit 2; }
[ -f "$C/fit/generator_ema.safetensors" ] || { echo "error: $C/fit missing: run benchmarks/converged_chain.sh first"; exit 2; }
[ -f "$R/pseudo/pseudo.json" ] || { rm -rf "$R/pseudo"
  $RS pseudo-label --photos $D/STARE --split test --model "$SEG" --out "$R/pseudo" --quiet; }
# the same photographs less those whose brightest spot lies > 0.15 FOV diameters from the pseudo-mask's vessel hub
# (label-free; RESULTS §29-30: a disc cut by the FOV edge or red teaches the generator "no disc at the hub")
[ -f "$R/pseudo-guarded/pseudo.json" ] || { rm -rf "$R/pseudo-guarded"
  $RS pseudo-label --photos $D/STARE --split test --model "$SEG" --out "$R/pseudo-guarded" --max-disc-offset 0.15 \
    --quiet; }
# the fine-tune's length, learning rate, tuned parameters and photographs, chosen without a target label
# (benchmarks/target_look_select.py: vessel visibility of the renders, their distance to the photographs' colours,
# the disc at the vessels' hub); its report is committed
$PY benchmarks/target_look_select.py --source-run "$C/fit" --pseudo "$R/pseudo" --data $D/DRIVE --model "$SEG" \
  --pseudo-guarded "$R/pseudo-guarded" --out "$R/select" \
  --candidates 200:2e-4,800:2e-4,800:5e-5,800:2e-3:norm,800:2e-4:all:guard,style,800:2e-4:all:anchor,800:2e-4:all:guard:anchor
mkdir -p "$REC/target-select"; cp "$R/select/"{results.json,summary.csv,report.md,compare.jpg} "$REC/target-select/"
# how the chosen look renders: its generator run and, for 'style', the photographs whose colours it takes
read -r CHOSEN GEN STYLE < <($PY -c "import json,sys; r=json.load(open(sys.argv[1])); \
print(r['chosen'], r['render']['run'], r['render']['style'] or '-')" "$R/select/results.json")
STY=(); [ "$STYLE" = - ] || STY=(--style "$STYLE")
echo "target look: $CHOSEN (generator $GEN${STY[*]:+, ${STY[*]}})"
# 1000 pairs on DRIVE's true masks, in the target look as rendered (no sampled camera looks on top). When the rule
# keeps the source generator without a style (no target look qualified), there is no target-look set to render:
# the synthetic arms are the converged run's default set (the source generator with its default camera looks), and
# its pretrain / pretrain+aug models are reused as they are (same set, same keys), so only the controls train.
SYN=$R/synth
if [ "$GEN" -ef "$C/fit" ] && [ "$STYLE" = - ]; then
  SYN=$C/synth
  [ -e "$SYN/synth.json" ] || { echo "error: $SYN missing: run benchmarks/converged_chain.sh first"; exit 2; }
  echo "target look: none qualified; synthetic arms from the default set $SYN (its models reused)"
elif [ ! -e "$R/synth/synth.json" ]; then
  RES=(); [ -d "$R/synth" ] && RES=(--resume)
  $RS synthesize --run "$GEN" --data $D/DRIVE --n 1000 --out "$R/synth" --appearance none "${STY[@]}" "${RES[@]}"
fi
# The benchmark runs with the converged protocol's frozen code (its worktree, $C/code, when there), so that the
# real-image arms' models of the converged run serve here as they are (hard links: same keys, one code version);
# only the adaptation and target-look arms train, and every model is scored on STARE's scored part.
RSB=$RS
[ -d "$C/code/retinasynth" ] && RSB="env PYTHONPATH=$C/code $PY -m retinasynth_cli.main"
# (linked on every call, never overwriting: models the converged run adds later are picked up)
if [ -d "$C/bench/models" ]; then
  mkdir -p "$R/bench"; cp -aln "$C/bench/models" "$C/bench/runs" "$C/bench/scores" "$R/bench/"
fi
bench() {
  $RSB benchmark-downstream --data $D/DRIVE --synth "$SYN" --out "$R/bench" --config $CFG \
    --test-data stare:train=$D/STARE --adapt stare:test=$D/STARE --records "$REC/target-stare/records" --quiet "$@"
}
for n in 20 2; do
  bench -o arms=real,real-2x,real+aug,real+fda,self-train,pretrain,pretrain+aug -o regimes=$n
done
bench -o arms=real,real-2x,real+aug,real+hist -o regimes=20,2
bench -o arms=real,real-2x,real+aug,real+fda,real+hist,self-train,pretrain,pretrain+aug
echo CHAIN-DONE
