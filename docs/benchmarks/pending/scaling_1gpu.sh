#!/usr/bin/env bash
# Issue 20 item 3: the LSA scaling table on ONE H200, one size per device call. Each call is one
# cold 400-second run of `cfg_lsa_400s` at one n, alone on the GPU (so the budget is 400 s of
# wall time for every n, compile included; no GPU sharing), through scripts/scaling.py itself:
#   bash docs/benchmarks/pending/scaling_1gpu.sh SIZE [overrides...]
#   CONFIG=cfg_arith_mul bash docs/benchmarks/pending/scaling_1gpu.sh DIGITS [overrides...]   # issue 21, item 1
# (CONFIG: cfg_lsa_400s by default, the size n; cfg_arith_mul, the size max_digits, run prefix mul400,
# budget from the overrides, e.g. train.max_train_seconds=400 optim.lr_schedule_clock=time
# train.max_steps=100000. What follows describes the LSA calls.)
# as run(kind "nvidia-h200", timeout_s 590, carry [".whl"]), from the repository root with the
# wheelhouse in .whl (matplotlib included: scaling.py draws its one-row plot). SIZE: 4, 6, 9, 12,
# 16. Overrides go to every pretrain.py of the sweep (scaling.py refuses the ones it sets itself:
# the size, data.path's size, logging.run_name, logging.runs_dir).
#
# The run: `python3 scripts/scaling.py --config-name cfg_lsa_400s --sizes SIZE --prefix lsa400
# --runs-dir <fresh tmp> --out <fresh tmp> logging.progress=false logging.wandb_mode=disabled`:
# scaling.py builds that n's dataset (data/lsa-<n>x<n>-10k-aug10: 10k originals x 11, 1k test,
# costs 1..100), then trains run `lsa400-n<SIZE>` (project trm-lsa). The budget is the config's:
# 400 s of training or 7,700 steps, whichever comes first, the same for every n. At small n the
# step cap may come first (n = 9 did 7,397 steps in 400 s), and the curriculum is timed on the
# 400 s (H1/L2 until 120 s, H2/L4 until 240 s, then the full H3/L6): a run that reaches 7,700
# steps before 240 s never trains at the full depth that evaluation uses. The table's steps and
# train-seconds columns and this script's summary (the "depth curriculum from step" lines) show
# whether that happened. The calls to make for the table therefore lift the cap and put the LR
# on the clock (the schedule Sudoku's recipe ships with), the same overrides at every n, n = 9
# included, and the table says so:
#   bash docs/benchmarks/pending/scaling_1gpu.sh N optim.lr_schedule_clock=time train.max_steps=100000
# so every n trains 400 s with its curriculum phases at 120 s and 240 s and the LR at its floor at
# the end, however many steps each n's step time allows.
#
# Measured on the H200, 2026-12-03 (docs/benchmarks/2026-12-03-lsa-scaling): whole calls of 449 s (n = 4),
# 446 s (n = 6), 460 s (n = 12), install ~7 s, build 12 s at n = 12 and 22 s at n = 16; peak memory
# 6.7 / 10.9 / 32.6 GiB at n = 4 / 6 / 12 and 55.2 GiB at n = 16 (a 150-s probe). The estimates below
# were written before those calls.
# Call time (not measured on the GPU host; the parts that were measured say where):
#   - pip install of .whl: not measured (its wheels are cp312, this machine's Python 3.11).
#   - dataset build (single-threaded: LSA's builder has no workers, so the host's 16 cores do
#     not help), measured on the 2-core development machine, 2026-12-03, `/usr/bin/time -v python
#     scripts/build_data.py --config-name cfg_lsa_400s data.build_args.n=N
#     data.path=/tmp/scale1/data/lsa-NxN-10k-aug10 logging.progress=false`: n = 12 built in 7.9 s
#     (10.0 s wall with imports, 0.7 GB peak RSS); n = 16 built in 19.4 s (21.5 s wall, 1.0 GB).
#   - training: 400 s (the first step's compile, 12 s cold at n = 9, inside it) plus
#     evaluations, which the budget does not count: ~2.1 s each at n = 9 (the 2026-12-03 ship
#     run: 30 evaluations added 62 s), about x tokens/97 at other n (~6 s at n = 16), one per
#     1,000 steps and one at the end; plus process start and the last checkpoint, ~15-20 s.
#   - so about 440-500 s for n = 16, less for smaller n. A SIGTERM goes to scaling.py at 540 s
#     after this script started (it passes one SIGTERM on: the run checkpoints after the current
#     step and stops; SIGKILL 25 s later), so the call ends by ~570 s; a run stopped that way is
#     NOT a 400-second result and the summary says "PREEMPTED".
# Memory at n = 16 (reasoned, not measured): the n = 9 ship run's peak (torch.cuda.max_memory_
# allocated) was 8.9 / 14.4 / 19.9 GiB at H1/L2 / H2/L4 / H3/L6, i.e. ~2.75 GiB per application of
# the 2-layer network under gradient (TRM keeps gradients in the last H cycle only: L_cycles + 1 =
# 3, 5, 7 applications) on ~0.65 GiB of weights, optimizer state and data, at 97 tokens (81 + 16
# puzzle-embedding positions), batch 768, hidden 512. Activations grow with tokens (SDPA's fused
# attention keeps no seq x seq matrix): 272 / 97 = 2.8x gives ~55 GiB at n = 16; were the attention
# matrices kept (768 x 8 heads x 272^2 bf16 = 0.85 GiB each, 14 under gradient at full depth) it is
# ~67 GiB. Either way well inside the H200's ~139 GiB: n = 16 fits.
#
# What comes back in $OUT (6 files; the device returns at most 8, two folders deep):
#   machine.txt, scaling.log (scaling.py's output, each line stamped with the call's seconds: the
#   build ends where the run's command is printed), n<SIZE>.log (the run's log),
#   lsa400-n<SIZE>/{config.json,metrics.jsonl,run.json} (the run directory without its
#   checkpoints: what `scaling.py --report-only` reads).
#
# How to assemble the table from several calls (on the development machine, CPU): copy each
# call's files under one dated folder, the runs in a folder NOT named runs/ (.gitignore drops
# every runs/), then let scaling.py read them all:
#   D=docs/benchmarks/<date>-lsa-scaling
#   mkdir -p $D/calls/trm-lsa && cp -r <files_at>/lsa400-n12 $D/calls/trm-lsa/   # each call
#   cp <files_at>/n12.log $D/ && cp <files_at>/machine.txt $D/machine-n12.txt    # each call
#   python scripts/scaling.py --report-only --config-name cfg_lsa_400s --sizes 4,6,9,12,16 \
#     --prefix lsa400 --runs-dir $D/calls --out $D
# which writes $D/scaling.json, scaling.md and scaling.png (accuracy against n, equal budget).
# A row is its run's last evaluation: check each row's train seconds (400) or steps (7,700) and
# each call's summary (no PREEMPTED), since a run stopped early after an evaluation still reads.
# The report's Command is this --report-only line; each run's command is in its scaling.log. Later, `python scripts/scaling.py --out $D --report-only` redoes them from scaling.json. n = 9
# was measured by lsa_ship.sh (docs/benchmarks/2026-12-03-lsa-ship/seed0: 97.0% optimal cost at
# step 7,397, evaluated every 250 steps), a run named `ship` whose config.json was not kept: a call
# of this script at 9 gives the table a row of the same kind as the others (recommended), else
# leave 9 out of --sizes and cite the ship run beside the table.
#
# Dry run on CPU (the shape, not the GPU), 2026-12-03 on the development machine: the real
# recipe with a CPU device and a tiny budget and dataset; both ran through, the second stopped by
# its SIGTERM (STOP_AT=25) at step 4, checkpointed, copied back and summarised as PREEMPTED:
#   NO_INSTALL=1 OUT=/tmp/scale1/dry/out4 bash docs/benchmarks/pending/scaling_1gpu.sh 4 \
#     train.device=cpu train.global_batch_size=16 train.max_steps=4 train.eval_interval=2 \
#     data.build_args.num_train=30 data.build_args.num_test=12 data.path=/tmp/scale1/dry/data/lsa-9x9-tiny
#   STOP_AT=25 NO_INSTALL=1 OUT=/tmp/scale1/dry/out16 bash docs/benchmarks/pending/scaling_1gpu.sh 16 \
#     train.device=cpu train.global_batch_size=16 train.max_steps=100000 train.eval_interval=50000 \
#     data.build_args.num_train=30 data.build_args.num_test=12 data.path=/tmp/scale1/dry/data/lsa-9x9-tiny
# tests/test_pending_scripts.py runs this script with a stand-in python3 and plans the scaling.py
# command it passes at n = 4, 6, 9, 12, 16 through scaling.py itself (composed and validated).
set -uo pipefail
size=${1:?usage: [CONFIG=cfg_lsa_400s|cfg_arith_mul] scaling_1gpu.sh SIZE [overrides...]}
shift
cfg=${CONFIG:-cfg_lsa_400s}
case "$cfg" in
  cfg_lsa_400s) prefix=lsa400 arg=n ;;         # the task's size argument (evaluators/tasks.py: size_arg)
  cfg_arith_mul) prefix=mul400 arg=max_digits ;;
  *) echo "scaling_1gpu.sh: CONFIG=$cfg: expected cfg_lsa_400s or cfg_arith_mul" >&2; exit 2 ;;
esac
[[ $size =~ ^[0-9]+$ ]] || { echo "scaling_1gpu.sh: SIZE '$size' is not a whole number (4, 6, 9, 12, 16)" >&2; exit 2; }
t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
STOP_AT=${STOP_AT:-540}  # seconds after the start: SIGTERM to the sweep (the call's timeout_s is 590)
if [ -z "${NO_INSTALL:-}" ]; then  # NO_INSTALL=1: the CPU dry run, with the environment's own packages
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
# Cold: new, empty Inductor and Triton caches.
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) TRITON_CACHE_DIR=$(mktemp -d)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
work=$(mktemp -d)  # runs and scaling.py's own --out: fresh, even on a machine still warm from another call
name=$prefix-$arg$size  # scaling.py's run name; its log is $arg$size.log
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"; echo "cpus $(nproc)"; } \
  > "$OUT/machine.txt" 2>&1
echo "installed at $(elapsed) s"
timeout --foreground -s TERM -k 25 $(( STOP_AT - $(elapsed) )) python3 scripts/scaling.py --config-name "$cfg" \
  --sizes "$size" --prefix "$prefix" --runs-dir "$work/runs" --out "$work/report" \
  logging.progress=false logging.wandb_mode=disabled "$@" 2>&1 \
  | while IFS= read -r line; do echo "[$(elapsed) s] $line"; done > "$OUT/scaling.log"  # when the build ended
rc=${PIPESTATUS[0]}
echo "scaling.py rc $rc at $(elapsed) s"
cp "$work/report/$arg$size.log" "$OUT/" 2>/dev/null
run=$(find "$work/runs" -mindepth 2 -maxdepth 2 -type d -name "$name" 2>/dev/null | head -1)
if [ -n "$run" ]; then
  mkdir -p "$OUT/$name"
  for f in config.json metrics.jsonl run.json; do cp "$run/$f" "$OUT/$name/" 2>/dev/null; done
fi
grep -E "^\[[0-9]+ s\] (Building|n=$size: )" "$OUT/scaling.log" | cut -c1-200
[ -f "$OUT/$arg$size.log" ] && grep -E "^(run |depth curriculum|stopping|stopped at step)" "$OUT/$arg$size.log" | cut -c1-300
[ -f "$OUT/$arg$size.log" ] && tail -1 "$OUT/$arg$size.log" | cut -c1-600
[ $rc -ne 0 ] && tail -5 "$OUT/scaling.log" | cut -c1-600
if [ -f "$OUT/$name/metrics.jsonl" ]; then
  python3 - "$OUT/$name/metrics.jsonl" "$OUT/$arg$size.log" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print("first step", [r["perf/first_step_seconds"] for r in records if "perf/first_step_seconds" in r])
for r in records:
    if "eval/examples" in r:
        task = ", ".join(f"{k.split('/', 1)[1]} {100 * v:.1f}%" for k, v in r.items()  # eval/<task>/<name>
                         if k.startswith("eval/") and k.count("/") == 2 and not k.endswith(("count", "difference")))
        print(f"step {r['step']}: {r.get('train/seconds', float('nan')):.1f} s, exact {100 * r['eval/exact_accuracy']:.1f}%; "
              f"{task}; peak {r.get('perf/peak_memory_gib', float('nan')):.1f} GiB")
log = open(sys.argv[2]).read() if len(sys.argv) > 2 else ""
if "stopped at step" in log:
    print("PREEMPTED: the run was stopped before its budget ended; this is not a 400-second result")
PY
fi
echo "done at $(elapsed) s"
exit $rc
