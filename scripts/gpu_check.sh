#!/usr/bin/env bash
# GPU check (issue 6): RRDBNet x4plus at 854x480 -> 4x, fp32/fp16, batches 1/2/4, with and without
# faces, farm's worker vs the old script's loop; fps and fraction of the 35.9 MFLOP/px roofline;
# and one worker's fps with x264 chunks against the same with the encode switched off.
# Needs torch and farm's dependencies (scripts/setup.sh), no internet: all weights are random and
# written locally. Ends within 8 minutes (measurements stop at --budget-s, default 420 s).
#   scripts/gpu_check.sh                         one GPU
#   scripts/gpu_check.sh --device cpu --quick    anywhere, tiny sizes, to check the script
#   scripts/gpu_check.sh --peak-fp16 989 --peak-fp32 67 --frames 48 --compile
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
exec timeout 480 "$python" scripts/gpu_check.py "$@"
