#!/usr/bin/env bash
# Train the CAM baseline with the vgg16 backbone (configs/voc_vgg16.yaml + NET.MODEL bsl TRAIN.NUM_EPOCHS 6), in the
# background with nohup, logging to $LOGDIR/$DS/$EXP/$RUN_ID.log, then tail -f the log. Set the values below or
# in the environment:
#   EXP=v01 RUN_ID=bsl bash launch/run_bsl_vgg16.sh
#   FOREGROUND=1 EXP=v01 RUN_ID=bsl EXTRA_ARGS="--set TRAIN.BATCH_SIZE 8" bash launch/run_bsl_vgg16.sh
# (more variables: launch/_train_common.sh)

DS=${DS:-pascal_voc}

## Your values here:
#
: "${EXP:=}"
: "${RUN_ID:=}"
#
##

CONFIG=configs/voc_vgg16.yaml
MODEL_SETS=(NET.MODEL bsl TRAIN.NUM_EPOCHS 6)
source "$(dirname "${BASH_SOURCE[0]}")/_train_common.sh"
