"""The paper's maths against values derived by hand: background logit, nGWP, focal penalty, pseudo ground truth,
class-balanced CE, the total loss with its PRETRAIN gate, the Stochastic Gate and the classification criteria."""
from __future__ import annotations

import math

import pytest
import torch

from losses import get_criterion
from losses.functional import (add_background_logit, balanced_mask_loss, class_scores, focal_penalty,
                               foreground_coverage, ngwp, pseudo_gt, rescale_and_clean, total_loss)
from models.mods.sg import StochasticGate, stochastic_gate
from utils.errors import UserError


def grid(*channels: list[float]) -> torch.Tensor:
    """[1, C, 1, W] from one list of W values per channel."""
    return torch.tensor(channels, dtype=torch.float32)[None, :, None, :]


def test_background_logit_is_constant_one():
    fg = torch.randn(2, 20, 3, 4)
    x = add_background_logit(fg)
    assert x.shape == (2, 21, 3, 4)
    assert torch.equal(x[:, 0], torch.ones(2, 3, 4))
    assert torch.equal(x[:, 1:], fg)
    # where every class has logit 1 the softmax is uniform, background included
    uniform = torch.softmax(add_background_logit(torch.ones(1, 20, 1, 1)), 1)
    assert torch.allclose(uniform, torch.full((1, 21, 1, 1), 1 / 21))


def test_ngwp_by_hand():
    x = grid([1.0, 1.0], [2.0, -1.0])
    m = grid([0.5, 0.25], [0.5, 0.75])
    # s_0 = (0.5 + 0.25) / (1 + 0.75); s_1 = (2 * 0.5 - 0.75) / (1 + 1.25)
    assert torch.allclose(ngwp(x, m), torch.tensor([[3 / 7, 1 / 9]]))


def test_focal_penalty_by_hand():
    m = grid([0.5, 0.25], [0.5, 0.75])  # mean masks 0.375 and 0.625
    expected = [(1 - 0.375) ** 3 * math.log(0.01 + 0.375), (1 - 0.625) ** 3 * math.log(0.01 + 0.625)]
    assert torch.allclose(focal_penalty(m, 3, 0.01), torch.tensor([expected]))
    # p and lambda are honoured: p = 1, lambda = 0.1
    assert torch.allclose(focal_penalty(m, 1, 0.1)[0, 1], torch.tensor(0.375 * math.log(0.725)))
    # an empty mask is penalised by log(lambda), a full one not at all
    assert torch.allclose(focal_penalty(grid([0.0, 0.0], [1.0, 1.0]), 3, 0.01), torch.tensor([[math.log(0.01), 0.0]]))


def test_class_scores_drop_the_background():
    x = grid([1.0, 1.0], [2.0, -1.0])
    m = grid([0.5, 0.25], [0.5, 0.75])
    expected = 1 / 9 + 0.375 ** 3 * math.log(0.635)
    y = class_scores(x, m, 3, 0.01)
    assert y.shape == (1, 1)
    assert torch.allclose(y, torch.tensor([[expected]]))


def test_foreground_coverage_over_present_classes():
    masks = torch.zeros(2, 3, 2, 2)
    masks[:, 1] = 0.5
    masks[:, 2, 0] = 1.0  # mean 0.5 as well, then 0.25 below
    masks[1, 2] = 0.25
    labels = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert torch.allclose(foreground_coverage(masks, labels), torch.tensor([0.5, 0.25]))
    assert foreground_coverage(masks, torch.zeros(2, 2)).tolist() == [0.0, 0.0]


def test_rescale_and_clean_zeroes_absent_classes_keeps_background():
    masks = torch.rand(1, 3, 2, 2)
    out = rescale_and_clean(masks, torch.tensor([[0.0, 1.0]]), (3, 3))
    assert out.shape == (1, 3, 3, 3)
    assert torch.equal(out[:, 1], torch.zeros(1, 3, 3))
    # align_corners=True keeps the corners
    assert torch.allclose(out[0, 0, ::2, ::2], masks[0, 0]) and torch.allclose(out[0, 2, ::2, ::2], masks[0, 2])


def test_pseudo_gt_thresholds_floor_strictness_and_ambiguity():
    #          pixel: 0     1     2     3     4     5
    masks = grid([0.90, 0.50, 0.64, 0.30, 0.60, 0.10],   # background: max 0.9 -> tau 0.63
                 [0.10, 0.50, 0.45, 0.30, 0.05, 0.32],   # class 1: max 0.5 -> tau 0.3
                 [0.00, 0.00, 0.15, 0.18, 0.10, 0.00])   # class 2: 0.6 x 0.18 < floor 0.2 -> tau 0.2
    p = pseudo_gt(masks)
    # bg: pixel 0 (0.9) and 2 (0.64 > 0.63); pixel 4 (0.6) would pass a 0.6 cut-off but not the background's 0.7
    # class 1: pixels 1, 2 and 5 (0.32 passes 0.6 x 0.5 but not 0.7 x 0.5); pixel 3 equals tau: strict ">" drops it
    # class 2: nothing reaches the floor 0.2 (without it pixels 2-4 would pass 0.108)
    # pixel 2 is claimed by background and class 1: ambiguous, cleared
    assert p.tolist() == grid([1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]).tolist()
    assert p.dtype == masks.dtype


def test_pseudo_gt_is_per_image():
    masks = torch.cat([grid([0.9, 0.1], [0.1, 0.9]), grid([0.1, 0.1], [0.3, 0.05])])
    # image 2: background max 0.1 -> tau floor 0.2 selects nothing; class 1 max 0.3 -> tau 0.2 selects pixel 0
    assert pseudo_gt(masks).tolist() == [[[[1, 0]], [[0, 1]]], [[[0, 0]], [[1, 0]]]]


def test_balanced_ce_weights_ignore_and_mean_over_all_pixels():
    logits = torch.zeros(1, 3, 1, 4)  # uniform: CE = log 3 on every labelled pixel
    pseudo = grid([1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0])  # pixel 3 has no label: ignored
    labels = torch.tensor([[1.0, 0.0]])
    # n_bg = 2, n_1 = 1, n = 3: w_bg = (3 - 2) / 4, w_1 = (3 - 1) / 4; the mean runs over all 4 pixels
    expected = (0.25 + 0.25 + 0.5) * math.log(3) / 4
    assert torch.allclose(balanced_mask_loss(logits, pseudo, labels), torch.tensor([expected]))


def test_balanced_ce_uses_log_softmax_of_the_logits():
    logits = grid([0.0, 0.0], [math.log(2), 0.0], [0.0, 0.0])
    pseudo = grid([0, 1], [1, 0], [0, 0])
    # pixel 0: class 1 with probability 2/4 -> CE log 2; pixel 1: background, uniform -> log 3; weights (2-1)/3
    expected = (math.log(2) + math.log(3)) / 3 / 2
    assert torch.allclose(balanced_mask_loss(logits, pseudo, torch.tensor([[1.0, 0.0]])), torch.tensor([expected]))


def test_balanced_ce_gate_needs_every_gt_class_and_background():
    logits = torch.zeros(3, 3, 1, 4)
    pseudo = grid([1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]).expand(3, -1, -1, -1)
    labels = torch.tensor([[1.0, 0.0],    # GT {1}: pseudo has bg and 1 -> counts
                           [1.0, 1.0],    # GT {1, 2}: class 2 missing from the pseudo GT -> gated to 0
                           [0.0, 0.0]])   # GT {}: pseudo has an extra class -> gated to 0
    loss = balanced_mask_loss(logits, pseudo, labels)
    assert loss[0] > 0 and loss[1:].tolist() == [0.0, 0.0]
    no_bg = grid([0, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0])  # background missing -> gated
    assert balanced_mask_loss(torch.zeros(1, 3, 1, 4), no_bg, labels[:1]).item() == 0.0


def test_balanced_ce_upsamples_the_logits():
    logits = torch.zeros(1, 3, 1, 2)
    pseudo = torch.zeros(1, 3, 2, 4)
    pseudo[:, 0, 0] = 1
    pseudo[:, 2, 1] = 1
    # n_0 = n_2 = 4, n = 8: both weights 4/9, every pixel labelled with CE log 3
    loss = balanced_mask_loss(logits, pseudo, torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(loss, torch.tensor([4 / 9 * math.log(3)]))


def test_balanced_ce_gradient_reaches_the_logits_only():
    logits = torch.zeros(1, 3, 1, 4, requires_grad=True)
    pseudo = grid([1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0])
    balanced_mask_loss(logits, pseudo, torch.tensor([[1.0, 0.0]])).sum().backward()
    assert logits.grad[0, :, 0, 3].abs().sum() == 0  # ignored pixel
    assert logits.grad[0, 1, 0, 2] < 0  # the pseudo class is pushed up


# --- Stochastic Gate ---

def test_sg_eval_is_the_fixed_convex_mix():
    x1, x2 = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    assert torch.allclose(stochastic_gate(x1, x2, 0.3, training=False), 0.7 * x1 + 0.3 * x2)
    gate = StochasticGate(0.3).eval()
    assert torch.allclose(gate(x1, x2), 0.7 * x1 + 0.3 * x2)


def test_sg_train_picks_deep_with_rate_one_minus_psi_and_expectation_deep():
    torch.manual_seed(0)
    n = 200_000
    x1, x2 = torch.ones(1, 2, n // 2, 1), torch.full((1, 2, n // 2, 1), 2.0)
    out = StochasticGate(0.3).train()(x1, x2)
    deep = (1 - 0.3 * 2) / 0.7  # r = 1: (x1 - psi x2) / (1 - psi)
    is_deep = torch.isclose(out, torch.tensor(deep))
    assert torch.all(is_deep | (out == 2.0))  # r = 0: the shallow value
    assert abs(is_deep.float().mean().item() - 0.7) < 0.005  # 11 standard deviations
    assert abs(out.mean().item() - 1.0) < 0.01  # E = 0.7 * 4/7 + 0.3 * 2 = x1


def test_sg_draws_a_fresh_mask_per_call_of_any_shape():
    torch.manual_seed(0)
    gate = StochasticGate(0.5).train()
    x1, x2 = torch.zeros(1, 8, 8, 8), torch.ones(1, 8, 8, 8)
    a, b = gate(x1, x2), gate(x1, x2)
    assert not torch.equal(a, b)
    assert gate(torch.zeros(2, 8, 5, 7), torch.ones(2, 8, 5, 7)).shape == (2, 8, 5, 7)  # the original cached a shape
    torch.manual_seed(1)
    c = gate(x1, x2)
    torch.manual_seed(1)
    assert torch.equal(c, gate(x1, x2))  # the global RNG: seeded runs repeat


def test_sg_needs_equal_channels():
    with pytest.raises(ValueError, match="equal channels"):
        stochastic_gate(torch.zeros(1, 4, 2, 2), torch.zeros(1, 3, 2, 2), 0.3, training=True)


# --- classification criteria ---

def test_soft_margin_by_hand():
    x, y = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    # mean over classes of -log sigmoid(0) = log 2 and -log sigmoid(-2) = log(1 + e^2)
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert torch.allclose(get_criterion("SoftMargin")(x, y), torch.tensor(expected))


def test_hinge_by_hand():
    hinge = get_criterion("Hinge")
    x = torch.tensor([[0.5, 0.0, 2.0], [0.5, 0.0, 2.0]])
    y = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    # sample 1: positive 0 vs negatives 1, 2: max(0, 1 - 0.5) + max(0, 1 - (0.5 - 2)) = 3, / 3 classes
    # sample 2: positives {0, 2} vs negative 1: max(0, 1 - 0.5) + max(0, 1 - 2) = 0.5, / 3
    assert torch.allclose(hinge(x, y), torch.tensor((1.0 + 0.5 / 3) / 2))


def test_unknown_criterion_lists_the_valid_ones():
    with pytest.raises(UserError, match="NET.LOSS.*SoftMargin, Hinge"):
        get_criterion("Focal")


def test_total_loss_adds_the_mask_loss_from_epoch_pretrain_on():
    """SPEC 5.12 with PRETRAIN 5 and MASK_LOSS_BCE 0.5: 0.75 + 0.5 * 0.25 = 0.875 from epoch 5, 0.75 before."""
    cls, mask = torch.tensor(0.75), torch.tensor(0.25)
    assert [total_loss(cls, mask, epoch, 5, 0.5).item() for epoch in (0, 4, 5, 6)] == [0.75, 0.75, 0.875, 0.875]
    assert total_loss(cls, mask, 0, 0, 1.0).item() == 1.0  # PRETRAIN 0: from the first epoch
    assert total_loss(cls, None, 9, 5, 1.0) is cls  # the CAM baseline has no mask loss


def test_total_loss_gradients_follow_the_gate():
    """Before PRETRAIN the mask term gets no gradient; after it, d loss / d loss_mask = MASK_LOSS_BCE."""
    cls, mask = torch.tensor(0.5, requires_grad=True), torch.tensor(2.0, requires_grad=True)
    total_loss(cls, mask, 1, 2, 3.0).backward()
    assert cls.grad.item() == 1.0 and mask.grad is None
    total_loss(cls, mask, 2, 2, 3.0).backward()
    assert cls.grad.item() == 2.0 and mask.grad.item() == 3.0
