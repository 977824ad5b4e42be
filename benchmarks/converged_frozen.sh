#!/usr/bin/env bash
# Runs benchmarks/converged_chain.sh from a frozen copy of the code (a git worktree at the revision recorded in
# benchmarks/results/converged/REVISION), so that every record of the protocol, made over several sessions and
# machines, comes from one version of the code (the benchmark refuses to assemble mixed code), while development
# goes on in the main tree. The records are written into the main tree's benchmarks/results (commit them).
#   benchmarks/converged_frozen.sh [OUT_ROOT]
# The first call records HEAD as the revision (commit REVISION); later calls, in any session, reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REVF=benchmarks/results/converged/REVISION
mkdir -p "$(dirname $REVF)"
[ -s $REVF ] || git rev-parse HEAD > $REVF
REV=$(cat $REVF)
OUT=${1:-$ROOT/runs/converged}
W=$OUT/code
if ! git -C "$W" rev-parse HEAD >/dev/null 2>&1; then  # absent, or left by a work tree laid anew since
  rm -rf "$W"; git worktree prune; git worktree add --detach "$W" "$REV"
fi
[ "$(git -C "$W" rev-parse HEAD)" = "$REV" ] || { echo "error: $W is not at $REV"; exit 2; }
[ -e "$W/retinasynth_cli" ] || ln -s cli "$W/retinasynth_cli"  # the frozen CLI too, not the main tree's
echo "frozen code: $REV"
cd "$W"
PYTHONPATH=$PWD RS="$ROOT/.venv/bin/python -m retinasynth_cli.main" PY=$ROOT/.venv/bin/python \
  REC=$ROOT/benchmarks/results \
  D=$(cd "$ROOT/../shared/data" && pwd) bash benchmarks/converged_chain.sh "$OUT"
