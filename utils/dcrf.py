"""Dense CRF post-processing (SPEC 8.6) through pydensecrf (the ``pydensecrf2`` package).

The parameters of SPEC 8.6 are the defaults of the config keys MASKS.CRF.{ITER,
POS_XY_STD, POS_W, BI_XY_STD, BI_RGB_STD, BI_W}. The unary is the negative log of the merged probabilities, clipped
at ``UNARY_CLIP`` (pydensecrf's ``unary_from_softmax`` with its defaults), so the background, already raised to
BG_POW and not re-normalised, enters as it is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.errors import UserError

UNARY_CLIP = 1e-5  # unary_from_softmax's default: -log(1e-5) ~ 11.5 for an impossible label


@dataclass(frozen=True)
class CRFParams:
    """Mean-field iterations, the Gaussian (position) kernel and the bilateral (position + colour) kernel."""

    iterations: int = 10
    pos_xy_std: float = 3
    pos_w: float = 3
    bi_xy_std: float = 80
    bi_rgb_std: float = 13
    bi_w: float = 10

    @classmethod
    def from_cfg(cls, crf_cfg) -> "CRFParams":
        """From ``cfg.MASKS.CRF``."""
        return cls(iterations=crf_cfg.ITER, pos_xy_std=crf_cfg.POS_XY_STD, pos_w=crf_cfg.POS_W,
                   bi_xy_std=crf_cfg.BI_XY_STD, bi_rgb_std=crf_cfg.BI_RGB_STD, bi_w=crf_cfg.BI_W)

    def check(self) -> None:
        """Values pydensecrf would accept but that make no CRF (a zero std divides by zero)."""
        if self.iterations < 0:
            raise UserError(f"config key MASKS.CRF.ITER is {self.iterations}; give a number of iterations >= 0")
        for key, value in (("POS_XY_STD", self.pos_xy_std), ("BI_XY_STD", self.bi_xy_std),
                           ("BI_RGB_STD", self.bi_rgb_std)):
            if not value > 0:
                raise UserError(f"config key MASKS.CRF.{key} is {value}; a kernel width must be > 0")


def require_pydensecrf() -> None:
    """Fail up front, with the fix, when the CRF cannot run."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError as e:
        raise UserError(f"the dense CRF needs pydensecrf, which cannot be imported ({e}); install it with "
                        "'pip install pydensecrf2', or run without the CRF with --no-crf") from None


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Mean-field marginals Q [C, H, W] float32 of the dense CRF over ``probs`` [C, H, W] and the RGB
    ``image`` [H, W, 3] uint8 (SPEC 8.6); the refined label map is ``Q.argmax(0)``."""
    import pydensecrf.densecrf as dcrf

    c, h, w = probs.shape
    if image.shape != (h, w, 3) or image.dtype != np.uint8:
        raise ValueError(f"dense_crf: image must be uint8 [{h}, {w}, 3], got {image.dtype} {list(image.shape)}")
    d = dcrf.DenseCRF2D(w, h, c)
    unary = -np.log(np.clip(probs, UNARY_CLIP, 1.0)).reshape(c, -1).astype(np.float32)  # [C, H*W]
    d.setUnaryEnergy(np.ascontiguousarray(unary))
    d.addPairwiseGaussian(sxy=params.pos_xy_std, compat=params.pos_w)
    d.addPairwiseBilateral(sxy=params.bi_xy_std, srgb=params.bi_rgb_std, rgbim=np.ascontiguousarray(image),
                           compat=params.bi_w)
    q = d.inference(params.iterations)
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)
