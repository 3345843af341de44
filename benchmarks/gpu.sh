#!/usr/bin/env bash
# The speed suite on one GPU, in one go (about 12 minutes on an H100 / H200), every result in
# one folder: the training step eager and compiled at batch 256 and 512 (and as CUDA graphs at
# 512), split into its parts with FLOP utilisation; byol against byol-pytorch and lightly on the
# same GPU, net and batch; the augmentation engines; the streaming JPEG pipeline (ResNet-50,
# 224 px); Fashion-MNIST ResNet-18 to 93 % linear with its k-NN-vs-wall-clock curve.
#
# On the GPU machine (torch, torchvision and timm installed, no network), from the repository root:
#   OUT=results bash benchmarks/gpu.sh
# What it needs beside the repository (both carried in, neither committed):
#   .whl/      byol-pytorch, lightly and kornia wheels with their dependencies, fetched elsewhere with
#              pip download --no-deps -d .whl byol-pytorch==0.9.1 lightly==1.6.0 kornia==0.9.0 kornia_rs \
#                accelerate beartype einops lightning-utilities pytorch-lightning torchmetrics
#   .data/fashion-mnist/   the four idx files of Fashion-MNIST (Debian: /usr/share/datasets/fashion-mnist)
# SMOKE=1 runs every stage at toy size, on the CPU too: a check of this script, not a measurement.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results}
mkdir -p "$OUT"
SMOKE=${SMOKE:-0}
PY=${PYTHON:-python3}
started=$(date +%s)
stage() { echo "== $1 ($(( $(date +%s) - started )) s)" | tee -a "$OUT/suite.log"; }
run() { "$@" 2>&1 | tee -a "$OUT/suite.log"; }

stage "environment"
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
$PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=src:${PYTHONPATH:-}
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  git rev-parse --short HEAD 2>/dev/null; } | tee "$OUT/environment.txt"

if [ "$SMOKE" = 1 ]; then SECONDS_BENCH=3; STEPS=2; IMAGES=64; STREAM_BATCH=32; EPOCHS=1; BATCHES="256"; else
  SECONDS_BENCH=40; STEPS=20; IMAGES=2000; STREAM_BATCH=128; EPOCHS=${EPOCHS:-40}; BATCHES="256 512"; fi

stage "the training step: eager and compiled, batch ${BATCHES}; CUDA graphs at the largest"
for batch in $BATCHES; do
  run $PY -m byol bench --arch resnet18 --image-size 32 --batch-size "$batch" --seconds "$SECONDS_BENCH" > "$OUT/bench-eager-$batch.txt"
  run $PY -m byol bench --arch resnet18 --image-size 32 --batch-size "$batch" --seconds "$SECONDS_BENCH" --compile \
    > "$OUT/bench-compiled-$batch.txt"
done
run $PY -m byol bench --arch resnet18 --image-size 32 --batch-size "${BATCHES##* }" --seconds "$SECONDS_BENCH" --compile \
  --compile-mode reduce-overhead > "$OUT/bench-graphed-${BATCHES##* }.txt"

stage "byol against byol-pytorch and lightly"
run $PY benchmarks/compare.py --image-size 32 --batch-size $BATCHES --steps "$STEPS" --warmup 3 > "$OUT/compare.txt"

stage "augmentation engines"
run $PY benchmarks/augment_engines.py --batch-size 512 --image-size 32 96 > "$OUT/augment-engines.txt"

stage "streaming JPEGs, ResNet-50 at 224 px"
run $PY benchmarks/streaming.py --images "$IMAGES" --arch resnet50 --image-size 224 --batch-size "$STREAM_BATCH" \
  --json "$OUT/streaming.json" > "$OUT/streaming.txt"

stage "Fashion-MNIST, ResNet-18, to 93 % linear"
data=.data/fashion-mnist; [ -d "$data" ] || data=/usr/share/datasets/fashion-mnist
if [ "$SMOKE" = 1 ]; then  # toy size: the first 1,024 training and 512 test images
  $PY - "$data" "$OUT/fashion-mnist-smoke.npz" <<'PY'
import sys
from pathlib import Path
import numpy as np
from byol.data.idx import find_idx, read_idx

def read(stem, n):
    return read_idx(find_idx(Path(sys.argv[1]), stem))[:n]
np.savez(sys.argv[2], train_images=read("train-images-idx3-ubyte", 1024), train_labels=read("train-labels-idx1-ubyte", 1024),
         test_images=read("t10k-images-idx3-ubyte", 512), test_labels=read("t10k-labels-idx1-ubyte", 512))
PY
  data="$OUT/fashion-mnist-smoke.npz"
fi
run $PY -m byol pretrain --data "$data" --arch resnet18 --small-stem --hidden-dim 4096 --batch-size 512 \
  --epochs "$EPOCHS" --knn-every 5 --out "$OUT/fashion-mnist-resnet18" --overwrite > "$OUT/fashion-mnist.txt"
stage "done"
