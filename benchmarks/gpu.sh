#!/usr/bin/env bash
# The speed suite on one GPU machine with no network, in one command (benchmarks/gpu_suite.py:
# every stage under one deadline, the most wanted first, each result saved as it ends).
#
# From the repository root on the GPU machine:
#   OUT=results MINUTES=8 bash benchmarks/gpu.sh
# What it needs beside the repository (carried in, not committed):
#   .whl/                  wheels the image lacks: kornia and kornia_rs (byol's augmentation), byol-pytorch
#                          and lightly with their dependencies (benchmarks/compare.py); fetched elsewhere with
#                          pip download --no-deps --only-binary=:all: --python-version 3.12 ... (README, device)
#   .data/fashion-mnist/   the four idx files of Fashion-MNIST (Debian: /usr/share/datasets/fashion-mnist)
# SMOKE=1 runs every stage at toy size, on a CPU too: a check of the suite, not a measurement.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
$PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=src:${PYTHONPATH:-}
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  git rev-parse --short HEAD 2>/dev/null; } | tee "$OUT/environment.txt"
smoke=(); [ "${SMOKE:-0}" = 1 ] && smoke=(--smoke)
data=.data/fashion-mnist; [ -d "$data" ] || data=/usr/share/datasets/fashion-mnist
$PY benchmarks/gpu_suite.py --out "$OUT" --minutes "${MINUTES:-8}" --fashion-mnist "$data" "${smoke[@]}"
