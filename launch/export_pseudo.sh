#!/usr/bin/env bash
# Pseudo labels for a second stage: the masks of a trained snapshot for a whole training list, "clean" (the
# image's GT labels pick the classes, TEST.USE_GT_LABELS True), with and without CRF, then their quality on the
# list's GT masks. Runs launch/infer_val.sh and launch/eval_seg.sh in the foreground, with the same variables:
#   OUTPUT_DIR=results EXP=v01 RUN_ID=r01 SNAPSHOT=e020Xs0.928 SAVE_ID=r01-pseudo bash launch/export_pseudo.sh
# writes <OUTPUT_DIR>/<DATASET>/<EXP>/<SAVE_ID>/<list name>/<id>.png (class indices 0..20, what
# DATASET.MASK_DIR reads) and crf/<id>.png, vis/ for a look, and next to them <folder>.eval and <folder>/crf.eval
# (eval_seg.py's report; eval.json inside each folder). FILELIST defaults to data/train_augvoc.txt, DATA_ROOT (the
# GT's root for the evaluation) to ./data; EXTRA_ARGS go to infer_val.py (its --set pairs join
# TEST.USE_GT_LABELS True after one --set). Relative paths are relative to the repository root.
set -eo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

: "${FILELIST:=data/train_augvoc.txt}"
: "${EXTRA_ARGS:=}"
: "${RUN_ID:=}"
: "${SAVE_ID:=$RUN_ID}"

# the user's --set pairs and ours after a single --set
SETS=()
split_extra_args "$EXTRA_ARGS"
SETS+=(TEST.USE_GT_LABELS True)

export FILELIST SAVE_ID FOREGROUND=1 EXTRA_ARGS="${OTHER[*]} --set ${SETS[*]}"
bash launch/infer_val.sh
# eval_seg.sh finds the masks under RUN_ID, which is infer_val.sh's SAVE_ID; it takes no infer_val.py arguments
RUN_ID="$SAVE_ID" EXTRA_ARGS="" bash launch/eval_seg.sh

: "${DATASET:=pascal_voc}"
SAVE_DIR=$OUTPUT_DIR/$DATASET/$EXP/$SAVE_ID/$(basename "$FILELIST" .txt)
echo "Pseudo labels: $SAVE_DIR (with CRF: $SAVE_DIR/crf)"
echo "Second stage: --set TRAIN.FULLY_SUPERVISED True DATASET.MASK_DIR $SAVE_DIR/crf"
