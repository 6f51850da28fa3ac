"""The dense CRF (SPEC 8.6): the unary, the original's parameters, a case where it must relabel, a missing package."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from utils.config import get_cfg_defaults
from utils.dcrf import UNARY_CLIP, CRFParams, dense_crf, require_pydensecrf
from utils.errors import UserError


def _two_regions(size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A red left half and a blue right half; probabilities [21, H, W]: class 1 on the left, background on the
    right, and a small blob inside the red half where class 2 is (weakly) the most probable."""
    h = w = size
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:, : w // 2] = (200, 30, 30)
    image[:, w // 2:] = (30, 30, 200)
    probs = np.full((21, h, w), 1e-3, dtype=np.float32)
    probs[1, :, : w // 2], probs[0, :, : w // 2] = 0.7, 0.28
    probs[0, :, w // 2:], probs[1, :, w // 2:] = 0.7, 0.28
    blob = (slice(10, 13), slice(4, 7))
    probs[:, blob[0], blob[1]] = 1e-3
    probs[2][blob], probs[1][blob], probs[0][blob] = 0.45, 0.4, 0.13
    return image, probs


def test_defaults_are_the_originals():
    assert CRFParams.from_cfg(get_cfg_defaults().MASKS.CRF) == CRFParams(10, 3, 3, 80, 13, 10)


def test_crf_relabels_a_blob_that_disagrees_with_its_region():
    image, probs = _two_regions()
    before = probs.argmax(0)
    assert (before[10:13, 4:7] == 2).all()
    q = dense_crf(image, probs)
    after = q.argmax(0)
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-4)  # mean-field marginals
    assert (after[10:13, 4:7] == 1).all()  # smoothed into the surrounding region of the same colour
    assert (after[:, :12][before[:, :12] == 1] == 1).all() and (after[:, 12:] == 0).all()


def test_zero_iterations_give_the_normalised_clipped_probabilities():
    image, probs = _two_regions(8)
    probs[5, 0, 0] = 0.0  # clipped to 1e-5 by the unary
    q = dense_crf(image, probs, CRFParams(iterations=0))
    clipped = np.clip(probs, UNARY_CLIP, 1)
    np.testing.assert_allclose(q, clipped / clipped.sum(0, keepdims=True), rtol=1e-4, atol=1e-7)


def test_parameters_change_the_result():
    image, probs = _two_regions()
    weak = dense_crf(image, probs, CRFParams(bi_w=0, pos_w=0)).argmax(0)
    assert np.array_equal(weak, probs.argmax(0))  # no pairwise terms: the unary's argmax


def test_bad_parameters_are_user_errors():
    with pytest.raises(UserError, match="MASKS.CRF.BI_RGB_STD is 0"):
        CRFParams(bi_rgb_std=0).check()
    with pytest.raises(UserError, match="MASKS.CRF.ITER is -1"):
        CRFParams(iterations=-1).check()


def test_missing_pydensecrf_names_the_package_and_the_way_around(monkeypatch):
    require_pydensecrf()  # installed here
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(UserError, match="pip install pydensecrf2.*--no-crf") as e:
        require_pydensecrf()
    assert len(str(e.value).splitlines()) == 1
