#!/usr/bin/env bash
# Start a long LSA training run in a detached `screen` session, logging to logs/<name>.log.
#
#   bash train_lsa.sh                                   # cfg_lsa, run name lsa-<date>-<time>
#   bash train_lsa.sh train.max_train_seconds=400       # extra Hydra overrides pass through
#   CONFIG=cfg_lsa_cpu RUN_NAME=try1 bash train_lsa.sh  # another config or name
#
# The run directory is runs/<project>/<name>; the screen session has the same name.
set -euo pipefail
cd "$(dirname "$0")"

CONFIG=${CONFIG:-cfg_lsa}
NAME=${RUN_NAME:-lsa-$(date +%Y%m%d-%H%M%S)}
PYTHON=${PYTHON:-python}
LOG_DIR=${LOG_DIR:-logs}

if ! command -v screen >/dev/null 2>&1; then
  echo "error: 'screen' is not installed (e.g. apt install screen); or run in the foreground:" \
       "$PYTHON pretrain.py --config-name $CONFIG" >&2
  exit 2
fi
if screen -ls 2>/dev/null | grep -q "[.]$NAME[[:space:]]"; then
  echo "error: a screen session named '$NAME' already exists (set RUN_NAME)" >&2
  exit 2
fi

mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/$NAME.log"
cmd=$(printf '%q ' "$PYTHON" pretrain.py --config-name "$CONFIG" "logging.run_name=$NAME" "$@")
# PYTHONUNBUFFERED: the log fills as the run goes. tee -i: Ctrl-C stops training (which then
# checkpoints and exits), not the logging of it.
screen -dmS "$NAME" bash -c "export PYTHONUNBUFFERED=1; $cmd 2>&1 | tee -i -a $(printf '%q' "$LOG"); exit \${PIPESTATUS[0]}"

echo "started run '$NAME' (config $CONFIG) in screen session '$NAME'"
echo "  log:    $LOG   (tail -f $LOG)"
echo "  attach: screen -r $NAME   (detach again: Ctrl-a d)"
