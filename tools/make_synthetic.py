"""A synthetic dataset in the Pascal VOC / SBD layout, made so that learning from image labels is not trivial.

Why it looks the way it does (each point is a knob of ``Difficulty``):

* every class has its own outline, but its body is a muted colour with a texture shared by other classes and by
  unlabelled *distractors* (the same outlines without a head); what only the class has is a small saturated
  *head* patch of its own colour. A classifier therefore learns the head, and its CAM covers only that part;
* an object's body has one locally coherent colour with a clear, anti-aliased edge against the local background
  (``body_contrast``), so pixel-affinity refinement (PAMR, CRF) can grow the head's evidence over the whole object;
* the background is two or three textured horizontal bands (sky, grass, water, road) with clutter; each pair of
  classes prefers one band type (``context_bias``) and the two classes of a pair co-occur (``cooccur``), so a CAM
  learns to leak into the context;
* slight blur, noise and JPEG compression.

The layout and file lists are those of SPEC 3.1-3.2, paths relative to ``out_dir``::

    voc/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}
    sbd/benchmark_RELEASE/dataset/{img,cls_png,train.txt,val.txt}
    voc_test/VOCdevkit/VOC2012/{JPEGImages,ImageSets/Segmentation/test.txt}
    train_augvoc.txt  train_voc.txt  val_voc.txt  test.txt  synthetic.json

VOC masks are palette PNGs with 255 on a thin band along every object edge; SBD masks (cls_png) are mode-"L"
PNGs without the band. ``train_augvoc`` = the SBD images plus the VOC-train ones, ``train_voc`` = VOC train,
``val_voc`` = VOC val, ``test`` = image paths only (no masks are written for test). The ImageSets / SBD split
files make the tree usable by tools/make_filelists.py too.

Every image is drawn from its own generator seeded by (seed, split, index): the same seed gives byte-identical
files, and changing one split's size does not change the others.

    python tools/make_synthetic.py --out data/synthetic [--num-train 600 --num-val 120 --num-test 20]
        [--size 112] [--seed 0] [--difficulty easy|default|hard] [--classes 3,7,8,12,15,20] [--knob head_frac=0.2]
"""
from __future__ import annotations

import argparse
import ast
import colorsys
import contextlib
import dataclasses
import math
import multiprocessing
import os
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from datasets.voc import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE_FLAT
from utils.errors import UserError, run_main
from utils.fileio import atomic_path, check_writable_dir, write_json, write_text

GENERATOR_VERSION = 2
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: anti-aliased edges
DEFAULT_CLASSES = (3, 7, 8, 12, 15, 20)  # bird, car, cat, dog, person, tv/monitor
VOC_TRAIN_FRACTION = 0.25  # share of the training images written in the VOC layout (the rest as SBD)
MIN_OBJECT_PIXELS = 12  # an object smaller than this (after occlusion) is redrawn elsewhere
MAX_TRIES = 20
OVERLAP_SEPARATION = 1.0  # minimum centre distance of two labelled objects, in units of the larger radius

VOC_DIR = "voc/VOCdevkit/VOC2012"
SBD_DIR = "sbd/benchmark_RELEASE/dataset"
VOC_TEST_DIR = "voc_test/VOCdevkit/VOC2012"

# background band types: base RGB, texture kind, texture amplitude relative to Difficulty.texture_amp
BANDS = {
    "sky": ((150, 180, 215), "gradient", 0.6),
    "grass": ((85, 125, 70), "noise", 1.6),
    "water": ((60, 95, 130), "waves", 1.2),
    "road": ((120, 115, 110), "speckle", 1.4),
}
BAND_NAMES = tuple(BANDS)
# outlines in unit coordinates ([-1, 1]^2, y down); class k gets SHAPES[k % len(SHAPES)]
SHAPES = ("ellipse", "box", "triangle", "diamond", "hexagon", "cross", "star", "trapezoid")
BODY_TEXTURES = ("stripes", "dots", "noise")  # class k gets BODY_TEXTURES[k % 3]: shared between classes
# saturated head colours, far from the muted bodies; the first six (the default classes) are the primaries and
# secondaries, a sixth of the hue circle apart, and each class pair (0-1, 2-3, 4-5) gets opposite hues
HEAD_HUES = (0.0, 0.5, 1 / 6, 2 / 3, 1 / 3, 5 / 6, 0.08, 0.58)


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """The knobs of the generator (sizes are relative to the image's shorter side)."""

    objects: tuple[int, int] = (1, 4)  # labelled objects per image (min, max)
    max_classes: int = 3  # distinct classes per image
    cooccur: float = 0.5  # probability that a class brings its partner class (pairs 0-1, 2-3, ...)
    context_bias: float = 0.8  # probability that an object stands on its class pair's band type
    distractors: tuple[int, int] = (1, 2)  # unlabelled headless look-alikes per image
    clutter: tuple[int, int] = (4, 10)  # small background blobs per image
    head_frac: float = 0.28  # head radius / object radius: the discriminative part
    body_contrast: float = 90.0  # minimum RGB distance of a body from its band's colour
    texture_amp: float = 18.0  # grey levels of body/background texture
    obj_scale: tuple[float, float] = (0.14, 0.3)  # object radius range
    blur: float = 0.5  # Gaussian blur radius in pixels
    noise: float = 4.0  # Gaussian noise sigma in grey levels
    jpeg_quality: int = 90
    border: int = 1  # radius of the 255 band on VOC mask edges (band width ~ 2*border pixels)


DIFFICULTIES = {
    "easy": Difficulty(objects=(1, 2), max_classes=2, cooccur=0.2, context_bias=0.5, distractors=(0, 1),
                       clutter=(2, 5), head_frac=0.4, body_contrast=120.0, texture_amp=10.0,
                       obj_scale=(0.2, 0.34), blur=0.3, noise=2.0, jpeg_quality=95),
    "default": Difficulty(),
    "hard": Difficulty(objects=(2, 5), max_classes=3, cooccur=0.7, context_bias=0.9, distractors=(1, 3),
                       clutter=(8, 16), head_frac=0.2, body_contrast=60.0, texture_amp=28.0,
                       obj_scale=(0.11, 0.27), blur=0.7, noise=6.0, jpeg_quality=80),
}
SPLIT_CODES = {"sbd": 0, "voc_train": 1, "val": 2, "test": 3}


def get_difficulty(name: str, overrides: dict[str, Any] | None = None) -> Difficulty:
    """A preset by name, with some knobs replaced (tuples may be given as lists)."""
    if name not in DIFFICULTIES:
        raise UserError(f"unknown difficulty {name!r}; choose one of {', '.join(DIFFICULTIES)}")
    base = DIFFICULTIES[name]
    fields = {f.name: f for f in dataclasses.fields(Difficulty)}
    changes = {}
    for key, value in (overrides or {}).items():
        if key not in fields:
            raise UserError(f"unknown difficulty knob {key!r}; knobs are {', '.join(fields)}")
        default = getattr(base, key)
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise UserError(f"difficulty knob {key} takes a pair like {default!r}, got {value!r}")
            value = tuple(type(default[0])(v) for v in value)
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        elif type(value) is not type(default):
            raise UserError(f"difficulty knob {key} takes a {type(default).__name__} like {default!r}, got {value!r}")
        changes[key] = value
    return dataclasses.replace(base, **changes)


# ----------------------------------------------------------------------------------------------------------------
# drawing primitives (all at supersampled resolution)


def _unit_outline(shape: str) -> np.ndarray:
    """[N, 2] polygon (x, y) of an outline in [-1, 1]^2."""
    if shape == "ellipse":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([0.8 * np.cos(t), np.sin(t)], 1)
    if shape == "box":
        return np.array([[-0.75, -0.9], [0.75, -0.9], [0.75, 0.9], [-0.75, 0.9]])
    if shape == "triangle":
        return np.array([[0.0, -1.0], [0.95, 0.9], [-0.95, 0.9]])
    if shape == "diamond":
        return np.array([[0.0, -1.0], [0.8, 0.0], [0.0, 1.0], [-0.8, 0.0]])
    if shape == "hexagon":
        t = np.linspace(0, 2 * np.pi, 6, endpoint=False) + np.pi / 6
        return np.stack([np.cos(t), np.sin(t)], 1) * 0.95
    if shape == "cross":
        a = 0.35
        return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
                         [-1, -a], [-a, -a]])
    if shape == "star":
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False) - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.5)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if shape == "trapezoid":
        return np.array([[-0.45, -0.9], [0.45, -0.9], [0.95, 0.9], [-0.95, 0.9]])
    raise ValueError(shape)


def _place(points: np.ndarray, cx: float, cy: float, r: float, aspect: float, angle: float) -> np.ndarray:
    """Scale (x by aspect), rotate and translate unit points to canvas coordinates."""
    p = points * np.array([r * aspect, r])
    c, s = math.cos(angle), math.sin(angle)
    return p @ np.array([[c, s], [-s, c]]) + np.array([cx, cy])


def _polygon_mask(points: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    img = Image.new("L", (hw[1], hw[0]), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in points], fill=1)
    return np.asarray(img, dtype=bool)


def _disk_mask(cx: float, cy: float, r: float, hw: tuple[int, int]) -> np.ndarray:
    img = Image.new("L", (hw[1], hw[0]), 0)
    ImageDraw.Draw(img).ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    return np.asarray(img, dtype=bool)


def _smooth_noise(rng: np.random.Generator, hw: tuple[int, int], cell: float) -> np.ndarray:
    """[H, W] float32 noise in about [-1, 1], correlated over ``cell`` pixels."""
    gh, gw = max(2, int(hw[0] / cell) + 2), max(2, int(hw[1] / cell) + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    up = ndimage.zoom(coarse, (hw[0] / gh, hw[1] / gw), order=1, mode="nearest", grid_mode=True)
    up = up[: hw[0], : hw[1]]
    return np.clip(up / 1.5, -1.0, 1.0)


def _pattern(kind: str, rng: np.random.Generator, hw: tuple[int, int], period: float) -> np.ndarray:
    """[H, W] float32 texture in [-1, 1]."""
    yy, xx = np.mgrid[0: hw[0], 0: hw[1]].astype(np.float32)
    if kind == "stripes":
        a = rng.uniform(0, np.pi)
        return np.sin(2 * np.pi * (xx * math.cos(a) + yy * math.sin(a)) / period + rng.uniform(0, 6.3))
    if kind == "dots":
        p = period * 1.2
        phase = rng.uniform(0, p, 2)
        d = np.hypot((xx + phase[0]) % p - p / 2, (yy + phase[1]) % p - p / 2)
        return np.where(d < p / 4, 1.0, -0.3).astype(np.float32)
    if kind == "noise":
        return _smooth_noise(rng, hw, period / 2)
    if kind == "gradient":
        return (yy / max(hw[0] - 1, 1) * 2 - 1) * 0.7 + 0.3 * _smooth_noise(rng, hw, period * 3)
    if kind == "waves":
        return np.sin(2 * np.pi * yy / period + 2.0 * np.sin(2 * np.pi * xx / (period * 6)))
    if kind == "speckle":
        return 0.5 * _smooth_noise(rng, hw, period / 4) + 0.5 * _smooth_noise(rng, hw, period * 2)
    raise ValueError(kind)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A desaturated RGB colour: bodies and clutter never look like a head."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.05, 0.45), rng.uniform(0.2, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255


def _head_colour(k: int) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(HEAD_HUES[k % len(HEAD_HUES)], 1.0, 1.0), dtype=np.float32) * 255


def _contrasting_colour(rng: np.random.Generator, against: np.ndarray, min_dist: float) -> np.ndarray:
    """A muted colour at least ``min_dist`` (RGB) from ``against``; the farthest of the tries otherwise."""
    best, best_d = None, -1.0
    for _ in range(MAX_TRIES):
        c = _muted_colour(rng)
        d = float(np.linalg.norm(c - against))
        if d >= min_dist:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


# ----------------------------------------------------------------------------------------------------------------
# one image


def _bands(rng: np.random.Generator, hw: tuple[int, int], needed: list[str], d: Difficulty):
    """Band layout: (canvas [H,W,3] float32, band index map [H,W], band types, band base colours)."""
    h, w = hw
    n = int(rng.integers(2, 4))
    types = list(dict.fromkeys(needed))[:n]
    others = [t for t in BAND_NAMES if t not in types]
    rng.shuffle(others)
    types += others[: n - len(types)]
    # sky, when present, stays on top; the rest in random order
    rng.shuffle(types)
    types.sort(key=lambda t: t != "sky")
    cuts = np.sort(rng.uniform(0.25, 0.75, n - 1)) if n == 2 else np.sort(rng.uniform(0.15, 0.85, n - 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    band = np.zeros((h, w), dtype=np.int64)
    for cut in cuts:
        amp, period, phase = rng.uniform(0.0, 0.06) * h, rng.uniform(0.5, 1.5) * w, rng.uniform(0, 6.3)
        band += (yy > cut * h + amp * np.sin(2 * np.pi * xx / period + phase)).astype(np.int64)
    canvas = np.zeros((h, w, 3), dtype=np.float32)
    colours = []
    for i, t in enumerate(types):
        base, kind, amp = BANDS[t]
        colour = np.clip(np.array(base, dtype=np.float32) + rng.uniform(-20, 20, 3), 0, 255)
        colours.append(colour)
        tex = _pattern(kind, rng, hw, period=SUPERSAMPLE * rng.uniform(3, 7))
        sel = band == i
        canvas[sel] = colour + (d.texture_amp * amp * tex[sel])[:, None]
    return canvas, band, types, colours


def _pick_classes(rng: np.random.Generator, n_cls: int, d: Difficulty) -> list[int]:
    """Class positions (0..n_cls-1) present in an image; partners come along with probability ``cooccur``."""
    want = int(rng.integers(1, d.max_classes + 1))
    chosen: list[int] = []
    while len(chosen) < want:
        k = int(rng.integers(n_cls))
        if k in chosen:
            continue
        chosen.append(k)
        partner = k ^ 1
        if partner < n_cls and partner not in chosen and len(chosen) < d.max_classes and rng.random() < d.cooccur:
            chosen.append(partner)
    return chosen


def _preferred_band(k: int) -> str:
    """The two classes of a pair share their context."""
    return BAND_NAMES[(k // 2) % len(BAND_NAMES)]


def _centre_in_band(rng: np.random.Generator, band: np.ndarray, idx: int, margin: float) -> tuple[float, float]:
    h, w = band.shape
    ys, xs = np.nonzero(band[:: SUPERSAMPLE, :: SUPERSAMPLE] == idx)
    if len(ys):
        j = int(rng.integers(len(ys)))
        return float(xs[j] * SUPERSAMPLE), float(ys[j] * SUPERSAMPLE)
    return float(rng.uniform(margin, w - margin)), float(rng.uniform(margin, h - margin))


HEAD_OUTLINE_POINTS = 16  # vertices of the polygon that outlines a round head (instance annotations)


def _draw_object(rng, canvas, hw, shape_k, cx, cy, r, colour, texture, head_colour, d, outlines=None):
    """Paint one body (+ head) onto ``canvas``; return its [H,W] bool coverage. A list ``outlines`` receives the
    [N, 2] (x, y) polygons of the body and the head (the instance annotations of the COCO layout)."""
    aspect, angle = rng.uniform(0.75, 1.3), rng.uniform(-0.45, 0.45)
    body_outline = _place(_unit_outline(SHAPES[shape_k % len(SHAPES)]), cx, cy, r, aspect, angle)
    body = _polygon_mask(body_outline, hw)
    if outlines is not None:
        outlines.append(body_outline)
    ys, xs = np.nonzero(body)
    if not len(ys):
        return body
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    sub = body[y0:y1, x0:x1]
    tex = _pattern(texture, rng, (y1 - y0, x1 - x0), period=SUPERSAMPLE * rng.uniform(2.5, 4.5))
    # a gentle shading across the body, as a lit surface; stays far below the body/background contrast
    shade = np.linspace(-0.5, 0.5, y1 - y0, dtype=np.float32)[:, None] * rng.uniform(-1, 1)
    region = canvas[y0:y1, x0:x1]
    region[sub] = colour + (0.6 * d.texture_amp * (tex + shade)[sub])[:, None]
    cover = body
    if head_colour is not None:
        # the head sits on the top of the outline (it may stick out a little), rotated with the body
        hx, hy = _place(np.array([[0.0, -0.55]]), cx, cy, r, aspect, angle)[0]
        head = _disk_mask(hx, hy, d.head_frac * r, hw)
        canvas[head] = head_colour
        if outlines is not None:
            t = np.linspace(0, 2 * np.pi, HEAD_OUTLINE_POINTS, endpoint=False)
            outlines.append(np.stack([hx + d.head_frac * r * np.cos(t), hy + d.head_frac * r * np.sin(t)], 1))
        cover = body | head
    return cover


def _clutter(rng, canvas, hw, band_colours, band, d):
    h, w = hw
    s = min(h, w)
    for _ in range(int(rng.integers(d.clutter[0], d.clutter[1] + 1))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.02, 0.08) * s
        near = band_colours[int(band[min(int(cy), h - 1), min(int(cx), w - 1)])]
        colour = np.clip(near + rng.uniform(-50, 50, 3), 0, 255) if rng.random() < 0.7 else _muted_colour(rng)
        if rng.random() < 0.5:
            m = _disk_mask(cx, cy, r, hw)
        else:
            pts = _place(_unit_outline("hexagon"), cx, cy, r, rng.uniform(0.3, 3.0), rng.uniform(0, np.pi))
            m = _polygon_mask(pts, hw)
        canvas[m] = colour


def _downsample_labels(lab: np.ndarray) -> np.ndarray:
    """[H*S, W*S] -> [H, W]: the label covering most of each block (lowest index on ties)."""
    h, w = lab.shape[0] // SUPERSAMPLE, lab.shape[1] // SUPERSAMPLE
    blocks = lab.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE)
    values = np.unique(lab)
    cover = np.stack([(blocks == v).sum(axis=(1, 3)) for v in values])  # [V, H, W]
    return values[cover.argmax(0)].astype(np.uint8)


def object_border(lab: np.ndarray, radius: int) -> np.ndarray:
    """[H, W] bool: pixels within ``radius`` of an edge between different labels, one side being an object."""
    size = 2 * radius + 1
    hi = ndimage.maximum_filter(lab, size=size, mode="nearest")
    lo = ndimage.minimum_filter(lab, size=size, mode="nearest")
    return (hi != lo) & (hi > 0)


def render_image(rng: np.random.Generator, width: int, height: int, classes: Sequence[int],
                 d: Difficulty, instances: list | None = None) -> tuple[Image.Image, np.ndarray]:
    """One image: (RGB PIL image after blur/noise, [H, W] uint8 class map without borders, values in classes∪{0}).

    A list ``instances`` receives one (class, [H, W] bool coverage, outline polygons in pixel coordinates) per
    labelled object, in drawing order; the coverage includes what later objects hide (instance annotations).
    """
    hw = (height * SUPERSAMPLE, width * SUPERSAMPLE)
    s = min(hw)
    present = _pick_classes(rng, len(classes), d)
    n_obj = max(len(present), int(rng.integers(d.objects[0], d.objects[1] + 1)))
    obj_cls = present + [present[int(rng.integers(len(present)))] for _ in range(n_obj - len(present))]
    contextual = [rng.random() < d.context_bias for _ in obj_cls]
    needed = [_preferred_band(k) for k, c in zip(obj_cls, contextual) if c]
    canvas, band, types, band_colours = _bands(rng, hw, needed, d)
    _clutter(rng, canvas, hw, band_colours, band, d)

    def centre(k: int | None, ctx: bool, r: float) -> tuple[float, float]:
        if ctx and k is not None and _preferred_band(k) in types:
            return _centre_in_band(rng, band, types.index(_preferred_band(k)), r)
        return float(rng.uniform(0.6 * r, hw[1] - 0.6 * r)), float(rng.uniform(0.6 * r, hw[0] - 0.6 * r))

    lab = np.zeros(hw, dtype=np.uint8)
    # distractors first (behind the objects): a class outline and texture, but no head and no label
    for _ in range(int(rng.integers(d.distractors[0], d.distractors[1] + 1))):
        k = int(rng.integers(len(classes)))
        r = rng.uniform(*d.obj_scale) * s
        cx, cy = centre(None, False, r)
        bg = band_colours[int(band[min(int(cy), hw[0] - 1), min(int(cx), hw[1] - 1)])]
        cover = _draw_object(rng, canvas, hw, k, cx, cy, r, _contrasting_colour(rng, bg, d.body_contrast),
                             BODY_TEXTURES[k % len(BODY_TEXTURES)], None, d)
        lab[cover] = 0
    placed: list[tuple[float, float, float]] = []
    for k, ctx in zip(obj_cls, contextual):
        r = rng.uniform(*d.obj_scale) * s
        # labelled objects may overlap, but none hides most of another
        for _ in range(MAX_TRIES):
            cx, cy = centre(k, ctx, r)
            if all(math.hypot(cx - x, cy - y) >= OVERLAP_SEPARATION * max(r, q) for x, y, q in placed):
                break
        placed.append((cx, cy, r))
        bg = band_colours[int(band[min(int(cy), hw[0] - 1), min(int(cx), hw[1] - 1)])]
        outlines: list[np.ndarray] = []
        cover = _draw_object(rng, canvas, hw, k, cx, cy, r, _contrasting_colour(rng, bg, d.body_contrast),
                             BODY_TEXTURES[k % len(BODY_TEXTURES)], _head_colour(k), d, outlines)
        lab[cover] = classes[k]
        if instances is not None:
            small = cover.reshape(height, SUPERSAMPLE, width, SUPERSAMPLE).mean(axis=(1, 3)) >= 0.5
            instances.append((classes[k], small, [o / SUPERSAMPLE for o in outlines]))

    img = canvas.clip(0, 255).reshape(height, SUPERSAMPLE, width, SUPERSAMPLE, 3).mean(axis=(1, 3))
    pil = Image.fromarray(np.round(img).astype(np.uint8), "RGB")
    if d.blur > 0:
        pil = pil.filter(ImageFilter.GaussianBlur(d.blur))
    arr = np.asarray(pil, dtype=np.float32) + rng.normal(0, d.noise, (height, width, 3)).astype(np.float32)
    pil = Image.fromarray(np.round(arr.clip(0, 255)).astype(np.uint8), "RGB")
    return pil, _downsample_labels(lab)


# ----------------------------------------------------------------------------------------------------------------
# the dataset


def _save_jpeg(img: Image.Image, path: str, quality: int) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="JPEG", quality=quality)


def _save_png(arr: np.ndarray, path: str, palette: bool) -> None:
    img = Image.fromarray(arr, "P" if palette else "L")
    if palette:
        img.putpalette(PALETTE_FLAT)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def draw_sample(split: str, index: int, seed: int, size: int, classes: Sequence[int],
                d: Difficulty, instances: list | None = None) -> tuple[Image.Image, np.ndarray]:
    """Image ``index`` of ``split``: (RGB image, [H, W] uint8 class map without the border band); a list
    ``instances`` receives the labelled objects of the image (see ``render_image``)."""
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    height = int(round(size * rng.uniform(0.75, 1.0)))  # landscape images of varying height, as most VOC photos
    for _ in range(MAX_TRIES):
        if instances is not None:
            instances.clear()
        img, lab = render_image(rng, size, height, classes, d, instances)
        visible = lab.copy()
        visible[object_border(lab, d.border)] = IGNORE_INDEX
        fg = np.unique(visible[(visible != 0) & (visible != IGNORE_INDEX)])
        # every labelled class keeps a visible interior, so the image labels match what can be seen
        if len(fg) and set(fg.tolist()) == set(np.unique(lab[lab > 0]).tolist()) and \
                all((visible == c).sum() >= MIN_OBJECT_PIXELS for c in fg):
            return img, lab
    raise RuntimeError(f"could not draw a valid {split} image {index} in {MAX_TRIES} tries; raise --size")


def _write_sample(job: tuple) -> None:
    """Draw one image and write it (and its mask, except for test) where its split belongs."""
    out_dir, split, i, name, seed, size, classes, d = job
    img, lab = draw_sample(split, i, seed, size, classes, d)
    if split == "sbd":
        _save_jpeg(img, os.path.join(out_dir, SBD_DIR, "img", name + ".jpg"), d.jpeg_quality)
        _save_png(lab, os.path.join(out_dir, SBD_DIR, "cls_png", name + ".png"), palette=False)
    elif split == "test":
        _save_jpeg(img, os.path.join(out_dir, VOC_TEST_DIR, "JPEGImages", name + ".jpg"), d.jpeg_quality)
    else:
        lab = lab.copy()
        lab[object_border(lab, d.border)] = IGNORE_INDEX
        _save_jpeg(img, os.path.join(out_dir, VOC_DIR, "JPEGImages", name + ".jpg"), d.jpeg_quality)
        _save_png(lab, os.path.join(out_dir, VOC_DIR, "SegmentationClass", name + ".png"), palette=True)


def make_synthetic(out_dir: str, n_train: int = 600, n_val: int = 120, n_test: int = 20, size: int = 112,
                   seed: int = 0, difficulty: str = "default", classes: Sequence[int] = DEFAULT_CLASSES,
                   knobs: dict[str, Any] | None = None, progress: bool = False,
                   workers: int = 1) -> dict[str, Any]:
    """Write the dataset under ``out_dir`` (see the module docstring) and return what synthetic.json records.

    ``n_train`` images make train_augvoc (a quarter of them, at least one, in the VOC layout: train_voc);
    ``size`` is the image width (heights vary in [0.75, 1] x size); ``knobs`` replace fields of the
    ``difficulty`` preset (see ``Difficulty``); ``workers`` processes draw the images (same files for any number).
    """
    if n_train < 2 or n_val < 1 or n_test < 0:
        raise UserError(f"need at least 2 training and 1 validation image (got {n_train}, {n_val})")
    if size < 32:
        raise UserError(f"--size {size} is too small; use 32 pixels or more")
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes) or not all(1 <= c < NUM_CLASSES for c in classes):
        raise UserError(f"--classes {classes}: give distinct VOC class indices in 1..{NUM_CLASSES - 1}")
    d = get_difficulty(difficulty, knobs)
    check_writable_dir(out_dir, "output directory")
    n_voc_train = max(1, int(round(n_train * VOC_TRAIN_FRACTION)))
    n_sbd = n_train - n_voc_train
    ids = {
        "sbd": [f"sbd_{i:06d}" for i in range(n_sbd)],
        "voc_train": [f"train_{i:06d}" for i in range(n_voc_train)],
        "val": [f"val_{i:06d}" for i in range(n_val)],
        "test": [f"test_{i:06d}" for i in range(n_test)],
    }
    jobs = [(out_dir, split, i, name, seed, size, tuple(classes), d)
            for split in ids for i, name in enumerate(ids[split])]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synthetic images", unit="img")
    # every image has its own generator, so the files do not depend on the number of processes
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers))
            done = pool.imap_unordered(_write_sample, jobs, chunksize=8)
        else:
            done = map(_write_sample, jobs)
        for _ in done:
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    def voc_pair(n: str) -> str:
        return f"{VOC_DIR}/JPEGImages/{n}.jpg {VOC_DIR}/SegmentationClass/{n}.png"

    def lines(items: list[str]) -> str:
        return "".join(x + "\n" for x in items)

    sbd_pairs = [f"{SBD_DIR}/img/{n}.jpg {SBD_DIR}/cls_png/{n}.png" for n in ids["sbd"]]
    write_text(os.path.join(out_dir, "train_augvoc.txt"), lines(sbd_pairs + [voc_pair(n) for n in ids["voc_train"]]))
    write_text(os.path.join(out_dir, "train_voc.txt"), lines([voc_pair(n) for n in ids["voc_train"]]))
    write_text(os.path.join(out_dir, "val_voc.txt"), lines([voc_pair(n) for n in ids["val"]]))
    write_text(os.path.join(out_dir, "test.txt"), lines([f"{VOC_TEST_DIR}/JPEGImages/{n}.jpg" for n in ids["test"]]))
    # the split files of the downloads, so that tools/make_filelists.py rebuilds the same lists from this tree
    seg = os.path.join(out_dir, VOC_DIR, "ImageSets", "Segmentation")
    write_text(os.path.join(seg, "train.txt"), lines(ids["voc_train"]))
    write_text(os.path.join(seg, "val.txt"), lines(ids["val"]))
    write_text(os.path.join(out_dir, VOC_TEST_DIR, "ImageSets", "Segmentation", "test.txt"), lines(ids["test"]))
    write_text(os.path.join(out_dir, SBD_DIR, "train.txt"), lines(ids["sbd"]))
    write_text(os.path.join(out_dir, SBD_DIR, "val.txt"), "")

    info = {
        "generator": "tools/make_synthetic.py",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "difficulty": difficulty,
        "knobs": dataclasses.asdict(d),
        "classes": classes,
        "class_names": [CLASS_NAMES[c] for c in classes],
        "class_shapes": {CLASS_NAMES[c]: SHAPES[k % len(SHAPES)] for k, c in enumerate(classes)},
        "class_context": {CLASS_NAMES[c]: _preferred_band(k) for k, c in enumerate(classes)},
        "counts": {"train_augvoc": n_train, "train_voc": n_voc_train, "val_voc": n_val, "test": n_test},
    }
    write_json(os.path.join(out_dir, "synthetic.json"), info)
    return info


def _parse_classes(text: str) -> list[int]:
    names = {n.replace("/", "").replace("-", ""): i for i, n in enumerate(CLASS_NAMES[:NUM_CLASSES])}
    out = []
    for tok in text.split(","):
        tok = tok.strip()
        if tok.isdigit():
            out.append(int(tok))
        elif tok.replace("/", "").replace("-", "") in names:
            out.append(names[tok.replace("/", "").replace("-", "")])
        else:
            raise UserError(f"--classes: unknown class {tok!r}; give VOC indices 1..20 or names like person,dog")
    return out


def _parse_knobs(items: list[str]) -> dict[str, Any]:
    knobs = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"--knob {item!r}: write NAME=VALUE, e.g. head_frac=0.2")
        try:
            knobs[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            raise UserError(f"--knob {item!r}: the value is not a number or pair like (1, 3)") from None
    return knobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a synthetic dataset in the Pascal VOC / SBD layout")
    p.add_argument("--out", required=True, help="output directory (the DATASET.ROOT / TEST.DATA_ROOT of a run)")
    p.add_argument("--num-train", type=int, default=600, help="training images (train_augvoc.txt)")
    p.add_argument("--num-val", type=int, default=120, help="validation images (val_voc.txt)")
    p.add_argument("--num-test", type=int, default=20, help="test images (test.txt, image paths only)")
    p.add_argument("--size", type=int, default=112, help="image width in pixels (heights 0.75-1 of it)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives byte-identical files")
    p.add_argument("--difficulty", default="default", choices=list(DIFFICULTIES), help="preset of the knobs")
    p.add_argument("--classes", default=",".join(map(str, DEFAULT_CLASSES)),
                   help="comma-separated VOC class indices or names")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes drawing images (the files do not depend on it)")
    p.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                   help="replace one knob of the preset, e.g. head_frac=0.2 or objects=(2,5); repeatable")
    args = p.parse_args(argv)
    info = make_synthetic(args.out, n_train=args.num_train, n_val=args.num_val, n_test=args.num_test,
                          size=args.size, seed=args.seed, difficulty=args.difficulty,
                          classes=_parse_classes(args.classes), knobs=_parse_knobs(args.knob), progress=True,
                          workers=args.workers)
    c = info["counts"]
    print(f"wrote {args.out}: train_augvoc {c['train_augvoc']}, train_voc {c['train_voc']}, val_voc {c['val_voc']}, "
          f"test {c['test']} images; classes {', '.join(info['class_names'])}; difficulty {args.difficulty}")
    return 0


if __name__ == "__main__":
    run_main(main)
