#!/usr/bin/env bash
# Runs benchmarks/converged_chain.sh from a frozen copy of the code (a git worktree under runs/, at the revision
# the chain was started with), so that its runs, which take more than one session, are all made by one version of
# the code (the benchmark refuses to assemble mixed code) while development goes on in the main tree.
#   benchmarks/converged_frozen.sh [REVISION]   (first call: REVISION, default HEAD; later calls reuse the worktree)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=runs/code34
if [ ! -d "$W" ]; then git worktree add --detach "$W" "${1:-HEAD}"; fi
echo "frozen code: $(git -C "$W" rev-parse HEAD)"
cd "$W"
PYTHONPATH=$PWD RS=$ROOT/.venv/bin/retinasynth D=$(cd "$ROOT/../shared/data" && pwd) \
  bash benchmarks/converged_chain.sh ../converged
