import pytest
import torch

import ssgd
from ssgd.attacks import INITS, DLGUnit, DummyGradients, initial_images, lbfgs
from ssgd.models import build_model


def _rosen(z):  # per-row Rosenbrock in 4-D
    return ((1 - z[:, :-1]) ** 2 + 100 * (z[:, 1:] - z[:, :-1] ** 2) ** 2).sum(1)


def test_lbfgs_follows_torch_lbfgs_on_one_row():
    z0 = torch.tensor([[-1.2, 1.0, -0.5, 0.8]], dtype=torch.float64)
    ours, _, _ = lbfgs(_rosen, z0, 15, lr=0.1)
    p = z0[0].clone().requires_grad_(True)
    opt = torch.optim.LBFGS([p], lr=0.1, max_iter=15, history_size=100, tolerance_grad=0, tolerance_change=0)

    def closure():
        opt.zero_grad()
        loss = _rosen(p.unsqueeze(0)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    # ours returns the best iterate; torch's last one -- compare losses and points
    assert float(_rosen(ours)) == pytest.approx(float(_rosen(p.detach().unsqueeze(0))), rel=1e-6, abs=1e-10)
    assert torch.allclose(ours[0], p.detach(), atol=1e-6)


def test_lbfgs_rows_are_independent():
    torch.manual_seed(0)
    z0 = torch.randn(3, 4, dtype=torch.float64)
    stacked, loss, _ = lbfgs(_rosen, z0, 25, lr=0.1)
    for k in range(3):
        alone, l1, _ = lbfgs(_rosen, z0[k:k + 1], 25, lr=0.1)
        assert torch.allclose(stacked[k], alone[0], atol=1e-8)
        assert float(loss[k]) == pytest.approx(float(l1[0]), rel=1e-8, abs=1e-14)


def test_lbfgs_freezes_nonfinite_rows_and_keeps_best():
    def f(z):
        out = (z ** 2).sum(1)
        return torch.where(z[:, 0] > 5, torch.full_like(out, float("nan")), out)

    z0 = torch.tensor([[1.0, 1.0], [6.0, 0.0]], dtype=torch.float64)
    z, loss, _ = lbfgs(f, z0, 10)
    assert torch.isfinite(loss[0]) and float(loss[0]) < 1e-6
    assert torch.equal(z[1], z0[1])  # never had a finite loss: left where it started


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_dlg_unit_transform_is_the_core_unit_per_target(scope):
    """dlg-unit pushes each stacked dummy gradient through ssgd's own unit transform (ssgd.batched_unit)."""
    torch.manual_seed(1)
    gs = [torch.randn(3, 4, 5), torch.randn(3, 7)]
    out = DLGUnit(scope=scope)._dummy(gs, None)
    for k in range(3):
        ref = ssgd.unit([g[k] for g in gs], scope)
        for a, b in zip(out, ref):
            assert torch.allclose(a[k], b, atol=1e-6)


def test_single_target_plain_autograd_equals_stacked_vmap(digits):
    """One target takes plain autograd, stacked targets vmap: same gradients, both differentiable in x."""
    model = build_model("lenet", digits.shape, 10, seed=0).eval()
    dg = DummyGradients(model)
    x = digits.x_train[:4].reshape(2, 2, *digits.shape).clone().requires_grad_(True)
    y = torch.nn.functional.one_hot(digits.y_train[:4].reshape(2, 2), 10).float()
    both = dg.grads(x, y)
    for k in range(2):
        alone = dg.grads(x[k:k + 1], y[k:k + 1])
        for a, b in zip(alone, both):
            assert torch.allclose(a[0], b[k], atol=1e-6)
    (gx,) = torch.autograd.grad(sum(g.square().sum() for g in dg.grads(x[:1], y[:1])), x)
    assert gx[0].abs().sum() > 0 and gx[1].abs().sum() == 0


def test_initial_images_in_the_data_range():
    torch.manual_seed(0)
    u = initial_images("uniform", 3, (2, 1, 8, 8))
    assert u.shape == (3, 2, 1, 8, 8) and u.min() >= 0 and u.max() <= 1 and u.std() > 0.2
    assert initial_images("randn", 3, (2, 1, 8, 8)).min() < 0  # DLG's start leaves the box
    mean = torch.full((1, 8, 8), 0.3)
    m = initial_images("mean", 3, (2, 1, 8, 8), mean_image=mean)
    assert (m - 0.3).abs().max() <= 0.05 + 1e-6 and not torch.equal(m[0], m[1])  # restarts differ
    assert torch.equal(initial_images("auto", 1, (1, 1, 8, 8), mean_image=mean).round(decimals=1),
                       torch.full((1, 1, 1, 8, 8), 0.3))
    with pytest.raises(ValueError, match="mean image"):
        initial_images("mean", 1, (1, 1, 8, 8))
    with pytest.raises(ValueError, match="zeros"):
        initial_images("zeros", 1, (1, 1, 8, 8))
    assert set(INITS) == {"auto", "uniform", "randn", "mean"}


def test_dummy_gradients_equal_autograd(digits):
    model = build_model("lenet", digits.shape, 10, seed=0)
    x = digits.x_train[:6].reshape(2, 3, *digits.shape)
    y = digits.y_train[:6].reshape(2, 3)
    g = DummyGradients(model).grads(x, torch.nn.functional.one_hot(y, 10).float())
    for k in range(2):
        ref = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x[k]), y[k]), list(model.parameters()))
        for a, b in zip(g, ref):
            assert torch.allclose(a[k], b, atol=1e-6)


def test_dummy_gradients_shards_split_the_batch(digits):
    model = build_model("lenet", digits.shape, 10, seed=0)
    x = digits.x_train[:4].reshape(1, 4, *digits.shape)
    y = torch.nn.functional.one_hot(digits.y_train[:4], 10).float().reshape(1, 4, 10)
    g = DummyGradients(model, shards=2).grads(x, y)
    assert g[0].shape[:2] == (1, 2)
    ref = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x[0, 2:]), digits.y_train[2:4]),
                              list(model.parameters()))
    assert torch.allclose(g[-1][0, 1], ref[-1], atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        DummyGradients(model, shards=3).grads(x, y)
