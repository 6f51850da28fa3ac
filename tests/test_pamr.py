"""PAMR: hand-derived cases (uniform averaging on a flat image, an edge stopping propagation, replicate padding,
dilations) and equality with the direct transcription of SPEC 5.8 in bench/baselines/pamr_spec.py."""
from __future__ import annotations

import pytest
import torch

from bench.baselines.pamr_spec import PAMRSpec
from models.mods.pamr import PAMR, pamr, pamr_affinity
from utils.errors import UserError

DILATIONS = (1, 2, 4, 8, 12, 24)  # the paper's D and T
ITERS = 10
ATOL = 1e-5  # float32: the 48-term sums are accumulated in another order than the baseline's


def delta(h: int, w: int, y: int, x: int, channels: int = 1) -> torch.Tensor:
    m = torch.zeros(1, channels, h, w)
    m[:, :, y, x] = 1.0
    return m


def test_flat_image_gives_uniform_affinities():
    alpha = pamr_affinity(torch.full((2, 3, 9, 11), 0.4), DILATIONS)
    assert alpha.shape == (2, 48, 9, 11)
    assert torch.allclose(alpha, torch.full_like(alpha, 1 / 48))


def test_flat_image_averages_the_48_neighbours_uniformly():
    # one step moves the mass of a pixel to the 48 pixels that see it as a neighbour, 1/48 each, none stays
    out = pamr(torch.zeros(1, 3, 61, 61), delta(61, 61, 30, 30), DILATIONS, iters=1)
    expected = torch.zeros(61, 61)
    for d in DILATIONS:
        for dy in (-d, 0, d):
            for dx in (-d, 0, d):
                if dy or dx:
                    expected[30 + dy, 30 + dx] = 1 / 48
    assert torch.allclose(out[0, 0], expected, atol=1e-7)
    # a constant mask stays constant, whatever the image
    const = torch.full((1, 2, 20, 20), 0.25)
    assert torch.allclose(pamr(torch.rand(1, 3, 20, 20), const, DILATIONS, ITERS), const)


def test_dilation_two_skips_the_direct_neighbours():
    out = pamr(torch.zeros(1, 3, 11, 11), delta(11, 11, 5, 5), (2,), iters=1)[0, 0]
    assert out[5, 5] == 0 and out[4:7, 4:7].sum() == 0  # not the pixel itself, not its direct neighbours
    for y, x in ((3, 3), (3, 5), (3, 7), (5, 3), (5, 7), (7, 3), (7, 5), (7, 7)):
        assert out[y, x] == pytest.approx(1 / 8)
    assert out.sum() == pytest.approx(1.0)


def test_replicate_padding_at_the_border():
    # at the corner (0, 0) three of the 8 neighbours of every dilation fall outside and read the corner itself
    img = torch.zeros(1, 3, 30, 30)
    assert pamr(img, delta(30, 30, 0, 0), (1,), iters=1)[0, 0, 0, 0] == pytest.approx(3 / 8)
    assert pamr(img, delta(30, 30, 0, 0), DILATIONS, iters=1)[0, 0, 0, 0] == pytest.approx(3 * 6 / 48)
    # on an edge (not a corner) three neighbours per dilation fall outside, one of them onto the pixel itself
    assert pamr(img, delta(30, 30, 0, 10), (3,), iters=1)[0, 0, 0, 10] == pytest.approx(1 / 8)


def test_an_image_edge_stops_propagation():
    img = torch.zeros(1, 3, 32, 32)
    img[..., 16:] = 1.0  # a vertical edge
    mask = torch.zeros(1, 2, 32, 32)
    mask[:, 0, :, :16] = 1.0
    mask[:, 1, :, 16:] = 1.0
    out = pamr(img, mask, DILATIONS, ITERS)
    assert out[0, 0, :, 16:].max() < 1e-6 and out[0, 0, :, :16].min() > 1 - 1e-6
    # without the edge the same mask bleeds across
    flat = pamr(torch.zeros_like(img), mask, DILATIONS, ITERS)
    assert flat[0, 0, :, 16].min() > 0.4


# (1, 5, 81, 81): on CPU the channels go in blocks of 4 and 1
@pytest.mark.parametrize("shape", [(2, 21, 23, 30), (1, 5, 81, 81), (5, 21, 20, 20)])
def test_equals_the_spec_formulation(shape):
    torch.manual_seed(0)
    b, c, h, w = shape
    image = torch.rand(b, 3, h, w)
    image[:, :, : h // 2] *= 0.05  # a low-contrast half: small standard deviations
    mask = torch.softmax(3 * torch.randn(b, c, h, w), 1)
    ref = PAMRSpec(ITERS, DILATIONS)(image, mask)
    out = PAMR(ITERS, DILATIONS)(image, mask)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=ATOL, rtol=0)


def test_equals_the_spec_formulation_with_resize_and_other_settings():
    torch.manual_seed(1)
    image, mask = torch.rand(2, 3, 17, 13), torch.softmax(torch.randn(2, 4, 9, 7), 1)  # mask resized to the image
    ref = PAMRSpec(3, (1, 3))(image, mask)
    assert ref.shape == (2, 4, 17, 13)
    assert torch.allclose(PAMR(3, (1, 3))(image, mask), ref, atol=ATOL, rtol=0)


def test_module_defaults_are_the_originals():
    """PAMR() is the original module's PAMR(): one iteration at dilation 1 (the model passes the config's T, D)."""
    torch.manual_seed(2)
    image, mask = torch.rand(1, 3, 12, 10), torch.softmax(torch.randn(1, 3, 12, 10), 1)
    module = PAMR()
    assert (module.num_iter, module.dilations) == (1, (1,))
    assert torch.allclose(module(image, mask), PAMRSpec()(image, mask), atol=ATOL, rtol=0)
    assert torch.allclose(module(image, mask), pamr(image, mask, (1,), 1))


def test_float64_stays_float64():
    torch.manual_seed(3)
    image, mask = torch.rand(1, 3, 16, 16), torch.softmax(torch.randn(1, 3, 16, 16), 1)
    out = pamr(image.double(), mask.double(), DILATIONS, ITERS)
    assert out.dtype == torch.float64
    assert torch.allclose(out.float(), pamr(image, mask, DILATIONS, ITERS), atol=1e-6)


def test_float32_under_autocast():
    torch.manual_seed(3)
    image, mask = torch.rand(1, 3, 16, 16), torch.softmax(torch.randn(1, 3, 16, 16), 1)
    expected = pamr(image, mask, DILATIONS, ITERS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pamr(image.bfloat16(), mask, DILATIONS, ITERS)
    assert out.dtype == torch.float32
    assert torch.allclose(out, pamr(image.bfloat16().float(), mask, DILATIONS, ITERS), atol=1e-7)
    assert torch.allclose(out, expected, atol=0.05)  # only the bf16 rounding of the image differs


def test_fixed_kernels_are_the_checkpoint_buffers():
    module, spec = PAMR(), PAMRSpec()
    state = module.state_dict()
    assert list(state) == ["aff_x.kernel", "aff_m.kernel", "aff_std.kernel"]
    assert [tuple(v.shape) for v in state.values()] == [(8, 1, 3, 3), (8, 1, 3, 3), (9, 1, 3, 3)]
    for name in ("aff_x", "aff_m", "aff_std"):
        assert torch.equal(state[f"{name}.kernel"], getattr(spec, name).kernel)
    # aff_x: centre minus neighbour n; neighbour order (0,0),(0,1),(0,2),(1,0),(1,2),(2,0),(2,1),(2,2)
    assert state["aff_x.kernel"][4, 0].tolist() == [[0, 0, 0], [0, 1, -1], [0, 0, 0]]
    assert state["aff_std.kernel"].sum().item() == 9 and state["aff_std.kernel"][4, 0, 1, 1] == 1


def test_loading_other_kernels_is_refused():
    module = PAMR()
    state = module.state_dict()
    state["aff_m.kernel"] = torch.ones(8, 1, 3, 3)
    with pytest.raises(UserError, match="aff_m.kernel"):
        module.load_state_dict(state)
    module.load_state_dict(PAMR().state_dict())  # the fixed kernels load


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_the_spec_formulation():
    torch.manual_seed(4)
    image, mask = torch.rand(3, 3, 41, 37), torch.softmax(3 * torch.randn(3, 21, 41, 37), 1)
    ref = PAMRSpec(ITERS, DILATIONS)(image, mask)
    out = PAMR(ITERS, DILATIONS).cuda()(image.cuda(), mask.cuda())
    assert out.is_cuda and torch.allclose(out.cpu(), ref, atol=ATOL, rtol=0)
