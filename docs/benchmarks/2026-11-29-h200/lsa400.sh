#!/usr/bin/env bash
# One architecture under cfg_lsa_400s's recipe and budget (400 s of training, compile included,
# as for TRM), one nvidia-h200, 2026-11-29: bash lsa400.sh hrm  |  bash lsa400.sh transformer
set -uo pipefail
arch=$1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
timeout 480 python3 pretrain.py --config-name cfg_lsa_400s "arch=$arch" "data.path=$PWD/data/lsa-9x9-10k-aug10" \
  logging.runs_dir=/tmp/runs "logging.run_name=lsa400-$arch" logging.progress=false 2>&1 | grep -v "^W1\|^I1" | tail -8 \
  | tee "$OUT/lsa400_$arch.log"
cp "/tmp/runs/trm-lsa/lsa400-$arch/metrics.jsonl" "$OUT/lsa400_$arch.metrics.jsonl"
