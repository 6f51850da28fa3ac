#!/usr/bin/env bash
# Train with DistributedDataParallel, one process per GPU (torchrun), in the background with nohup as the other
# launch scripts. TRAIN.BATCH_SIZE stays the global batch (each process takes BATCH_SIZE / NPROC images).
#   NPROC=4 EXP=v01 RUN_ID=r01 bash launch/run_torchrun.sh
#   several machines: NNODES=2 NODE_RANK=0 MASTER_ADDR=host0 MASTER_PORT=29500 ... on each machine
#   CONFIG=configs/voc_vgg16.yaml, FOREGROUND=1, EXTRA_ARGS="..." as in launch/_train_common.sh
#   DS=coco: MS COCO 2014 with configs/coco_resnet38.yaml unless CONFIG is set
# NPROC defaults to the number of visible GPUs (1 without a GPU: CPU processes with the gloo backend).

DS=${DS:-pascal_voc}
[ "$DS" = coco ] && : "${CONFIG:=configs/coco_resnet38.yaml}"

## Your values here:
#
: "${EXP:=}"
: "${RUN_ID:=}"
: "${CONFIG:=configs/voc_resnet38.yaml}"
#
##

: "${NNODES:=1}"
: "${NODE_RANK:=0}"
: "${MASTER_ADDR:=}"
: "${MASTER_PORT:=29500}"
if [ -z "${NPROC:-}" ]; then
  NPROC=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
  [ "$NPROC" -gt 0 ] 2>/dev/null || NPROC=1
fi
if [ "$NNODES" = 1 ] && [ -z "$MASTER_ADDR" ]; then
  # one machine: torchrun picks a free port itself
  RUNNER=(torchrun --standalone --nnodes=1 --nproc_per_node="$NPROC")
else
  RUNNER=(torchrun --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$NPROC"
          --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="$MASTER_PORT")
fi
MODEL_SETS=()
source "$(dirname "${BASH_SOURCE[0]}")/_train_common.sh"
