"""The linear warm-up of the baselines' unlabeled-loss weight, by hand."""
import pytest

from fixmatch_ray.algorithms.ramps import linear_warmup, relative_warmup


@pytest.mark.parametrize("fraction, expected", [(0.0, 0.0), (0.2, 0.5), (0.4, 1.0), (1.0, 1.0)])
def test_relative_warmup_is_full_at_warmup_pos(fraction, expected):
    # official: clip(step_images / (0.4 · train_images), 0, 1); 1000 steps, 0.2 of them = 200 = half of 400
    assert relative_warmup(int(fraction * 1000), 1000, 0.4) == expected


def test_linear_warmup_clips_and_a_zero_length_is_no_warmup():
    assert linear_warmup(30, 120) == 0.25
    assert linear_warmup(-5, 120) == 0.0 and linear_warmup(500, 120) == 1.0
    assert linear_warmup(0, 0) == 1.0 and relative_warmup(0, 1000, 0.0) == 1.0
