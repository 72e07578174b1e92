import math

import pytest
import torch

from ssgd.data import add_laplace_noise, laplace_scale, load_dataset, with_laplace_noise


def test_scale_is_sensitivity_over_eps():
    assert laplace_scale(2.0) == 0.5 and laplace_scale(5.0, sensitivity=255.0) == 51.0
    with pytest.raises(ValueError, match="eps=0"):
        laplace_scale(0.0)


@pytest.mark.parametrize("eps", [1.0, 2.0, 5.0])
def test_noise_has_laplace_moments(eps):
    x = torch.zeros(200_000)
    n = add_laplace_noise(x, eps, seed=0)
    b = 1.0 / eps
    assert abs(float(n.mean())) < 0.01 * b * 3
    assert abs(float(n.abs().mean()) - b) < 0.02 * b  # E|X| = b
    assert abs(float(n.var()) - 2 * b * b) < 0.05 * 2 * b * b  # Var = 2 b^2
    # heavier tail than a Gaussian of equal variance: kurtosis 6 (excess 3)
    kurt = float(((n - n.mean()) ** 4).mean() / n.var() ** 2)
    assert 5.0 < kurt < 7.0


def test_training_images_only_seeded_and_clip():
    d = load_dataset("digits")
    noisy = with_laplace_noise(d, 2.0, seed=1)
    assert torch.equal(noisy.x_test, d.x_test) and torch.equal(noisy.y_train, d.y_train)
    assert not torch.equal(noisy.x_train, d.x_train)
    assert torch.equal(with_laplace_noise(d, 2.0, seed=1).x_train, noisy.x_train)
    assert not torch.equal(with_laplace_noise(d, 2.0, seed=2).x_train, noisy.x_train)
    clipped = add_laplace_noise(d.x_train, 1.0, seed=0, clip=True)
    assert float(clipped.min()) >= 0 and float(clipped.max()) <= 1
    assert math.isclose(float((noisy.x_train - d.x_train).abs().mean()), 0.5, rel_tol=0.02)
