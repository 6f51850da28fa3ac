"""The dataset descriptions chosen by ``--dataset``: class names, class count, palette, ignore index, file lists.

Every stage reads the description instead of fixed constants: the data layer (which mask values are valid, the
length of the image-label vector), the model's output count (TEST.NUM_CLASSES must equal ``num_classes``),
evaluation (the confusion matrix, the per-class table), visualisation (colours, class names) and logging
(TensorBoard tags). ``pascal_voc`` holds exactly the constants of datasets/voc.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets import coco, voc
from utils.errors import UserError


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: ``class_names`` start with background; masks hold 0..num_classes-1 and ``ignore_index``."""

    name: str
    class_names: tuple[str, ...]
    palette: np.ndarray  # [256, 3] uint8: class index -> colour (ignore_index has its own)
    ignore_index: int
    train_list: str  # default file lists under the data root (the configs name them in DATASET.*_LIST)
    val_list: str
    layout: str  # where the data comes from, for messages

    @property
    def num_classes(self) -> int:
        """Classes with background: the model's output channels (TEST.NUM_CLASSES)."""
        return len(self.class_names)

    @property
    def num_fg(self) -> int:
        """Entries of an image-level label vector (background excluded)."""
        return self.num_classes - 1

    def check_num_classes(self, cfg) -> None:
        """The config's class count (the model's output count) must be the dataset's."""
        if cfg.TEST.NUM_CLASSES != self.num_classes:
            raise UserError(f"config key TEST.NUM_CLASSES is {cfg.TEST.NUM_CLASSES}, but --dataset {self.name} has "
                            f"{self.num_classes} classes with background; set TEST.NUM_CLASSES {self.num_classes} "
                            f"(configs/{'voc' if self.name == 'pascal_voc' else self.name}_*.yaml do)")


PASCAL_VOC = DatasetInfo(
    name="pascal_voc",
    class_names=voc.CLASS_NAMES[:voc.NUM_CLASSES],
    palette=voc.PALETTE,
    ignore_index=voc.IGNORE_INDEX,
    train_list="train_augvoc.txt",
    val_list="val_voc.txt",
    layout="Pascal VOC 2012 + SBD (tools/make_filelists.py)",
)

COCO = DatasetInfo(
    name="coco",
    class_names=coco.CLASS_NAMES,
    palette=voc.PALETTE,  # the VOC colour map, as the COCO WSSS code bases use: 256 distinct colours
    ignore_index=voc.IGNORE_INDEX,
    train_list=coco.LIST_NAMES["train2014"],
    val_list=coco.LIST_NAMES["val2014"],
    layout="MS COCO 2014 (tools/convert_coco.py)",
)

DATASETS = {d.name: d for d in (PASCAL_VOC, COCO)}


def get_dataset(name: str | None) -> DatasetInfo:
    """The description of ``--dataset name``; a UserError lists the valid names."""
    if name not in DATASETS:
        given = "missing" if name is None else repr(name)
        raise UserError(f"--dataset is {given}; use one of {', '.join(DATASETS)}")
    return DATASETS[name]
