#!/usr/bin/env bash
# Rebuild the retired `cpu-v1` generator from its recorded config and check its weights bit for bit against the
# sha256 recorded on 2026-11-27/30 (RESULTS.md sections 8, 15 and 27). fp32 results depend on the machine kind and
# on the libraries' kernels: the hash was made on a 2-core AMD EPYC with avx512_bf16 with torch 2.14.1 and
# OpenCV 5.0.0 (the augmentation's warps run in OpenCV; 5.1.0 gives other weights from the first steps on), so this
# script runs the fit with OpenCV 5.0.0.93 from a separate folder, leaving the project's environment as it is.
#   benchmarks/reproduce_cpu_v1.sh [OUT]     (default runs/cpu-v1-repro-cv50; ~20 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/cpu-v1-repro-cv50}
EXPECTED=3e8fc89a69ae60987362ebb677e745e20d19087b05f6e256b3722f142d9404b0
CV=${CV:-runs/opencv-5.0.0}
[ -d "$CV/cv2" ] || .venv/bin/pip install -q --no-deps --target "$CV" opencv-python-headless==5.0.0.93
grep -m1 "model name" /proc/cpuinfo || true
PYTHONPATH=$CV .venv/bin/python -c "import cv2, torch; print('cv2', cv2.__version__, 'torch', torch.__version__)"
[ -e "$OUT/config.json" ] && ARGS=(--resume --out "$OUT") || \
  ARGS=(--config benchmarks/configs/fit-cpu-v1.json --data ../shared/data/DRIVE --out "$OUT")
PYTHONPATH=$CV .venv/bin/retinasynth fit "${ARGS[@]}" --quiet
GOT=$(sha256sum "$OUT/generator_ema.safetensors" | cut -d' ' -f1)
echo "generator_ema.safetensors sha256 $GOT"
if [ "$GOT" = "$EXPECTED" ]; then echo "REPRODUCED: bit for bit the recorded cpu-v1 generator"; else
  echo "DIFFERENT from the recorded $EXPECTED (another machine kind or library build?)"; exit 1; fi
