"""Per-example normalisation: every example contributes a vector of norm 1 (gamma = 0) or < 1 (gamma > 0)
before noise."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ssgd.privacy import GaussianNoise, PoissonSampler, per_example_unit_grads, private_unit_grad_


def _small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))


def _batch(b=7):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 1, 6, 6, generator=g), torch.randint(0, 5, (b,), generator=g)


def _loop_grads(model, x, y):
    """Reference: one backward per example."""
    out = []
    for i in range(x.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        out.append([p.grad.detach().clone() for p in model.parameters()])
    model.zero_grad()
    return out


def test_per_example_unit_grads_match_a_loop_and_have_norm_one():
    model = _small_model()
    x, y = _batch()
    u, norms = per_example_unit_grads(model, F.cross_entropy, x, y)
    ref = _loop_grads(model, x, y)
    names = [n for n, _ in model.named_parameters()]
    for i, gs in enumerate(ref):
        ref_norm = torch.sqrt(sum(g.pow(2).sum() for g in gs))
        assert float(norms[i]) == pytest.approx(float(ref_norm), rel=1e-5)
        got = torch.cat([u[n][i].flatten() for n in names])
        assert float(got.norm()) == pytest.approx(1.0, abs=1e-6)  # norm 1 before noise
        torch.testing.assert_close(got, torch.cat([g.flatten() for g in gs]) / ref_norm, rtol=1e-5, atol=1e-6)


def test_layer_scope_normalises_every_tensor_of_every_example():
    model = _small_model()
    x, y = _batch(4)
    u, norms = per_example_unit_grads(model, F.cross_entropy, x, y, scope="layer")
    assert norms.shape == (4, len(list(model.parameters())))
    for t in u.values():
        torch.testing.assert_close(t.flatten(1).norm(dim=1), torch.ones(4), rtol=1e-5, atol=1e-6)


def test_private_grad_is_sum_of_unit_vectors_over_expected_batch_plus_noise():
    model = _small_model()
    x, y = _batch(9)
    ref = _loop_grads(model, x, y)
    units = [[g / torch.sqrt(sum(h.pow(2).sum() for h in gs)) for g in gs] for gs in ref]
    expect = [sum(us[k] for us in units) / 12.0 for k in range(len(units[0]))]
    # no noise; chunking must not change the result
    private_unit_grad_(model, F.cross_entropy, x, y, None, expected_batch_size=12.0, chunk_size=4, gamma=0.0)
    for p, e in zip(model.parameters(), expect):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-6)
    # with noise: grad - noiseless = noise / expected_batch_size, the seeded stream
    noise = GaussianNoise(0.7, seed=3)
    private_unit_grad_(model, F.cross_entropy, x, y, noise, expected_batch_size=12.0, gamma=0.0)
    replay = GaussianNoise(0.7, seed=3)
    for p, e in zip(model.parameters(), expect):
        z = replay.sample(p.shape)
        torch.testing.assert_close(p.grad, e + z / 12.0, rtol=1e-5, atol=1e-6)


def test_one_example_moves_the_noiseless_sum_by_exactly_one():
    """The sensitivity claim itself: add/remove one example changes sum_i u_i by a unit vector."""
    model = _small_model()
    x, y = _batch(6)
    private_unit_grad_(model, F.cross_entropy, x, y, None, expected_batch_size=1.0, gamma=0.0)
    full = torch.cat([p.grad.flatten() for p in model.parameters()])
    private_unit_grad_(model, F.cross_entropy, x[1:], y[1:], None, expected_batch_size=1.0, gamma=0.0)
    without = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert float((full - without).norm()) == pytest.approx(1.0, abs=1e-5)
    # an outlier example with a huge gradient moves it by exactly as much
    x2, y2 = x.clone(), y.clone()
    x2[0] *= 1000
    y2[0] = model(x2[:1]).argmin(1)[0]  # confidently wrong: a huge gradient
    private_unit_grad_(model, F.cross_entropy, x2, y2, None, expected_batch_size=1.0, gamma=0.0)
    big = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert float((big - without).norm()) == pytest.approx(1.0, abs=1e-5)


def test_empty_batch_is_a_pure_noise_step():
    model = _small_model()
    x, y = _batch(3)
    private_unit_grad_(model, F.cross_entropy, x[:0], y[:0], GaussianNoise(1.0, seed=0), expected_batch_size=4.0)
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert float(g.abs().sum()) > 0 and torch.isfinite(g).all()


def test_batchnorm_is_refused_with_the_fix():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 5))
    x, y = _batch(3)
    with pytest.raises(ValueError, match="BatchNorm2d in training mode.*GroupNorm"):
        private_unit_grad_(model, F.cross_entropy, x, y, None)


def test_nonfinite_example_is_named():
    from ssgd import NonFiniteGradientError

    model = _small_model()
    x, y = _batch(4)
    x[2, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteGradientError, match="example 2"):
        per_example_unit_grads(model, F.cross_entropy, x, y)


def test_nonfinite_error_names_the_example_in_the_whole_batch_and_a_real_fix():
    """Issue 10: the index was the one inside a chunk ("example 1" for example 9), the example was called a
    parameter, and the message suggested a nonfinite='skip' that this function does not take."""
    from ssgd import NonFiniteGradientError

    model = _small_model()
    x, y = _batch(12)
    x[9, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteGradientError) as info:
        private_unit_grad_(model, F.cross_entropy, x, y, None, chunk_size=4)
    msg = str(info.value)
    assert info.value.index == 9 and "example 9 " in msg
    assert "parameter" not in msg and "nonfinite" not in msg and "inputs and label" in msg
    assert all(p.grad is None for p in model.parameters())  # nothing half-written


def test_gamma_normalisation_matches_a_loop_and_keeps_the_sensitivity():
    """Bu et al.'s g/(||g|| + gamma): norm below 1 for every example, the pure unit vector at gamma = 0."""
    model = _small_model()
    x, y = _batch(6)
    ref = _loop_grads(model, x, y)
    names = [n for n, _ in model.named_parameters()]
    gamma = 0.5
    u, norms = per_example_unit_grads(model, F.cross_entropy, x, y, gamma=gamma)
    for i, gs in enumerate(ref):
        g = torch.cat([t.flatten() for t in gs])
        got = torch.cat([u[n][i].flatten() for n in names])
        torch.testing.assert_close(got, g / (g.norm() + gamma), rtol=1e-5, atol=1e-6)
        assert float(got.norm()) < 1.0 and float(got.norm()) == pytest.approx(
            float(norms[i] / (norms[i] + gamma)), rel=1e-5)
    # the sum moves by at most 1 when one example is removed: the noise calibration is unchanged
    private_unit_grad_(model, F.cross_entropy, x, y, None, expected_batch_size=1.0, gamma=gamma)
    full = torch.cat([p.grad.flatten() for p in model.parameters()])
    private_unit_grad_(model, F.cross_entropy, x[1:], y[1:], None, expected_batch_size=1.0, gamma=gamma)
    without = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert 0.0 < float((full - without).norm()) < 1.0


def test_dp_example_default_is_the_gamma_normalisation():
    from ssgd.privacy.example import DEFAULT_GAMMA

    model = _small_model()
    x, y = _batch(5)
    private_unit_grad_(model, F.cross_entropy, x, y, None, expected_batch_size=1.0)
    default = torch.cat([p.grad.flatten() for p in model.parameters()])
    private_unit_grad_(model, F.cross_entropy, x, y, None, expected_batch_size=1.0, gamma=DEFAULT_GAMMA)
    torch.testing.assert_close(default, torch.cat([p.grad.flatten() for p in model.parameters()]))
    private_unit_grad_(model, F.cross_entropy, x, y, None, expected_batch_size=1.0, gamma=0.0)
    assert not torch.equal(default, torch.cat([p.grad.flatten() for p in model.parameters()]))


def test_layer_scope_sum_moves_by_at_most_sqrt_l():
    """Layer-wise normalisation: L tensors of norm <= 1 per example, so the sensitivity is sqrt(L)."""
    from ssgd.privacy import sensitivity

    model = _small_model()
    x, y = _batch(6)
    n_tensors = len(list(model.parameters()))
    private_unit_grad_(model, F.cross_entropy, x, y, None, expected_batch_size=1.0, scope="layer", gamma=0.0)
    full = torch.cat([p.grad.flatten() for p in model.parameters()])
    private_unit_grad_(model, F.cross_entropy, x[1:], y[1:], None, expected_batch_size=1.0, scope="layer", gamma=0.0)
    without = torch.cat([p.grad.flatten() for p in model.parameters()])
    moved = float((full - without).norm())
    assert moved == pytest.approx(sensitivity("example", "layer", n_tensors), rel=1e-5) and moved > 1.0


def test_automatic_chunks_give_the_same_gradient_and_bad_settings_are_refused():
    model = _small_model()
    x, y = _batch(9)
    private_unit_grad_(model, F.cross_entropy, x, y, None, chunk_size=2)
    small = [p.grad.clone() for p in model.parameters()]
    private_unit_grad_(model, F.cross_entropy, x, y, None)  # automatic: one chunk here
    for a, p in zip(small, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)
    for bad, match in ((dict(gamma=-0.1), "gamma=-0.1"), (dict(gamma=float("nan")), "gamma=nan"),
                       (dict(chunk_size=0), "chunk_size=0"), (dict(eps=0.0), "eps value: 0.0"),
                       (dict(scope="model"), "scope: 'model'")):
        with pytest.raises(ValueError, match=match):
            private_unit_grad_(model, F.cross_entropy, x, y, None, **bad)


def test_poisson_sampler_rate_and_reproducibility():
    s = PoissonSampler(1000, 0.05, seed=4)
    sizes = [s.sample().numel() for _ in range(400)]
    mean = sum(sizes) / len(sizes)
    # binomial(1000, .05): mean 50, sd 6.9; mean of 400 draws within 5 standard errors
    assert abs(mean - 50) < 5 * 6.9 / 20
    assert len(set(sizes)) > 10  # the batch size varies, as Poisson sampling must
    a, b = PoissonSampler(1000, 0.05, seed=4), PoissonSampler(1000, 0.05, seed=4)
    first = a.sample()
    assert torch.equal(first, b.sample()) and not torch.equal(first, a.sample())
    assert torch.all(first[1:] > first[:-1]) and int(first.max()) < 1000
    with pytest.raises(ValueError, match="sample_rate=0"):
        PoissonSampler(10, 0)
