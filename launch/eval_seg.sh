#!/usr/bin/env bash
# mIoU of the masks infer_val.py wrote: the plain ones and the CRF ones, each into its own <dir>.eval file.
# Set the variables below, or pass them in the environment:
#   OUTPUT_DIR=results EXP=main RUN_ID=v01 bash launch/eval_seg.sh
# RUN_ID must equal the SAVE_ID of launch/infer_val.sh. Relative paths are relative to the repository root.
# FOREGROUND=1 runs both evaluations one after the other in the foreground (no nohup, no tail) and exits
# non-zero if one fails; EXTRA_ARGS goes to eval_seg.py (e.g. EXTRA_ARGS=--allow-problems).
set -eo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

# DATASET=coco: the 81 COCO classes, data/coco/val_coco.txt under ./data/coco
: "${DATASET:=pascal_voc}"
if [ "$DATASET" = coco ]; then
  : "${FILELIST:=data/coco/val_coco.txt}" # validation
  : "${DATA_ROOT:=./data/coco}"
else
  : "${FILELIST:=data/val_voc.txt}" # validation
  : "${DATA_ROOT:=./data}"
fi

## Your values here:
#
: "${OUTPUT_DIR:=}"
: "${EXP:=}"
: "${RUN_ID:=}"
#
: "${WORKERS:=}"
: "${EXTRA_ARGS:=}"
: "${FOREGROUND:=0}"

require_vars OUTPUT_DIR EXP RUN_ID

LISTNAME=$(basename "$FILELIST" .txt)
BASE_DIR=$OUTPUT_DIR/$DATASET/$EXP/$RUN_ID/$LISTNAME
if [ ! -d "$BASE_DIR" ]; then
  echo "error: no masks in $BASE_DIR; run launch/infer_val.sh with SAVE_ID=$RUN_ID and FILELIST=$FILELIST first" >&2
  exit 2
fi
ARGS=(--dataset "$DATASET" --data "$DATA_ROOT" --filelist "$FILELIST")
[ -n "$WORKERS" ] && ARGS+=(--workers "$WORKERS")
# shellcheck disable=SC2206
[ -n "$EXTRA_ARGS" ] && EXTRA=($EXTRA_ARGS) || EXTRA=()

# <masks> -> <masks>.eval (the report) and <masks>.scores.log (per-image ranking; one file per evaluation, so
# that the two concurrent evaluations do not write the same ./scores.log)
evaluate() {
  local save_dir="$1"
  local cmd=(python eval_seg.py "${ARGS[@]}" --masks "$save_dir" --log-scores "$save_dir.scores.log" "${EXTRA[@]}")
  echo "${cmd[*]}"
  if [ "$FOREGROUND" = 1 ]; then
    "${cmd[@]}" > "$save_dir.eval" 2>&1 || { echo "error: evaluation of $save_dir failed; see $save_dir.eval" >&2; tail -n 1 "$save_dir.eval" >&2; return 2; }
    tail -n 3 "$save_dir.eval"
  else
    nohup "${cmd[@]}" > "$save_dir.eval" 2>&1 &
  fi
}

STATUS=0
# without CRF
SAVE_DIR=$BASE_DIR
evaluate "$SAVE_DIR" || STATUS=$?

# with CRF (absent when inference ran with --no-crf)
if [ -d "$BASE_DIR/crf" ]; then
  SAVE_DIR=$BASE_DIR/crf
  evaluate "$SAVE_DIR" || STATUS=$?
else
  echo "no $BASE_DIR/crf: skipping the CRF evaluation"
fi

if [ "$FOREGROUND" = 1 ]; then
  exit $STATUS
fi
sleep 1
echo "Log: ${SAVE_DIR}.eval"
tail -f "$SAVE_DIR.eval"
