#!/usr/bin/env bash
# Issue 18, item 4: the same step under DDP stays as fast per GPU: a one-rank torchrun run against
# a plain run, alternately (plain, torchrun, plain, torchrun), one H200 (nvidia-h200, carry .whl,
# timeout_s 540). cfg_lsa (batch 768), 400 steps each, metrics read back every 50 steps
# (train/steps_per_sec per window), one warm compile cache shared by all four runs (this compares
# step speed, not compile time). Results in $OUT: each run's metrics.jsonl and a summary.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d) NCCL_NVLS_ENABLE=0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
common=(--config-name cfg_lsa train.max_steps=400 train.eval_interval=100000 train.eval_max_examples=64
        train.log_every=50 logging.runs_dir=/tmp/runs logging.progress=false logging.wandb_mode=disabled)
for i in 1 2; do
  timeout 120 python3 pretrain.py "${common[@]}" logging.run_name=plain$i > "$OUT/plain$i.log" 2>&1; echo "plain$i rc=$?"
  timeout 120 torchrun --standalone --nproc_per_node=1 pretrain.py "${common[@]}" logging.run_name=ddp$i \
    > "$OUT/ddp$i.log" 2>&1; echo "ddp$i rc=$?"
done
python3 - "$OUT" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
rows = []
for name in ("plain1", "ddp1", "plain2", "ddp2"):
    path = glob.glob(f"/tmp/runs/*/{name}/metrics.jsonl")
    if not path:
        print(name, "no metrics"); continue
    recs = [json.loads(l) for l in open(path[0])]
    rates = [r["train/steps_per_sec"] for r in recs if "train/steps_per_sec" in r and r["step"] > 100]
    med = statistics.median(rates)
    rows.append((name, med))
    print(f"{name}: median steps/s over {len(rates)} windows after step 100: {med:.3f}  windows {[round(x, 3) for x in rates]}")
    open(f"{out}/{name}.metrics.jsonl", "w").write(open(path[0]).read())
plain = statistics.mean(m for n, m in rows if n.startswith("plain"))
ddp = statistics.mean(m for n, m in rows if n.startswith("ddp"))
print(f"plain {plain:.3f} steps/s, one-rank torchrun {ddp:.3f} steps/s: {100 * (ddp / plain - 1):+.2f}%")
PY
