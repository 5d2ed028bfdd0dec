#!/usr/bin/env bash
# Start a long LSA training run in a detached `screen` session, logging to logs/<name>.log.
#
#   bash train_lsa.sh                                   # cfg_lsa, run name lsa-<date>-<time>
#   bash train_lsa.sh train.max_train_seconds=400       # extra Hydra overrides pass through
#   CONFIG=cfg_lsa_cpu RUN_NAME=try1 bash train_lsa.sh  # another config or name
#   RUN_NAME=try1 bash train_lsa.sh train.resume=true   # continue run try1 (same overrides as before)
#
# Before screen starts, the config and the run directory are checked (`pretrain.py --check`):
# a bad key, an existing run name or a missing run to resume is reported here, exit code 2.
# Then it waits until training has started (or died: its error is shown, exit code 1).
# The run directory is runs/<project>/<name>; the screen session and log file share the name.
# The log holds the run's lines without the progress bar's redraws. Stop a run (it writes a
# checkpoint first) with Ctrl-C inside the session, or from outside: screen -S NAME -X stuff $'\003'
set -euo pipefail
cd "$(dirname "$0")"

CONFIG=${CONFIG:-cfg_lsa}
NAME=${RUN_NAME:-lsa-$(date +%Y%m%d-%H%M%S)}
PYTHON=${PYTHON:-python}
LOG_DIR=${LOG_DIR:-logs}
SCREEN=${SCREEN:-screen}
START_TIMEOUT=${START_TIMEOUT:-120}  # seconds to wait for the run's first line before returning anyway

overrides=""
(($#)) && overrides=$(printf ' %q' "$@")
overrides_without_resume=$(for a in "$@"; do [[ $a == train.resume=* ]] || printf ' %q' "$a"; done)
train_cmd=$(printf '%q ' "$PYTHON" pretrain.py --config-name "$CONFIG" "logging.run_name=$NAME")
train_cmd=${train_cmd% }$overrides
foreground=$train_cmd

session_alive() {  # is there a screen session named exactly $NAME?
  "$SCREEN" -ls 2>/dev/null | awk -v n="$NAME" '{ i = index($1, "."); if (i && substr($1, i + 1) == n) f = 1 } END { exit !f }'
}

if ! command -v "$SCREEN" >/dev/null 2>&1; then
  echo "error: 'screen' is not installed (apt-get install screen); or run in the foreground: $foreground" >&2
  exit 2
fi
if session_alive; then
  echo "error: a screen session named '$NAME' already exists (set RUN_NAME, or attach: $SCREEN -r $NAME)" >&2
  exit 2
fi

# ----- check the config, the run directory and the data before starting anything -------------
run_dir=$("$PYTHON" pretrain.py --check --config-name "$CONFIG" "logging.run_name=$NAME" "$@") || exit $?

# ----- start: python | tee to the session's terminal | progress-bar frames stripped -> log ----
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/$NAME.log"
: >> "$LOG"
log_size=$(wc -c < "$LOG")
# tee -i and the filter ignore SIGINT: Ctrl-C stops training (which checkpoints and exits), not
# the logging of it. sed keeps what follows the last carriage return of each line (a message
# printed over a progress bar), then drops what is left of progress bars: frames committed by
# a newline ("NN%|"), nested bars (cursor-up escapes), empty lines.
strip='s/.*\r//; /\x1b\[A/d; /[0-9]%|/d; /^$/d'
"$SCREEN" -dmS "$NAME" bash -c "export PYTHONUNBUFFERED=1; $train_cmd 2>&1 | tee -i /dev/fd/2 \
  | (trap '' INT; exec sed -u '$strip') >> $(printf '%q' "$LOG"); exit \${PIPESTATUS[0]}"

# ----- wait until training has started, or report why it did not --------------------------------
deadline=$((SECONDS + START_TIMEOUT))
while :; do
  if tail -c +$((log_size + 1)) "$LOG" | grep -qF "run $NAME: "; then
    break
  fi
  if ! session_alive; then
    echo "error: run '$NAME' stopped before training started; the end of $LOG:" >&2
    tail -c +$((log_size + 1)) "$LOG" | tail -n 5 | sed 's/^/  /' >&2
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    echo "note: run '$NAME' has not started training after ${START_TIMEOUT} s (building its dataset?); it" \
         "keeps going in the background"
    break
  fi
  sleep 0.5
done

echo "started run '$NAME' (config $CONFIG) in screen session '$NAME'; run directory $run_dir"
echo "  log:        tail -f $LOG"
echo "  attach:     $SCREEN -r $NAME   (detach again: Ctrl-a d)"
echo "  stop:       $SCREEN -S $NAME -X stuff \$'\\003'   (Ctrl-C in the session: checkpoint, then exit)"
echo "  continue:   CONFIG=$CONFIG RUN_NAME=$NAME bash train_lsa.sh${overrides_without_resume} train.resume=true"
echo "  foreground: $foreground"
