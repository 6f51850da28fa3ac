#!/usr/bin/env bash
# The whole method end to end on the synthetic dataset, on CPU, in minutes:
#   generate data -> train the CAM baseline, the single-stage model and a fully supervised reference (train.py)
#   -> multi-scale inference with and without CRF (infer_val.py) -> mIoU (eval_seg.py)
#   -> raw and PAMR-refined masks at their best background threshold on val (tools/eval_cam.py)
#   -> pseudo-label quality on train (tools/eval_pseudo.py)
#   -> second stage: the single-stage model's pseudo labels of train_aug (GT image labels, CRF) train the same
#      network fully supervised (DATASET.MASK_DIR), evaluated on val -> report (tools/demo_report.py)
# The models start from the ImageNet-pretrained EfficientNet-Lite0 (configs/demo_*.yaml), on the generator's
# "default" preset; DEMO_MODELS=scratch takes the light ResNet-18 trained from scratch (configs/demo_scratch_*.yaml),
# DEMO_DIFFICULTY=easy|hard another preset. Other choices than these two defaults get their own data, results,
# snapshots and logs (data/synthetic_<difficulty>, results/demo_<models>_<difficulty>, experiment of that name).
#
# usage: bash launch/demo.sh [--clean]
#   --clean   start over (removes the demo's data, snapshots, logs and results)
# Every stage reuses what an earlier run left (data, snapshots, masks), so a second run is quick.
# Each stage's time goes to $DEMO_OUT/stage_times.tsv (a reused stage keeps the time of the run that did it).
# Environment knobs (the test uses them for a shortened run): DEMO_DATA, DEMO_OUT, DEMO_EXP, DEMO_SEED,
# DEMO_TRAIN, DEMO_VAL, DEMO_TEST, DEMO_SIZE, DEMO_DIFFICULTY (default), DEMO_MODELS (pretrained), DEMO_EPOCHS,
# DEMO_ITERS, DEMO_WORKERS, DEMO_SETS (extra --set pairs for every stage), DEMO_SNAPSHOT_DIR, DEMO_LOGDIR.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CLEAN=0
for a in "$@"; do
  case "$a" in
    --clean) CLEAN=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $a (use --clean or --help)" >&2; exit 2 ;;
  esac
done

T0=$SECONDS
TIMES=""  # the stage-time file, once the output directory is known
stage() { STAGE="$1"; STAGE_T=$SECONDS; REUSED=0; echo "[demo] >>> $1"; }
reuse() { REUSED=1; echo "[demo] reusing $1"; }
done_stage() {
  local took=$((SECONDS - STAGE_T))
  echo "[demo] <<< $STAGE: $took s"
  if [ -n "$TIMES" ] && { [ "$REUSED" = 0 ] || ! awk -F '\t' -v s="$STAGE" '$1 == s {f = 1} END {exit !f}' \
                                                   "$TIMES" 2>/dev/null; }; then
    # one line per stage (name, seconds): replaced when the stage runs again
    { [ -f "$TIMES" ] && awk -F '\t' -v s="$STAGE" '$1 != s' "$TIMES"; printf '%s\t%s\n' "$STAGE" "$took"; } \
      > "$TIMES.tmp" && mv "$TIMES.tmp" "$TIMES"
  fi
}

stage "environment"
source tools/setup_env.sh
done_stage

DIFFICULTY="${DEMO_DIFFICULTY:-default}"
MODELS="${DEMO_MODELS:-pretrained}"
case "$MODELS" in
  pretrained) CFG=configs/demo ;;
  scratch) CFG=configs/demo_scratch ;;
  *) echo "error: DEMO_MODELS is $MODELS; use pretrained (EfficientNet-Lite0) or scratch (ResNet-18)" >&2; exit 2 ;;
esac
TAG=""
[ "$MODELS/$DIFFICULTY" != pretrained/default ] && TAG="_${MODELS}_${DIFFICULTY}"
DATA="${DEMO_DATA:-data/synthetic_$DIFFICULTY}"
OUT="${DEMO_OUT:-results/demo$TAG}"
EXP="${DEMO_EXP:-demo$TAG}"
SEED="${DEMO_SEED:-0}"
WORKERS="${DEMO_WORKERS:-2}"
DS=pascal_voc
SNAP_BASE="${DEMO_SNAPSHOT_DIR:-snapshots}"
LOG_BASE="${DEMO_LOGDIR:-logs}"
SETS=(DATASET.ROOT "$DATA" TEST.DATA_ROOT "$DATA")
RUN_SETS=()  # --set pairs of one stage
[ -n "${DEMO_EPOCHS:-}" ] && SETS+=(TRAIN.NUM_EPOCHS "$DEMO_EPOCHS")
[ -n "${DEMO_ITERS:-}" ] && SETS+=(TRAIN.MAX_ITERS "$DEMO_ITERS")
# shellcheck disable=SC2206
[ -n "${DEMO_SETS:-}" ] && SETS+=(${DEMO_SETS})

if [ "$CLEAN" = 1 ]; then
  echo "[demo] --clean: removing $DATA, $OUT, $SNAP_BASE/$DS/$EXP, $LOG_BASE/$DS/$EXP"
  rm -rf "$DATA" "$OUT" "$SNAP_BASE/$DS/$EXP" "$LOG_BASE/$DS/$EXP"
fi
mkdir -p "$OUT"
TIMES="$OUT/stage_times.tsv"

stage "synthetic dataset ($DATA)"
GEN=(--out "$DATA" --seed "$SEED" --difficulty "$DIFFICULTY" --workers "$WORKERS")
[ -n "${DEMO_TRAIN:-}" ] && GEN+=(--num-train "$DEMO_TRAIN")
[ -n "${DEMO_VAL:-}" ] && GEN+=(--num-val "$DEMO_VAL")
[ -n "${DEMO_TEST:-}" ] && GEN+=(--num-test "$DEMO_TEST")
[ -n "${DEMO_SIZE:-}" ] && GEN+=(--size "$DEMO_SIZE")
if [ -f "$DATA/val_voc.txt" ] && [ -f "$DATA/synthetic.json" ]; then
  reuse "$DATA (bash launch/demo.sh --clean to regenerate)"
else
  python tools/make_synthetic.py "${GEN[@]}"
fi
done_stage

# the snapshot a finished run left: the best-scoring one (the highest Xs score, SPEC 7.5)
best_suffix() {
  python - "$1" <<'PY'
import glob, os, re, sys
best = None
for f in glob.glob(os.path.join(sys.argv[1], "model_enc_*.pth")):
    m = re.match(r"model_enc_e(\d+)Xs([\.\d+\-]+)\.pth$", os.path.basename(f))
    if m and (best is None or float(m.group(2)) >= best[0]):
        best = (float(m.group(2)), os.path.basename(f)[len("model_enc_"):-len(".pth")])
print(best[1] if best else "")
PY
}

train() {  # train <run> <config>
  local run="$1" cfg="$2" snap="$SNAP_BASE/$DS/$EXP/$1"
  stage "train $run ($cfg)"
  if [ -f "$OUT/$run.done" ] && [ -n "$(best_suffix "$snap")" ]; then
    reuse "$snap"
  else
    rm -rf "$snap" "$LOG_BASE/$DS/$EXP/$run"
    python train.py --dataset "$DS" --cfg "$cfg" --exp "$EXP" --run "$run" --workers "$WORKERS" \
      --snapshot-dir "$SNAP_BASE" --logdir "$LOG_BASE" \
      --random-seed "$SEED" --set "${SETS[@]}" "${RUN_SETS[@]}"
    touch "$OUT/$run.done"
  fi
  done_stage
}

infer() {  # infer <run> <config> <list> <out> [extra args]
  local run="$1" cfg="$2" list="$3" dst="$4"; shift 4
  stage "infer $run on $(basename "$list")"
  if [ -f "$dst/eval.json" ]; then
    reuse "$dst"
  else
    python infer_val.py --dataset "$DS" --cfg "$cfg" --exp "$EXP" --run "$run" \
      --snapshot-dir "$SNAP_BASE" --logdir "$LOG_BASE" --resume "$(best_suffix "$SNAP_BASE/$DS/$EXP/$run")" --infer-list "$list" --mask-output-dir "$dst" \
      --workers "$WORKERS" "$@" --set "${SETS[@]}" "${RUN_SETS[@]}"
    python eval_seg.py --data "$DATA" --filelist "$list" --masks "$dst" --log-scores "$dst.scores.log" > "$dst.eval"
    [ -d "$dst/crf" ] && python eval_seg.py --data "$DATA" --filelist "$list" --masks "$dst/crf" --log-scores "$dst/crf.scores.log" > "$dst/crf.eval"
    tail -n 3 "$dst.eval"
  fi
  done_stage
}

snapshot_of() {  # the model_enc_*.pth of a finished run
  echo "$SNAP_BASE/$DS/$EXP/$1/model_enc_$(best_suffix "$SNAP_BASE/$DS/$EXP/$1").pth"
}

cam_sweep() {  # cam_sweep <run> <config> <list> <out>: the scores, and the masks at the best threshold as PNGs
  local run="$1" cfg="$2" list="$3" dst="$4"
  stage "best background threshold of $run on $(basename "$list")"
  if [ -f "$dst/eval_cam.json" ]; then
    reuse "$dst"
  else
    python tools/eval_cam.py --cfg "$cfg" --set "${SETS[@]}" --snapshot "$(snapshot_of "$run")" \
      --root "$DATA" --list "$list" --out "$dst" --png
  fi
  done_stage
}

pseudo() {  # pseudo <run> <config> <list> <out>
  local run="$1" cfg="$2" list="$3" dst="$4"
  stage "pseudo-label quality of $run on $(basename "$list")"
  if [ -f "$dst/pseudo.json" ]; then
    reuse "$dst"
  else
    python tools/eval_pseudo.py --cfg "$cfg" --set "${SETS[@]}" \
      --snapshot "$(snapshot_of "$run")" \
      --root "$DATA" --list "$list" --out "$dst"
  fi
  done_stage
}

train bsl "${CFG}_bsl.yaml"
train ae "${CFG}_ae.yaml"
train sup "${CFG}_sup.yaml"

infer bsl "${CFG}_bsl.yaml" "$DATA/val_voc.txt" "$OUT/bsl/val" --no-crf
infer ae "${CFG}_ae.yaml" "$DATA/val_voc.txt" "$OUT/ae/val"
# the fully supervised reference with CRF too: compared like with like with the single-stage model
infer sup "${CFG}_sup.yaml" "$DATA/val_voc.txt" "$OUT/sup/val"

cam_sweep bsl "${CFG}_bsl.yaml" "$DATA/val_voc.txt" "$OUT/bsl/cam_val"
cam_sweep ae "${CFG}_ae.yaml" "$DATA/val_voc.txt" "$OUT/ae/cam_val"

pseudo bsl "${CFG}_bsl.yaml" "$DATA/train_voc.txt" "$OUT/bsl/pseudo_train"
pseudo ae "${CFG}_ae.yaml" "$DATA/train_voc.txt" "$OUT/ae/pseudo_train"

# the second stage (README "Pseudo labels and a second stage"): clean pseudo labels of the whole training list
# (the image's GT labels, single scale, CRF), then the fully supervised network trained on them
RUN_SETS=(TEST.USE_GT_LABELS True TEST.SCALES "[1]" TEST.FLIP False TEST.BATCH_SIZE 1)
infer ae "${CFG}_ae.yaml" "$DATA/train_augvoc.txt" "$OUT/ae/pseudo_train_aug"
RUN_SETS=(DATASET.MASK_DIR "$OUT/ae/pseudo_train_aug/crf")
train stage2 "${CFG}_sup.yaml"
RUN_SETS=()
infer stage2 "${CFG}_sup.yaml" "$DATA/val_voc.txt" "$OUT/stage2/val"

stage "report"
python tools/demo_report.py --data "$DATA" --out "$OUT" --list "$DATA/val_voc.txt" --seed "$SEED" \
  --logs "$LOG_BASE/$DS/$EXP" --times "$TIMES" --wall-time "$((SECONDS - T0))"
done_stage
echo "[demo] finished in $((SECONDS - T0)) s; open $OUT/report.html in a browser"
