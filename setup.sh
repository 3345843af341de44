#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine: the Fashion-MNIST package, a
# virtualenv in .venv with PyTorch, and byol installed in it (editable, with the test,
# TensorBoard, report, timm, medical-image and export extras).  Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  # The versions this project is tested with; any torch >= 2.4 works (pyproject.toml).
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
fi
.venv/bin/pip install -q -e ".[test,tensorboard,report,timm,medical,export]"
