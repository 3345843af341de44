#!/usr/bin/env bash
# The README's main job, timed end to end, with the facts BENCHMARKS.md records beside it.
# Usage: bash benchmarks/default_run.sh [extra byol pretrain flags]
set -euo pipefail
cd "$(dirname "$0")/.."
out=runs/benchmark-default
echo "date: $(date -u +%F)  machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem/{print $2}') GiB"
.venv/bin/python -c "import torch, torchvision; print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}')"
echo "git: $(git rev-parse --short HEAD)"
/usr/bin/env time -f "wall clock: %e s, peak RSS: %M KiB" .venv/bin/byol pretrain --out "$out" --overwrite "$@"
.venv/bin/python - "$out" <<'PY'
import csv, json, sys
run = sys.argv[1]
for row in csv.DictReader(open(f"{run}/metrics.csv")):
    knn = f"{100 * float(row['knn_top1']):.2f} %" if row["knn_top1"] else "-"
    print(f"epoch {row['epoch']:>3}  {float(row['elapsed_s']) / 60:5.1f} min  loss {float(row['loss']):.4f}  "
          f"{float(row['images_per_s']):6.0f} img/s  k-NN {knn}")
print(json.load(open(f"{run}/results.json")))
PY
