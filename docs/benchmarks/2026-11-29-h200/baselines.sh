#!/usr/bin/env bash
# Equal-budget baselines on one nvidia-h200 (2026-11-29): LSA 9x9 (the seed's cfg_lsa data),
# cfg_lsa_400s's recipe cut to 180 s of training (LR schedule over 1700 steps), one run per
# architecture given as arguments: bash baselines.sh trm hrm
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
for arch in "$@"; do
  timeout 290 python3 pretrain.py --config-name cfg_lsa_400s "arch=$arch" train.max_train_seconds=180 \
    train.max_steps=1700 train.eval_interval=850 "data.path=$PWD/data/lsa-9x9-10k-aug10" logging.runs_dir=/tmp/runs \
    "logging.run_name=lsa180-$arch" logging.progress=false 2>&1 | grep -v "^W1\|^I1" | tail -6 | tee "$OUT/lsa180_$arch.log"
  cp /tmp/runs/trm-lsa/lsa180-$arch/metrics.jsonl "$OUT/lsa180_$arch.metrics.jsonl"
done
