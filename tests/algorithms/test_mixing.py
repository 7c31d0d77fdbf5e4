"""The shared math of MixMatch, UDA and ReMixMatch against values worked out by hand."""
import math

import pytest
import torch

from fixmatch_ray.algorithms import mixing


def test_sharpen_squares_and_renormalises_at_half_temperature():
    p = torch.tensor([[0.6, 0.3, 0.1]])
    # T = 0.5: p^2 = .36, .09, .01 (sum .46)
    assert torch.allclose(mixing.sharpen(p, 0.5), torch.tensor([[0.36 / 0.46, 0.09 / 0.46, 0.01 / 0.46]]))
    assert torch.allclose(mixing.sharpen(p, 1.0), p)


def test_mixup_keeps_the_larger_weight_on_the_sample_itself():
    x = torch.tensor([[1.0], [3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    lam = torch.tensor([0.2, 0.9])  # λ' = 0.8 and 0.9
    index = torch.tensor([1, 0])
    xm, lm = mixing.mixup(x, labels, lam, index)
    assert torch.allclose(xm, torch.tensor([[0.8 * 1 + 0.2 * 3], [0.9 * 3 + 0.1 * 1]]))
    assert torch.allclose(lm, torch.tensor([[0.8, 0.2], [0.1, 0.9]]))


def test_interleave_offsets_put_the_remainder_on_the_last_groups():
    assert mixing.interleave_offsets(5, 2) == [0, 1, 3, 5]  # groups 1, 2, 2
    assert mixing.interleave_offsets(64, 2) == [0, 21, 42, 64]
    assert mixing.interleave_offsets(6, 2) == [0, 2, 4, 6]


def test_interleave_swaps_segment_i_of_batch_i_with_batch_zero_and_round_trips():
    a, b, c = torch.arange(0, 5), torch.arange(10, 15), torch.arange(20, 25)
    out = mixing.interleave([a, b, c])
    # offsets [0, 1, 3, 5]: b's rows 1-2 and c's rows 3-4 trade places with a's
    assert out[0].tolist() == [0, 11, 12, 23, 24]
    assert out[1].tolist() == [10, 1, 2, 13, 14]
    assert out[2].tolist() == [20, 21, 22, 3, 4]
    back = mixing.interleave(out)
    assert [t.tolist() for t in back] == [a.tolist(), b.tolist(), c.tolist()]
    index = mixing.interleave_index(3, 5)
    assert sorted(index.tolist()) == list(range(15))


def test_moving_average_starts_uniform_and_keeps_the_last_rows():
    ma = mixing.MovingAverage(2, size=2)
    assert torch.allclose(ma(), torch.tensor([0.5, 0.5]))
    ma.update(torch.tensor([1.0, 0.0]))  # rows [.5 .5], [1 0] -> mean [.75 .25]
    assert torch.allclose(ma(), torch.tensor([0.75, 0.25]))
    ma.update(torch.tensor([0.0, 1.0]))  # the uniform row is gone: [1 0], [0 1]
    assert torch.allclose(ma(), torch.tensor([0.5, 0.5]))
    ma.update(torch.tensor([0.0, 1.0]))
    assert torch.allclose(ma(), torch.tensor([0.0, 1.0]))


def test_alignment_scales_by_data_over_model_and_renormalises():
    p = torch.tensor([[0.5, 0.5]])
    p_data = torch.tensor([0.5, 0.5])
    p_model = torch.tensor([0.8, 0.2])  # ratios ~ .625 and 2.5
    r0, r1 = (1e-6 + 0.5) / (1e-6 + 0.8), (1e-6 + 0.5) / (1e-6 + 0.2)
    want = torch.tensor([[r0 / (r0 + r1), r1 / (r0 + r1)]])
    assert torch.allclose(mixing.align(p, p_data, p_model), want)


def test_rotate_quarters_turns_each_quarter_as_labelled():
    img = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    x = img.repeat(4, 1, 1, 1)
    out, labels = mixing.rotate_quarters(x)
    assert labels.tolist() == [0, 1, 2, 3]
    assert out[0, 0].tolist() == [[1, 2], [3, 4]]
    assert out[1, 0].tolist() == [[4, 3], [2, 1]]  # 180°
    assert out[2, 0].tolist() == [[2, 4], [1, 3]]  # 90° counter-clockwise
    assert out[3, 0].tolist() == [[3, 1], [4, 2]]  # 90° clockwise


def test_rotation_loss_is_the_cross_entropy_of_the_four_classes():
    logits = torch.zeros(2, 4)
    logits[0, 0] = math.log(3.0)  # p = 3/6, 1/6, 1/6, 1/6
    target = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    want = (-math.log(0.5) - math.log(0.25)) / 2
    assert mixing.soft_cross_entropy(logits, target).item() == pytest.approx(want)


@pytest.mark.parametrize("schedule,progress,coeff", [
    ("linear", 0.25, 0.25), ("exp", 0.5, math.exp(-2.5)), ("log", 0.5, 1 - math.exp(-2.5)),
    ("no", 0.0, 1.0), ("linear", 2.0, 1.0), ("exp", 1.0, 1.0)])
def test_tsa_threshold_runs_from_one_over_c_to_one(schedule, progress, coeff):
    assert mixing.tsa_threshold(schedule, progress, 10) == pytest.approx(coeff * 0.9 + 0.1)


def test_tsa_cross_entropy_drops_confident_samples_and_divides_by_the_kept():
    logits = torch.tensor([[math.log(9.0), 0.0], [0.0, 0.0]])  # p_correct 0.9 and 0.5
    loss, mask = mixing.tsa_cross_entropy(logits, torch.tensor([0, 0]), threshold=0.8)
    assert mask.tolist() == [0.0, 1.0]
    assert loss.item() == pytest.approx(-math.log(0.5))


def test_kl_and_entropy_of_known_distributions():
    p = torch.log(torch.tensor([[0.5, 0.5]]))
    q = torch.log(torch.tensor([[0.25, 0.75]]))
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert mixing.kl_from_logits(p, q).item() == pytest.approx(want)
    assert mixing.entropy_from_logits(p).item() == pytest.approx(math.log(2))


def test_l2_consistency_averages_over_classes_too():
    logits = torch.zeros(1, 2)  # softmax .5 .5
    assert mixing.l2_consistency(torch.tensor([[1.0, 0.0]]), logits).item() == pytest.approx(0.25)
