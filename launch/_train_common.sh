#!/usr/bin/env bash
# The shared part of launch/run_voc_*.sh, launch/run_bsl_*.sh and launch/run_torchrun.sh (sourced, not run).
# The sourcing script sets CONFIG, MODEL_SETS (--set pairs of its own, e.g. the baseline's) and optionally RUNNER
# (the launcher, default: python), and DS/EXP/RUN_ID as the original's templates.
#
# Environment: EXP, RUN_ID (required), DS (pascal_voc), LOGDIR (./logs), SNAPSHOT_DIR (./snapshots),
# EXTRA_ARGS (more train.py arguments; its --set pairs join the script's after one --set, later ones win),
# FOREGROUND=1 (run in the foreground, output to the terminal and the log; exit status of train.py).
# Relative paths are relative to the repository root, where the run starts.
set -eo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source tools/setup_env.sh

: "${DS:=pascal_voc}"
: "${LOGDIR:=./logs}"
: "${SNAPSHOT_DIR:=./snapshots}"
: "${EXTRA_ARGS:=}"
: "${FOREGROUND:=0}"
[ -n "${RUNNER+x}" ] || RUNNER=(python)
[ -n "${MODEL_SETS+x}" ] || MODEL_SETS=()

for v in EXP RUN_ID; do
  if [ -z "${!v}" ]; then
    echo "error: $v is empty; set it at the top of $0 or in the environment (e.g. EXP=v01 RUN_ID=r01 bash $0)" >&2
    exit 2
  fi
done

# EXTRA_ARGS: the --set pairs go after a single --set (argparse's --set takes every token up to the next option)
# shellcheck disable=SC2206
EXTRA=($EXTRA_ARGS)
OTHER=()
SETS=("${MODEL_SETS[@]}")
in_set=0
for tok in "${EXTRA[@]}"; do
  if [ "$tok" = "--set" ]; then
    in_set=1
  elif [ "$in_set" = 1 ] && [[ "$tok" != --* ]]; then
    SETS+=("$tok")
  else
    in_set=0
    OTHER+=("$tok")
  fi
done

# --run-id is train.py's --run under a name torchrun's parser does not take for an abbreviation of its --run-path
CMD=("${RUNNER[@]}" train.py --dataset "$DS" --cfg "$CONFIG" --exp "$EXP" --run-id "$RUN_ID"
     --logdir "$LOGDIR" --snapshot-dir "$SNAPSHOT_DIR" "${OTHER[@]}")
[ "${#SETS[@]}" -gt 0 ] && CMD+=(--set "${SETS[@]}")

LOG_FILE="$LOGDIR/$DS/$EXP/$RUN_ID.log"
mkdir -p "$(dirname "$LOG_FILE")"
echo "${CMD[*]}"
echo "Log: $LOG_FILE"
if [ "$FOREGROUND" = 1 ]; then
  "${CMD[@]}" 2>&1 | tee "$LOG_FILE"
  exit "${PIPESTATUS[0]}"
fi
nohup "${CMD[@]}" > "$LOG_FILE" 2>&1 &
sleep 1
tail -f "$LOG_FILE"
