"""Baseline of bench/infer_loop.py: the original's whole inference loop (SPEC 3.6, 8.1-8.6) transcribed directly.

    python bench/baselines/infer_loop.py --cfg CFG --snapshot model_enc_X.pth --infer-list LIST --data-root ROOT \
        --out DIR --workers N

The snapshot loaded into the original's formulation of the "ae" network (bench/baselines/stage_spec.py: its
ASPP, GCI and decoder in test mode, the backbone the project's), and the loop around it the original's:
* the dataset's length is (variants per image) x images, and every item opens and decodes its image again,
  normalises the whole image (float64) and one variant: PIL bicubic resize, flip of the odd variants, zero padding
  to TEST.PAD_SIZE, normalisation of the padded canvas times (1 - pad mask); a DataLoader batch of TEST.BATCH_SIZE
  items is all variants of one image;
* the network runs on the batch in float32 in the contiguous memory format, under no_grad;
* the class presence is the maximum over the variants of the sigmoid scores above TEST.FP_CUT_SCORE (or the GT
  labels);
* all N probability canvases [N, C, PH, PW] go to a pool of --workers processes (apply_async), whose job merges
  them (crop the padding, bilinear resize with align_corners=False, flip odd variants back, absent classes zeroed,
  mean, background to the power BG_POW), takes the argmax, runs the dense CRF (10 iterations, Gaussian sxy 3
  compat 3, bilateral sxy 80 srgb 13 compat 10 on the unary -log(clip(P, 1e-5))) and writes <id>.png, crf/<id>.png
  and vis/<id>.png (prediction, CRF prediction and GT panels of 0.3 image + 0.7 palette colour).
No code is shared with datasets/pascal_voc_ms.py, utils/inference_tools.py or utils/dcrf.py.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _palette() -> list[int]:
    """SPEC 3.4: the VOC colour map, bits of the index interleaved into R, G, B."""
    flat = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        flat += [r, g, b]
    return flat


def _normalise(hwc_uint8: np.ndarray) -> np.ndarray:
    return ((hwc_uint8 / 255.0 - MEAN) / STD).astype(np.float32)


class MultiscaleSpec(Dataset):
    """SPEC 3.6, MultiscaleLoader: one item per (image, variant)."""

    def __init__(self, list_path: str, data_root: str, test_cfg):
        self.items = []
        with open(list_path) as f:
            for line in f:
                fields = line.strip("\n").split(" ")
                self.items.append((os.path.join(data_root, fields[0].strip("/")),
                                   os.path.join(data_root, fields[1].strip("/"))))
        self.cfg = test_cfg
        self.n = len(test_cfg.SCALES) * (2 if test_cfg.FLIP else 1)
        assert self.n == test_cfg.BATCH_SIZE

    def __len__(self) -> int:
        return self.n * len(self.items)

    def __getitem__(self, idx: int):
        image_path, mask_path = self.items[idx // self.n]
        v = idx % self.n
        image = Image.open(image_path).convert("RGB")
        mask = np.array(Image.open(mask_path)).astype(np.int64)
        present = np.unique(mask)
        present = present[(present != 0) & (present != 255)] - 1
        labels = torch.zeros(20)
        labels[present] = 1
        scale = self.cfg.SCALES[v // 2] if self.cfg.FLIP else self.cfg.SCALES[v]
        w, h = round(image.size[0] * scale), round(image.size[1] * scale)
        scaled = image.resize((w, h), Image.BICUBIC)
        if self.cfg.FLIP and v % 2 == 1:
            scaled = scaled.transpose(Image.FLIP_LEFT_RIGHT)
        ph, pw = self.cfg.PAD_SIZE
        top, left = (ph - h) // 2, (pw - w) // 2
        canvas = np.zeros((ph, pw, 3), dtype=np.uint8)
        canvas[top:top + h, left:left + w] = np.asarray(scaled)
        pad_mask = np.ones((ph, pw, 1), dtype=np.float32)
        pad_mask[top:top + h, left:left + w] = 0
        variant = _normalise(canvas) * (1 - pad_mask)
        original = _normalise(np.asarray(image))
        pads = torch.tensor([top, left, h, w], dtype=torch.float32)
        return (image_path, torch.from_numpy(original.transpose(2, 0, 1).copy()),
                torch.from_numpy(variant.transpose(2, 0, 1).copy()), pads, labels, torch.from_numpy(mask))


class WriterSpec:
    """SPEC 8.3, 8.5, 8.6: merge the scales, argmax, dense CRF, three PNGs."""

    def __init__(self, test_cfg, out_dir: str):
        self.flip, self.bg_pow, self.out = test_cfg.FLIP, test_cfg.BG_POW, out_dir
        self.palette = _palette()

    def merge(self, masks: torch.Tensor, pads: torch.Tensor, labels: torch.Tensor, hw) -> np.ndarray:
        cut = []
        for i, m in enumerate(masks.split(1, dim=0)):
            top, left, h, w = [int(p) for p in pads[i]]
            m = F.interpolate(m[:, :, top:top + h, left:left + w], hw, mode="bilinear", align_corners=False)[0]
            if self.flip and i % 2 == 1:
                m = torch.flip(m, (-1,))
            m[1:] *= labels[:, None, None]
            cut.append(m)
        mean = sum(cut).numpy() / len(cut)
        mean[0] = np.power(mean[0], self.bg_pow)
        return mean

    @staticmethod
    def crf(image255: np.ndarray, probs: np.ndarray) -> np.ndarray:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax

        c, h, w = probs.shape
        d = dcrf.DenseCRF2D(w, h, c)
        d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.copy(image255), compat=10)
        return np.array(d.inference(10)).reshape((c, h, w))

    def overlay(self, mask: np.ndarray, image: np.ndarray) -> np.ndarray:
        im = Image.fromarray(mask).convert("P")
        im.putpalette(self.palette)
        return 0.3 * image + 0.7 * np.array(im.convert("RGB"), dtype=np.float64) / 255.0

    def save(self, name: str, image: np.ndarray, masks: torch.Tensor, pads: torch.Tensor, labels: torch.Tensor,
             gt: torch.Tensor) -> None:
        image_id = os.path.basename(name).rstrip(".jpg")
        image255 = np.ascontiguousarray(np.round(255.0 * image).astype(np.uint8).transpose(1, 2, 0))
        merged = self.merge(masks, pads, labels, image255.shape[:2])
        pred = np.argmax(merged, 0)
        pred_crf = np.argmax(self.crf(image255, merged), 0)
        Image.fromarray(pred.astype(np.uint8), mode="L").save(os.path.join(self.out, image_id + ".png"))
        Image.fromarray(pred_crf.astype(np.uint8), mode="L").save(os.path.join(self.out, "crf", image_id + ".png"))
        panels = np.concatenate([pred, pred_crf, gt.numpy()], 1).astype(np.uint8)
        vis = self.overlay(panels, np.concatenate([image] * 3, 2).transpose(1, 2, 0))
        Image.fromarray(np.round(vis * 255.0).astype(np.uint8)).save(os.path.join(self.out, "vis", image_id + ".png"))


def main(argv: list[str] | None = None) -> None:
    from bench.baselines.stage_spec import SingleStageSpec
    from models import build_model
    from models.weights import load_snapshot
    from utils.config import load_cfg

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cfg", required=True)
    p.add_argument("--snapshot", required=True)
    p.add_argument("--infer-list", required=True)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    # the writer pool is forked before torch starts its threads: a forked child of a process whose OpenMP pool is
    # running deadlocks in its first parallel operation (the original's pool forked from a process that had run
    # its network on the GPU only)
    pool = multiprocessing.Pool(processes=args.workers)
    cfg = load_cfg(args.cfg)
    torch.set_num_threads(max(1, args.workers))  # as the original's --workers
    for sub in ("vis", "crf"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    net_cfg = cfg.NET
    net_cfg.FROM_SCRATCH = True  # every tensor comes from the snapshot
    ours = build_model(net_cfg, num_classes=cfg.TEST.NUM_CLASSES)
    load_snapshot(ours, args.snapshot)
    model = SingleStageSpec.from_model(ours) if net_cfg.MODEL == "ae" else ours
    del ours
    for q in model.parameters():
        q.requires_grad = False
    model.eval()
    dataset = MultiscaleSpec(args.infer_list, args.data_root, cfg.TEST)
    loader = DataLoader(dataset, shuffle=False, num_workers=args.workers, batch_size=cfg.TEST.BATCH_SIZE)
    writer = WriterSpec(cfg.TEST, args.out)
    jobs = []
    for name, image_orig, images_in, pads, labels, gt in loader:
        with torch.no_grad():
            out = model(images_in)
            if cfg.TEST.USE_GT_LABELS:
                labels = labels[0]
            else:
                labels = torch.sigmoid(out["cls"]).max(0)[0] > cfg.TEST.FP_CUT_SCORE
        image = (image_orig[0] * torch.tensor(STD, dtype=torch.float32)[:, None, None]
                 + torch.tensor(MEAN, dtype=torch.float32)[:, None, None]).numpy()  # denorm
        masks = out["masks"].cpu()
        jobs.append(pool.apply_async(writer.save, (name[0], image, masks, pads, labels.type_as(masks), gt[0])))
    pool.close()
    pool.join()
    for j in jobs:  # the bench wants every image written (the original never looked)
        j.get()


if __name__ == "__main__":
    main()
