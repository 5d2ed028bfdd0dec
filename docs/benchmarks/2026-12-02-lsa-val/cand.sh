#!/usr/bin/env bash
# Issue 20: one cfg_lsa_400s recipe candidate, chosen on the validation split. One nvidia-h200 call
# (timeout_s 590): bash docs/benchmarks/2026-12-02-lsa-val/cand.sh NAME [overrides...]
# The dataset is cfg_lsa_400s's with a 1000-instance val split (train and test byte-identical to the
# shipped one); the run is cold (new empty Inductor and Triton caches), evaluates on val every 500
# steps, and is stopped by SIGTERM at 500 s at the latest (its own budget: 400 s). The baseline
# (the shipped recipe on the same val split) comes from docs/benchmarks/2026-12-02-ttc/ttc.sh.
# Results: $OUT/NAME.log, $OUT/NAME.metrics.jsonl.
set -uo pipefail
name=${1:?NAME [overrides]}; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
data_args=(data.path=data/lsa-9x9-10k-aug10-val1k +data.build_args.val_size=1000)
common=(logging.runs_dir=/tmp/runs logging.progress=false logging.wandb_mode=disabled logging.run_name=$name)
python3 scripts/build_data.py --config-name cfg_lsa_400s "${data_args[@]}" "${common[@]}" > "$OUT/build.log" 2>&1 \
  || { tail -3 "$OUT/build.log"; exit 1; }
timeout -s TERM 500 python3 pretrain.py --config-name cfg_lsa_400s "${data_args[@]}" data.eval_split=val \
  train.eval_interval=500 "${common[@]}" "$@" > "$OUT/$name.log" 2>&1
echo "rc $?"; grep "^step [0-9]*:" "$OUT/$name.log" | cut -c1-160; tail -1 "$OUT/$name.log" | cut -c1-300
cp /tmp/runs/*/"$name"/metrics.jsonl "$OUT/$name.metrics.jsonl"
