import math

import torch

from fixmatch_ray.fixmatch import fixmatch_loss, pseudo_label

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
