#!/usr/bin/env bash
# One nvidia-h200, runs one after another (no second lane competing for the host):
# SwiGLU/cat variants of variants.py, attention and MLP, training only.
set -u
out=${OUT:-/tmp/out}; mkdir -p "$out"
V="python3 docs/benchmarks/2026-11-22-speed3/variants.py"
B="scripts/benchmark.py --config-name cfg_lsa logging.runs_dir=/tmp/runs data.path=/tmp/d0 --windows 3 --eval-passes 0"
run() { local v=$1; shift; local name=$1; shift; $V $v $B "$@" > "$out/seq_${name}.log" 2>&1;
        grep -E "steps/s|peak memory" "$out/seq_${name}.log" | tr -s ' ' | paste -sd' ' | sed "s/^/$name: /"; }
run split att_split
run split mlp_split arch=trm_mlp
run base att_base
run base mlp_base arch=trm_mlp
run split+concat att_split_concat
run split+concat mlp_split_concat arch=trm_mlp
run split+concat+ropecat att_split_concat_ropecat
