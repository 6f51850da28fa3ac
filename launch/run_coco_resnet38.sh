#!/usr/bin/env bash
# Train the single-stage model on MS COCO 2014 (tools/convert_coco.py's data under ./data/coco) with the resnet38
# backbone (configs/coco_resnet38.yaml), in the background with nohup,
# logging to $LOGDIR/$DS/$EXP/$RUN_ID.log, then tail -f the log. Set the values below or in the environment:
#   EXP=v01 RUN_ID=r01 bash launch/run_coco_resnet38.sh
#   FOREGROUND=1 EXP=v01 RUN_ID=r01 EXTRA_ARGS="--resume last" bash launch/run_coco_resnet38.sh
# (more variables: launch/_train_common.sh)

DS=${DS:-coco}

## Your values here:
#
: "${EXP:=}"
: "${RUN_ID:=}"
#
##

CONFIG=configs/coco_resnet38.yaml
MODEL_SETS=()
source "$(dirname "${BASH_SOURCE[0]}")/_train_common.sh"
