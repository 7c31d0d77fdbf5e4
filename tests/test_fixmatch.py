import math

import torch

from fixmatch_ray.algorithms.losses import fixmatch_loss, pseudo_label

LN2 = math.log(2.0)


def test_loss_hand_computed():
    logits_lb = torch.tensor([[0.0, 0.0]])  # CE = ln 2
    y_lb = torch.tensor([0])
    # sample 0: p = (0.96, 0.04) -> confident, pseudo-label 0; sample 1: p = (0.5, 0.5) -> masked
    logits_w = torch.tensor([[math.log(0.96), math.log(0.04)], [0.0, 0.0]])
    logits_s = torch.tensor([[0.0, 0.0], [5.0, -5.0]])  # CE vs label 0 of sample 0: ln 2
    out = fixmatch_loss(logits_lb, y_lb, logits_w, logits_s, lambda_u=2.0, threshold=0.95)
    assert math.isclose(out.loss_x.item(), LN2, rel_tol=1e-6)
    # mean over ALL unlabeled samples, masked ones count in the denominator
    assert math.isclose(out.loss_u.item(), LN2 / 2, rel_tol=1e-6)
    assert math.isclose(out.mask.item(), 0.5)
    assert math.isclose(out.loss.item(), LN2 + 2.0 * LN2 / 2, rel_tol=1e-6)


def test_threshold_is_inclusive_and_temperature_sharpens():
    w = torch.tensor([[1.0, 0.0]])  # softmax = 0.7311
    assert pseudo_label(w, T=1.0, threshold=0.95)[1].item() == 0.0
    # T = 0.25: softmax([4, 0]) = 0.9820 -> confident
    targets, mask = pseudo_label(w, T=0.25, threshold=0.95)
    assert targets.item() == 0 and mask.item() == 1.0
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)[0].item()
    assert pseudo_label(w, threshold=p)[1].item() == 1.0  # >= tau, as the official code


def test_no_gradient_through_pseudo_labels():
    lb = torch.zeros(2, 3, requires_grad=True)
    w = torch.tensor([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0]], requires_grad=True)
    s = torch.zeros(2, 3, requires_grad=True)
    out = fixmatch_loss(lb, torch.tensor([0, 1]), w, s, threshold=0.5)
    out.loss.backward()
    assert w.grad is None or torch.count_nonzero(w.grad) == 0
    assert torch.count_nonzero(s.grad) > 0
    # d/ds of mean CE(s, pseudo) with uniform s: (softmax - onehot) / n
    expected = (torch.full((2, 3), 1 / 3) - torch.eye(3)[:2]) / 2
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_lambda_zero_is_supervised_only():
    torch.manual_seed(0)
    lb, w, s = torch.randn(4, 5), torch.randn(6, 5), torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 3])
    out = fixmatch_loss(lb, y, w, s, lambda_u=0.0, threshold=0.0)
    assert out.mask.item() == 1.0 and out.loss_u.item() > 0
    assert torch.equal(out.loss, out.loss_x)


# -- the official sharpening ablations (run config pseudo_label, T) --------------------------------
def test_hard_sharpened_mask_comes_from_the_sharpened_distribution():
    """ab_fixmatch_sharpen: target argmax, mask max softmax(logits/T) >= tau. Logits (ln 3, 0):
    p = (0.75, 0.25); T = 0.5 squares the odds: (0.9, 0.1); T = 0.25: 81:1 -> 81/82."""
    w = torch.tensor([[math.log(3.0), 0.0]])
    assert pseudo_label(w, T=1.0, threshold=0.8)[1].item() == 0.0
    assert pseudo_label(w, T=0.5, threshold=0.8)[1].item() == 1.0  # 0.9 >= 0.8
    assert pseudo_label(w, T=0.5, threshold=0.95)[1].item() == 0.0
    assert pseudo_label(w, T=0.25, threshold=0.95)[1].item() == 1.0  # 81/82 = 0.9878
    lb, s = torch.zeros(1, 2), torch.tensor([[0.0, math.log(3.0)]])  # CE vs label 0: ln 4
    out = fixmatch_loss(lb, torch.tensor([0]), w, s, T=0.5, threshold=0.8)
    assert math.isclose(out.loss_u.item(), math.log(4.0), rel_tol=1e-6) and out.mask.item() == 1.0


def test_soft_pseudo_label_masks_on_the_plain_softmax_and_targets_the_sharpened_one():
    """ab_fixmatch_sharpen_conditional_consistency: mask from p = softmax(logits) (0.75 here), the
    target softmax(logits/T) = (0.9, 0.1) for T = 0.5, soft cross-entropy against it."""
    from fixmatch_ray.algorithms.losses import soft_pseudo_label

    w = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    targets, mask = soft_pseudo_label(w, T=0.5, threshold=0.7)
    assert torch.allclose(targets, torch.tensor([[0.9, 0.1], [0.5, 0.5]]), atol=1e-6)
    assert mask.tolist() == [1.0, 0.0]
    # sharpening does not open the mask: at tau = 0.8 the plain 0.75 is masked, though 0.9 >= 0.8
    assert soft_pseudo_label(w, T=0.5, threshold=0.8)[1].tolist() == [0.0, 0.0]

    lb = torch.zeros(1, 2)
    s = torch.tensor([[0.0, math.log(3.0)], [9.0, -9.0]])  # log_softmax(s[0]) = (ln 1/4, ln 3/4)
    out = fixmatch_loss(lb, torch.tensor([1]), w, s, T=0.5, threshold=0.7, pseudo="soft", lambda_u=2.0)
    ce0 = -(0.9 * math.log(0.25) + 0.1 * math.log(0.75))  # 1.2764; sample 1 is masked
    assert math.isclose(out.loss_u.item(), ce0 / 2, rel_tol=1e-6)
    assert math.isclose(out.mask.item(), 0.5)
    assert math.isclose(out.loss.item(), math.log(2.0) + 2.0 * ce0 / 2, rel_tol=1e-6)


def test_soft_at_temperature_one_is_cross_entropy_against_the_prediction():
    w = torch.tensor([[2.0, 0.0, -1.0]])
    s = torch.tensor([[0.5, 0.0, 1.0]])
    p = torch.softmax(w, -1)
    out = fixmatch_loss(torch.zeros(1, 3), torch.tensor([0]), w, s, threshold=0.0, pseudo="soft")
    assert math.isclose(out.loss_u.item(), -(p * torch.log_softmax(s, -1)).sum().item(), rel_tol=1e-6)


def test_soft_targets_carry_no_gradient_and_unknown_variant_is_refused():
    w = torch.tensor([[1.0, 0.0]], requires_grad=True)
    s = torch.zeros(1, 2, requires_grad=True)
    fixmatch_loss(torch.zeros(1, 2), torch.tensor([0]), w, s, threshold=0.0, pseudo="soft", T=0.5).loss.backward()
    assert w.grad is None or torch.count_nonzero(w.grad) == 0
    assert torch.allclose(s.grad, torch.tensor([[0.5, 0.5]]) - torch.softmax(torch.tensor([2.0, 0.0]), 0))
    import pytest

    with pytest.raises(ValueError, match="unknown pseudo-label 'fuzzy'"):
        fixmatch_loss(torch.zeros(1, 2), torch.tensor([0]), w, s, pseudo="fuzzy")


def test_default_path_is_bit_identical_to_the_explicit_hard_one():
    torch.manual_seed(1)
    lb, w, s = torch.randn(4, 10), torch.randn(12, 10) * 3, torch.randn(12, 10)
    y = torch.randint(0, 10, (4,))
    a = fixmatch_loss(lb, y, w, s, threshold=0.5)
    b = fixmatch_loss(lb, y, w, s, threshold=0.5, pseudo="hard", T=1.0)
    assert all(torch.equal(x, z) for x, z in zip(a, b))
