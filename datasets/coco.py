"""MS COCO 2014 as this project reads it: the 80 categories, their class indices and the converted layout.

The instance annotations number the 80 categories with ids between 1 and 90 (with gaps); the weakly supervised
segmentation literature maps them, sorted ascending, to the class indices 1..80, with background 0. The
converted tree (tools/convert_coco.py) under the data root ``<root>``::

    train2014/COCO_train2014_<id>.jpg   val2014/COCO_val2014_<id>.jpg     (the official image archives)
    annotations/instances_train2014.json  annotations/instances_val2014.json
    masks/train2014/COCO_train2014_<id>.png  masks/val2014/COCO_val2014_<id>.png   (written: class-index PNGs)
    train_coco.txt  val_coco.txt                                              (written: file lists, SPEC 3.2)
"""
from __future__ import annotations

# (category id, name) of the 80 categories of instances_*2014.json, in ascending id order
CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"),
    (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"),
    (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"),
    (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"),
    (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)
CLASS_NAMES = ("background",) + tuple(name for _, name in CATEGORIES)
NUM_CLASSES = len(CLASS_NAMES)  # 81: background + 80 categories
# category id -> class index 1..80 (ids sorted ascending)
CLASS_OF_CATEGORY = {cat_id: k for k, (cat_id, _) in enumerate(CATEGORIES, 1)}

SPLITS = ("train2014", "val2014")
ANNOTATION_FILE = "annotations/instances_{split}.json"
IMAGE_DIR = "{split}"
MASK_DIR = "masks/{split}"
LIST_NAMES = {"train2014": "train_coco.txt", "val2014": "val_coco.txt"}
