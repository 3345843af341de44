#!/bin/bash
# Four backbones on the same short Fashion-MNIST budget: the first 10,000 training images,
# 2 epochs, 32-px views (timm's ConvNeXt cannot take 28 px), batch 256, every other setting
# the recipe's; then the linear probe and k-NN on the 10,000 test images that byol pretrain
# prints.  Usage: OUT=runs/backbones bash benchmarks/backbones.sh
cd "$(dirname "$0")/.."
out=${OUT:-runs/backbones}
mkdir -p "$out"
.venv/bin/python benchmarks/common.py fashion-mnist "$out/fm10k.npz" --train 10000
for arch in narrow_resnet mobilenet_v3_small timm:convnext_atto timm:vit_tiny_patch16_224; do
  log="$out/${arch//:/-}.log"
  /usr/bin/time -f "wall %e s" .venv/bin/byol pretrain --data "$out/fm10k.npz" --arch "$arch" --epochs 2 \
    --image-size 32 --batch-size 256 --knn-every 0 --out "$out/${arch//:/-}" --overwrite > "$log" 2>&1
  echo "$arch | $(grep -E 'linear-probe top-1|k-NN top-1 \(' "$log" | tr -s ' ' | tr '\n' ' ') | $(grep '^wall' "$log")"
done
