"""PAMR: Pixel-Adaptive Mask Refinement (SPEC 5.8).

Pixel i and its neighbour n (8 per dilation d at offsets ((a-1)d, (b-1)d), 48 for the six dilations) get the
affinity ``alpha_n(i) = softmax_n(-mean_k |I_k(i) - I_k(nb_n(i))| / (eps + 0.1 sigma_k(i)))``, with ``sigma_k(i)``
the unbiased standard deviation of the 54 values that the 3x3 kernels at the six dilations gather around i (the
centre once per dilation). The mask is then replaced T times by the alpha-weighted sum of its neighbours. Pixels
outside the image are read from the nearest border pixel (replicate padding).

Gathering neighbours with fixed 3x3 kernels applied by conv2d per channel (SPEC 5.8) writes 48 copies of
the mask [B,C,48,H,W] in every iteration. The sums here are the same but taken over shifted views of one
replicate-padded mask, accumulated in place, in blocks small enough to stay in cache (see ``pamr_propagate``):
replicate padding clamps coordinates to the border, so padding once by the largest dilation gives every smaller
dilation's neighbours too. The fixed kernels are still registered as buffers, because the original's checkpoints
hold them (``_aff.aff_x.kernel`` ...); a file whose kernels differ is rejected once, at loading.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import UserError

# kernel positions (a, b) of the 8 neighbours, in the order of SPEC 5.8; (1, 1) is the centre
NEIGHBOURS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))
# the 9 positions of the std kernel, row-major, centre included
STD_POSITIONS = tuple((a, b) for a in range(3) for b in range(3))
STD_TEMPERATURE = 0.1  # image differences are measured in units of 0.1 x local std
STD_EPS = 1e-8  # keeps the division finite where the image is flat
PAPER_DILATIONS = (1, 2, 4, 8, 12, 24)  # the paper's D and T: NET.PAMR_KERNEL and NET.PAMR_ITER by default
PAPER_ITERS = 10
# the module's own defaults (SPEC 5.8): one iteration at dilation 1; the model passes the config's values
MODULE_ITERS = 1
MODULE_DILATIONS = (1,)
# CPU block size in elements: below torch's grain size (32768), under which element-wise operations stay in one thread
CPU_BLOCK_ELEMENTS = 32_000


def local_kernel(positions: tuple[tuple[int, int], ...], difference: bool = False) -> torch.Tensor:
    """The fixed kernels [n, 1, 3, 3] of SPEC 5.8: +1 at each position, or with ``difference`` +1 at the centre
    and -1 at the position (value minus neighbour)."""
    k = torch.zeros(len(positions), 1, 3, 3)
    for i, (a, b) in enumerate(positions):
        k[i, 0, a, b] = -1.0 if difference else 1.0
        if difference:
            k[i, 0, 1, 1] = 1.0
    return k


def neighbour_offsets(dilations: tuple[int, ...]) -> list[tuple[int, int]]:
    """(dy, dx) of the 8 * len(dilations) neighbours, dilation-major (SPEC 5.8)."""
    return [((a - 1) * d, (b - 1) * d) for d in dilations for a, b in NEIGHBOURS]


def _shift(padded: torch.Tensor, pad: int, dy: int, dx: int, h: int, w: int) -> torch.Tensor:
    """View [..., h, w] of a tensor padded by ``pad``: the value at (y + dy, x + dx) for every (y, x)."""
    return padded[..., pad + dy: pad + dy + h, pad + dx: pad + dx + w]


def pamr_affinity(image: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    """Affinities alpha [B, 8*len(D), H, W] (a softmax over the neighbour axis) of the image [B, K, H, W].
    On CPU in blocks of as many images as fit CPU_BLOCK_ELEMENTS (at least one), for the reason given in
    ``pamr_propagate``."""
    if image.device.type == "cpu" and image.shape[0] > 1:
        step = _images_per_block(image[0].numel())
        return torch.cat([_affinity(image[i:i + step], dilations) for i in range(0, image.shape[0], step)])
    return _affinity(image, dilations)


def _images_per_block(per_image: int) -> int:
    """Images of ``per_image`` elements that fit one CPU block together (at least 1)."""
    return max(1, CPU_BLOCK_ELEMENTS // per_image)


def _affinity(image: torch.Tensor, dilations: tuple[int, ...]) -> torch.Tensor:
    b, k, h, w = image.shape
    pad = max(dilations)
    padded = F.pad(image, (pad, pad, pad, pad), mode="replicate")  # [B,K,H+2p,W+2p]
    # sigma_k(i): unbiased std of the 9 kernel positions at every dilation (54 values), two passes for accuracy
    gathered = [_shift(padded, pad, (a - 1) * d, (c - 1) * d, h, w) for d in dilations for a, c in STD_POSITIONS]
    mean = torch.zeros_like(image)
    for v in gathered:
        mean += v
    mean /= len(gathered)
    var = torch.zeros_like(image)
    for v in gathered:
        dev = v - mean
        var.addcmul_(dev, dev)
    sigma = (var / (len(gathered) - 1)).sqrt_()  # [B,K,H,W]
    denom = STD_EPS + STD_TEMPERATURE * sigma
    logits = torch.stack([-((image - _shift(padded, pad, dy, dx, h, w)).abs_() / denom).mean(1)
                          for dy, dx in neighbour_offsets(dilations)], dim=1)  # [B,48,H,W]
    return torch.softmax(logits, dim=1)


def pamr_propagate(mask: torch.Tensor, alpha: torch.Tensor, dilations: tuple[int, ...], iters: int) -> torch.Tensor:
    """``iters`` times M_c(i) <- sum_n alpha_n(i) M_c(nb_n(i)): mask [B, C, H, W], alpha [B, 8*len(D), H, W] ->
    [B, C, H, W].

    On CPU the mask is refined in blocks of one image and a few channels (or of a few whole images when they are
    small), each block's operations below torch's parallelisation grain: they run in one thread from the cache,
    and never wait on the other threads of the machine (each of the ~500 small operations per block would be a
    thread barrier otherwise, which costs far more than the arithmetic when cores are shared). On accelerators the
    whole batch goes at once, where fewer launches count.
    """
    b, c, h, w = mask.shape
    if mask.device.type != "cpu":
        blocks = [(slice(None), slice(None))]
    elif c * h * w <= CPU_BLOCK_ELEMENTS:  # small masks: whole images together
        step = _images_per_block(c * h * w)
        blocks = [(slice(i, i + step), slice(None)) for i in range(0, b, step)]
    else:
        group = max(1, CPU_BLOCK_ELEMENTS // (h * w))
        blocks = [(i, slice(k, k + group)) for i in range(b) for k in range(0, c, group)]
    offsets = neighbour_offsets(dilations)
    pad = max(dilations)
    out = torch.empty_like(mask)
    for images, channels in blocks:
        m = mask[images, channels]  # [b',c',H,W] or [c',H,W]
        a = alpha[images].unsqueeze(-3)  # [b',48,1,H,W] or [48,1,H,W]
        for _ in range(iters):
            padded = F.pad(m, (pad, pad, pad, pad), mode="replicate")  # [...,H+2p,W+2p]
            acc = torch.zeros_like(m)
            for n, (dy, dx) in enumerate(offsets):
                acc.addcmul_(a.select(-4, n), _shift(padded, pad, dy, dx, h, w))
            m = acc
        out[images, channels] = m
    return out


def pamr(image: torch.Tensor, mask: torch.Tensor, dilations: tuple[int, ...], iters: int) -> torch.Tensor:
    """Refine mask [B, C, h, w] with the image [B, K, H, W] -> [B, C, H, W], in float32 whatever the autocast
    state (the affinities divide by small standard deviations), or in float64 for float64 masks. The mask is first
    resized to the image (bilinear, align_corners=True, SPEC 5.8)."""
    dtype = torch.promote_types(mask.dtype, torch.float32)
    with torch.autocast(device_type=image.device.type, enabled=False):
        image, mask = image.to(dtype), mask.to(dtype)
        if mask.shape[-2:] != image.shape[-2:]:
            mask = F.interpolate(mask, size=image.shape[-2:], mode="bilinear", align_corners=True)
        return pamr_propagate(mask, pamr_affinity(image, dilations), dilations, iters)


class _LocalKernel(nn.Module):
    """One fixed kernel in the buffer ``kernel``: this module layout gives the checkpoint keys of SPEC Appendix A."""

    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        self.register_buffer("kernel", kernel)


class PAMR(nn.Module):
    """``PAMR(num_iter, dilations)(image [B,K,H,W], mask [B,C,h,w]) -> refined mask [B,C,H,W]`` (see ``pamr``).

    The defaults are those of SPEC 5.8 (one iteration at dilation 1), so that code written against that interface
    behaves the same; the paper's refinement takes its T and D from the config (``SingleStageNet``)."""

    def __init__(self, num_iter: int = MODULE_ITERS, dilations: tuple[int, ...] = MODULE_DILATIONS):
        super().__init__()
        self.num_iter = int(num_iter)
        self.dilations = tuple(int(d) for d in dilations)
        self.aff_x = _LocalKernel(local_kernel(NEIGHBOURS, difference=True))
        self.aff_m = _LocalKernel(local_kernel(NEIGHBOURS))
        self.aff_std = _LocalKernel(local_kernel(STD_POSITIONS))
        self.register_load_state_dict_post_hook(_check_kernels)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pamr(image, mask, self.dilations, self.num_iter)


def _check_kernels(module: PAMR, incompatible_keys) -> None:
    """After loading a state dict: the kernels must still be the fixed ones, which ``forward`` assumes."""
    expected = {"aff_x": local_kernel(NEIGHBOURS, difference=True), "aff_m": local_kernel(NEIGHBOURS),
                "aff_std": local_kernel(STD_POSITIONS)}
    for name, kernel in expected.items():
        loaded = getattr(module, name).kernel
        if not torch.equal(loaded.cpu(), kernel.to(loaded.dtype)):
            raise UserError(f"the loaded PAMR kernel {name}.kernel differs from the fixed kernel of SPEC 5.8; "
                            "the file is not a snapshot of this model")
