#!/bin/bash
# Is the CPU path slower than before?  The default Fashion-MNIST run's training step, an old
# commit's code against the working tree's, alternating, 140 steps each (one epoch is 234):
# the images/s the progress bar reports per 20-step window, the first window dropped.
#   bash benchmarks/cpu_before_after.sh e172cce [rounds]
set -u
cd "$(dirname "$0")/.."
old=$(mktemp -d)
git worktree add -q --detach "$old" "$1"
run() {  # label source-tree round
  log=$(mktemp)
  PYTHONPATH=$2/src timeout 600 .venv/bin/python -m byol pretrain --out "$(mktemp -d)/run" --epochs 1 \
    --knn-every 0 > "$log" 2>&1 &
  pid=$!
  while kill -0 $pid 2>/dev/null; do
    if tr '\r' '\n' < "$log" | grep -Eq " 1[4-9][0-9]/234"; then kill $pid; break; fi
    sleep 2
  done
  wait $pid 2>/dev/null
  echo "$1 run $3: $(tr '\r' '\n' < "$log" | grep -o 'img_s=[0-9]*' | uniq | tail -n +2 | cut -d= -f2 | tr '\n' ' ')"
}
for round in $(seq "${2:-2}"); do run old "$old" "$round"; run new "$PWD" "$round"; done
git worktree remove --force "$old"
