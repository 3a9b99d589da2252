"""CMMD: the RBF maximum mean discrepancy against its closed form, and on the toy world's scorer."""

import math

import pytest
import torch

from kdutils import metrics


def gaussian_mmd(d: int, s: float, shift: float, sigma: float) -> float:
    """Exact squared MMD between N(0, s^2 I) and N(shift e_1, s^2 I) in ``d`` dimensions under an RBF kernel."""
    c = (sigma**2 / (sigma**2 + 2 * s**2)) ** (d / 2)
    return 2 * c * (1 - math.exp(-shift**2 / (2 * (sigma**2 + 2 * s**2))))


@pytest.mark.parametrize("shift", [0.5, 1.0, 2.0])
def test_mmd_matches_the_closed_form_for_two_gaussians(shift):
    g = torch.Generator().manual_seed(0)
    n, d, s, sigma = 3000, 4, 1.0, 2.0
    x = torch.randn(n, d, generator=g) * s
    y = torch.randn(n, d, generator=g) * s
    y[:, 0] += shift
    exact = gaussian_mmd(d, s, shift, sigma)
    plug_in_bias = 2 * (1 - (sigma**2 / (sigma**2 + 2 * s**2)) ** (d / 2)) / n  # the diagonals' share
    assert metrics.mmd_rbf(x, y, sigma) == pytest.approx(exact + plug_in_bias, rel=0.1)
    assert metrics.mmd_rbf(x, y, sigma) == pytest.approx(metrics.mmd_rbf(y, x, sigma), rel=1e-9)


def test_mmd_is_zero_for_one_sample_and_grows_with_the_distance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 8, generator=g)
    assert metrics.mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-12)
    values = [metrics.mmd_rbf(x, x + torch.tensor([t] + [0.0] * 7)) for t in (0.1, 0.5, 1.0, 3.0)]
    assert all(a < b for a, b in zip(values, values[1:])) and values[0] > 0


def test_cmmd_on_the_toy_world_scores_renders_near_renders_and_blur_far():
    from kdutils import world
    from kdutils.profiles import get_profile

    processor, model = metrics.load_scorer(get_profile("tiny"), device="cpu")
    scenes = world.eval_scenes()
    reference = [world.render(s, 100 + i) for i, s in enumerate(scenes)]
    fresh = [world.render(s, 200 + i) for i, s in enumerate(scenes)]  # the same scenes, another jitter
    blurred = [world.degrade(image, i, blur=3.0) for i, image in enumerate(fresh)]
    other = [world.render(world.Scene(s.shape, world.COLOURS[(world.COLOURS.index(s.colour) + 1) % 6], s.position, s.size),
                          200 + i) for i, s in enumerate(scenes)]  # every colour wrong
    assert metrics.cmmd(processor, model, reference, reference) == pytest.approx(0.0, abs=1e-9)
    near = metrics.cmmd(processor, model, fresh, reference)
    assert near < metrics.cmmd(processor, model, blurred, reference)
    assert near < metrics.cmmd(processor, model, other, reference)
