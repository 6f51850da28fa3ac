#!/usr/bin/env bash
# The shared part of launch/run_voc_*.sh, launch/run_bsl_*.sh and launch/run_torchrun.sh (sourced, not run).
# The sourcing script sets CONFIG, MODEL_SETS (--set pairs of its own, e.g. the baseline's) and optionally RUNNER
# (the launcher, default: python), and DS/EXP/RUN_ID as the templates of SPEC 10.
#
# Environment: EXP, RUN_ID (required), DS (pascal_voc), LOGDIR (./logs), SNAPSHOT_DIR (./snapshots),
# EXTRA_ARGS (more train.py arguments; its --set pairs join the script's after one --set, later ones win),
# FOREGROUND=1 (run in the foreground, output to the terminal and the log; exit status of train.py).
# Relative paths are relative to the repository root, where the run starts.
set -eo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

: "${DS:=pascal_voc}"
: "${LOGDIR:=./logs}"
: "${SNAPSHOT_DIR:=./snapshots}"
: "${EXTRA_ARGS:=}"
: "${FOREGROUND:=0}"
[ -n "${RUNNER+x}" ] || RUNNER=(python)
[ -n "${MODEL_SETS+x}" ] || MODEL_SETS=()

require_vars EXP RUN_ID

# EXTRA_ARGS: its --set pairs join the script's after one --set (later ones win)
SETS=("${MODEL_SETS[@]}")
split_extra_args "$EXTRA_ARGS"

# --run-id is train.py's --run under a name torchrun's parser does not take for an abbreviation of its --run-path
CMD=("${RUNNER[@]}" train.py --dataset "$DS" --cfg "$CONFIG" --exp "$EXP" --run-id "$RUN_ID"
     --logdir "$LOGDIR" --snapshot-dir "$SNAPSHOT_DIR" "${OTHER[@]}")
[ "${#SETS[@]}" -gt 0 ] && CMD+=(--set "${SETS[@]}")

LOG_FILE="$LOGDIR/$DS/$EXP/$RUN_ID.log"
mkdir -p "$(dirname "$LOG_FILE")"
echo "${CMD[*]}"
echo "Log: $LOG_FILE"
run_logged "$LOG_FILE" "${CMD[@]}"
