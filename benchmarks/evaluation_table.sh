#!/usr/bin/env bash
# The evaluation table of BENCHMARKS.md: raw pixels, the random-init encoder and the default
# BYOL run, each scored by k-NN, the linear probe and fine-tuning at 1 %, 10 % and 100 % of
# the labels — all on the same seeded splits (byol compare).
# Usage: bash benchmarks/evaluation_table.sh [label fractions, default: 0.01 0.1 1]
# Env: BYOL (the command, default .venv/bin/byol), DATA (default: Fashion-MNIST), RUN (the BYOL run,
# pre-trained with the defaults when it has no encoder yet), EXTRA (more byol compare flags).
set -euo pipefail
cd "$(dirname "$0")/.."
BYOL=${BYOL:-.venv/bin/byol}
RUN=${RUN:-runs/benchmark-default}
data=(); [ -n "${DATA:-}" ] && data=(--data "$DATA")
fractions=("$@"); [ ${#fractions[@]} -gt 0 ] || fractions=(0.01 0.1 1)
echo "date: $(date -u +%F)  git: $(git rev-parse --short HEAD 2>/dev/null || echo -)  fractions: ${fractions[*]}"
[ -f "$RUN/encoder.safetensors" ] || $BYOL pretrain "${data[@]}" --out "$RUN" --overwrite
name=$(IFS=-; echo "${fractions[*]}")
$BYOL compare "${data[@]}" --init pixels --init random --init "byol:$RUN" --protocols knn linear finetune \
  --label-fraction "${fractions[@]}" --out "$RUN/compare-$name" ${EXTRA:-}
