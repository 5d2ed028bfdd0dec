cd /work/wt-lengen && . /work/main/.venv/bin/activate
export PYTHONUNBUFFERED=1
date -u +%FT%TZ
/usr/bin/time -f "pretrain wall %e s" python pretrain.py --config-name cfg_arith_lengen_cpu logging.run_name=lengen-cpu-2026-12-03 logging.wandb_mode=disabled logging.progress=false train.max_train_seconds=660 > /tmp/lg/train.log 2>&1
echo "train rc=$?"
for split in val test; do
  /usr/bin/time -f "evaluate $split wall %e s" python scripts/evaluate.py --checkpoint runs/trm-arith-lengen-cpu/lengen-cpu-2026-12-03 --split $split > /tmp/lg/eval_$split.log 2>&1
  echo "eval $split rc=$?"
done
date -u +%FT%TZ
touch /tmp/lg/DONE
