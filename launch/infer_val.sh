#!/usr/bin/env bash
# Masks of a trained snapshot for a file list: <OUTPUT_DIR>/<DATASET>/<EXP>/<SAVE_ID>/<list name>/{<id>.png,crf/,vis/}.
# Set the variables below, or pass them in the environment:
#   OUTPUT_DIR=results EXP=main RUN_ID=v01 SNAPSHOT=e020Xs0.928 EXTRA_ARGS="--set TEST.DATA_ROOT ./data" \
#     bash launch/infer_val.sh
# The snapshot is snapshots/<DATASET>/<EXP>/<RUN_ID>/model_enc_<SNAPSHOT>.pth. Next to the output folder go
# <folder>.head (git commit), <folder>.diff (uncommitted changes), <folder>.cmd (the command) and <folder>.log.
# FOREGROUND=1 runs in the foreground (no nohup, no tail) and exits with the command's status.
# Relative paths are relative to the repository root.
set -eo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

# default settings (DATASET=coco: configs/coco_resnet38.yaml and data/coco/val_coco.txt)
: "${DATASET:=pascal_voc}"
if [ "$DATASET" = coco ]; then
  : "${CONFIG:=configs/coco_resnet38.yaml}"
  : "${FILELIST:=data/coco/val_coco.txt}" # validation
else
  : "${CONFIG:=configs/voc_resnet38.yaml}"
  : "${FILELIST:=data/val_voc.txt}" # validation
fi

## Your values here:
#
: "${OUTPUT_DIR:=}"
: "${EXP:=}"
: "${RUN_ID:=}"
: "${SNAPSHOT:=}"
: "${EXTRA_ARGS:=}"
: "${SAVE_ID:=$RUN_ID}"
#

: "${NUM_THREADS:=6}"
: "${FOREGROUND:=0}"
export OMP_NUM_THREADS=$NUM_THREADS

require_vars OUTPUT_DIR EXP RUN_ID SNAPSHOT

LISTNAME=$(basename "$FILELIST" .txt)
SAVE_DIR=$OUTPUT_DIR/$DATASET/$EXP/$SAVE_ID/$LISTNAME
LOG_FILE=$OUTPUT_DIR/$DATASET/$EXP/$SAVE_ID/$LISTNAME.log

# shellcheck disable=SC2206
[ -n "$EXTRA_ARGS" ] && EXTRA=($EXTRA_ARGS) || EXTRA=()
CMD=(python infer_val.py --dataset "$DATASET" --cfg "$CONFIG" --exp "$EXP" --run "$RUN_ID" --resume "$SNAPSHOT"
     --infer-list "$FILELIST" --workers "$NUM_THREADS" --mask-output-dir "$SAVE_DIR" "${EXTRA[@]}")

if ! mkdir -p "$SAVE_DIR"; then
  echo "error: cannot create $SAVE_DIR; choose a writable OUTPUT_DIR" >&2
  exit 2
fi
git rev-parse HEAD > "${SAVE_DIR}.head" 2>/dev/null || echo "(not a git checkout)" > "${SAVE_DIR}.head"
git diff > "${SAVE_DIR}.diff" 2>/dev/null || true
echo "${CMD[*]}" > "${SAVE_DIR}.cmd"

echo "${CMD[*]}"
echo "Log: $LOG_FILE"
run_logged "$LOG_FILE" "${CMD[@]}"
