#!/usr/bin/env bash
# 16 trials: `fastnet sweep` on its default local cluster against the same 16 `fastnet train` commands in a row
# (docs/performance.md, "Sweeps"). Run from anywhere with fastnet importable; writes into a temporary folder.
set -euo pipefail
work=$(mktemp -d)
cd "$work"
space="--lr 0.3,1 --hidden 64,128 --batch-size 32,64 --activation sigmoid,relu --epochs 5"
python -m fastnet sweep $space --out warm > warm.log 2>&1   # every kernel variant into the cache first
start=$(date +%s.%N)
i=0
for lr in 0.3 1; do for hidden in 64 128; do for batch in 32 64; do for activation in sigmoid relu; do
    python -m fastnet train --lr $lr --hidden $hidden --batch-size $batch --activation $activation --epochs 5 \
        --out "train$i.npz" --plot "train$i.png" > "train$i.log"
    i=$((i + 1))
done; done; done; done
echo "16 train commands in a row: $(python -c "import time; print(f'{time.time() - $start:.1f}')") s"
start=$(date +%s.%N)
python -m fastnet sweep $space --out sweep > sweep.log
echo "fastnet sweep, the whole command: $(python -c "import time; print(f'{time.time() - $start:.1f}')") s"
grep "trials in" sweep.log
echo "(logs in $work)"
