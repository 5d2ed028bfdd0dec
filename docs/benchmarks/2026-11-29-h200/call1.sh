#!/usr/bin/env bash
# Call 1 on one nvidia-h200 (2026-11-29): the CUDA tests of the reshaped loop, then the 1-GPU
# same-host pair: the current build against the previous main (a3c746b, checked out in
# .bench-old), attention variant, training only, alternating old/new.
# Needs: .whl (bash ../shared/tools/gpu-wheelhouse.sh), data/lsa-9x9-10k-aug10, .bench-old.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -k "resumes or real_loop or optimizer_and_ema" \
  2>&1 | tee "$OUT/gpu_tests.log"
DATA=$PWD/data/lsa-9x9-10k-aug10
for who in old new new old; do
  dir=.; [ "$who" = old ] && dir=.bench-old
  (cd "$dir" && PYTHONPATH="$PWD:/tmp/site" timeout 150 python3 scripts/benchmark.py --config-name cfg_lsa --eval-passes 0 \
     "data.path=$DATA") 2>&1 | grep -v "^W1\|^I1" | tail -15 | tee -a "$OUT/bench_$who.log"
done
