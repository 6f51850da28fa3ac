"""A trained model's masks on a labelled list, given the GT image labels: what tools/eval_pseudo.py and
tools/eval_cam.py score (the options, model and list loading and the forward they share).

For every image the model runs its training-mode forward (in eval mode) with the image labels read from the GT
mask. That gives the masks cleaned with those labels ("cam": the CAM baseline's normalised CAMs with its constant
background score, or the single-stage model's softmax masks), for the single-stage model their PAMR refinement
("dec") and the pseudo ground truth learnt from ("pseudo"), each [1, C, H, W] at the image's size (C = 21 for
--dataset pascal_voc, 81 for coco).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from datasets.info import DATASETS, get_dataset
from datasets.pascal_voc import read_file_list
from datasets.voc import NUM_CLASSES, labels_from_mask, normalize_np
from models import load_trained_model
from utils.config import AttrDict
from utils.errors import UserError
from utils.run_setup import add_cfg_args, add_device_arg, load_run_cfg, select_device


def add_model_list_args(p: argparse.ArgumentParser, out_help: str) -> None:
    """The options every labelled-list tool shares: the model (config, overrides, snapshot), the list, the output."""
    add_cfg_args(p, cfg_help="YAML config the model was trained with")
    p.add_argument("--snapshot", required=True, help="model_enc_*.pth file")
    p.add_argument("--root", required=True, help="data root the list paths are relative to")
    p.add_argument("--list", required=True, help="file list with image and mask columns")
    p.add_argument("--out", required=True, help=out_help)
    add_device_arg(p)
    p.add_argument("--dataset", default="pascal_voc", help=f"dataset of the list: {', '.join(DATASETS)}")


def load_model_and_list(args: argparse.Namespace) -> tuple[AttrDict, torch.nn.Module, torch.device,
                                                            list[tuple[str, str]]]:
    """The config, the snapshot's model in eval mode on the chosen device, and the (image, mask) paths of the list;
    the config's TEST.NUM_CLASSES is checked to be the --dataset's."""
    cfg = load_run_cfg(args)
    get_dataset(args.dataset).check_num_classes(cfg)
    device = select_device(args.device)
    items = read_file_list(args.list, args.root, need_masks=True)
    model = load_trained_model(cfg.NET, cfg.TEST.NUM_CLASSES, args.snapshot)
    return cfg, model.to(device).eval(), device, items


def labelled_outputs(model: torch.nn.Module, items: list[tuple[str, str]], device: torch.device, desc: str,
                     num_classes: int = NUM_CLASSES
                     ) -> Iterator[tuple[str, np.ndarray, np.ndarray, dict[str, torch.Tensor]]]:
    """(image id, GT mask [H,W], GT image labels [C-1] 0/1, the model's outputs) for every image of the list."""
    for img_path, mask_path in tqdm(items, desc=desc, file=sys.stderr, mininterval=2):
        name = os.path.splitext(os.path.basename(img_path))[0]
        try:
            img = np.array(Image.open(img_path).convert("RGB"))
            gt = np.asarray(Image.open(mask_path))
        except OSError as e:
            raise UserError(f"cannot read {img_path} or {mask_path}: {e}; "
                            "run tools/check_data.py on the list") from None
        x = torch.from_numpy(normalize_np(img)).permute(2, 0, 1)[None].to(device)  # [1,3,H,W]
        raw = torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(device)  # [1,3,H,W] in [0,1]
        labels = labels_from_mask(gt, num_classes)  # [C-1]
        with torch.inference_mode():
            out = model(x, raw, torch.from_numpy(labels)[None].to(device))
        yield name, gt, labels, out
