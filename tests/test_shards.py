"""ssgd.shard_unit_grad_ / split_shards: the paper's SSGD(m) in one process."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import ssgd
from ssgd.shards import split_shards

DEVICES = [
    pytest.param("cpu"),
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")),
]


def _model(device="cpu", bn=False):
    torch.manual_seed(0)
    layers = [nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)]
    if bn:
        layers.insert(1, nn.BatchNorm1d(8))
    return nn.Sequential(*layers).to(device)


def _batch(n=12, device="cpu"):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g).to(device), torch.randint(0, 3, (n,), generator=g).to(device)


def _hand_loop(model, x, y, m, scope, reduce="sum"):
    """Reference: per-shard autograd gradient, normalised in float64 by hand, summed (or averaged)."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    norms = []
    for sl in split_shards(x.shape[0], m):
        gs = [g.double() for g in torch.autograd.grad(F.cross_entropy(model(x[sl]), y[sl]), params)]
        if scope == "global":
            n = torch.sqrt(sum((g ** 2).sum() for g in gs))
            us, norms = [g / n for g in gs], norms + [n]
        else:
            ns = [g.norm() for g in gs]
            us, norms = [g / n for g, n in zip(gs, ns)], norms + [torch.stack(ns)]
        total = [t + u for t, u in zip(total, us)]
    if reduce == "mean":
        total = [t / m for t in total]
    return total, torch.stack(norms)


def test_split_shards_covers_evenly():
    for n, m in [(10, 3), (12, 4), (5, 5), (7, 1)]:
        sl = split_shards(n, m)
        sizes = [s.stop - s.start for s in sl]
        assert len(sl) == m and sum(sizes) == n and max(sizes) - min(sizes) <= 1
        assert sl[0].start == 0 and all(a.stop == b.start for a, b in zip(sl, sl[1:])) and sl[-1].stop == n
    with pytest.raises(ValueError, match="m=0"):
        split_shards(4, 0)
    with pytest.raises(ValueError, match="m=5 shards; use m <= batch size"):
        split_shards(4, 5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["vmap", "loop"])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_equals_hand_loop_over_shards(device, method, scope, reduce):
    model = _model(device)
    x, y = _batch(device=device)
    norms = ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 4, scope=scope, reduce=reduce, method=method)
    ref, ref_norms = _hand_loop(model, x, y, 4, scope, reduce)
    assert norms.shape == ((4,) if scope == "global" else (4, 4))
    torch.testing.assert_close(norms.cpu().double(), ref_norms.cpu(), rtol=1e-5, atol=1e-7)
    for p, r in zip(model.parameters(), ref):
        assert p.grad.dtype == p.dtype
        torch.testing.assert_close(p.grad.double(), r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_vmap_and_loop_engines_agree(scope, reduce):
    model = _model()
    x, y = _batch(24)
    outs = {}
    for method in ("vmap", "loop"):
        norms = ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 6, scope=scope, reduce=reduce, method=method)
        outs[method] = (norms, [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outs["vmap"][0], outs["loop"][0], rtol=1e-6, atol=1e-7)
    for a, b in zip(outs["vmap"][1], outs["loop"][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_sum_is_m_times_mean_and_norm_bounds():
    model = _model()
    x, y = _batch()
    ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 3, reduce="sum")
    s = [p.grad.clone() for p in model.parameters()]
    ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 3, reduce="mean")
    for a, b in zip(s, model.parameters()):
        torch.testing.assert_close(a, 3 * b.grad)
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in s))
    assert 0 < float(total) <= 3 + 1e-6  # a sum of three unit vectors
    ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 1)  # m=1: exactly the unit gradient
    total = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    assert float(total) == pytest.approx(1.0, rel=1e-6)


def test_replaces_existing_grad_and_skips_frozen_params():
    model = _model()
    model[0].bias.requires_grad_(False)
    for p in model.parameters():
        p.grad = torch.full_like(p, 123.0) if p.requires_grad else None
    x, y = _batch()
    norms = ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 4, scope="layer")
    assert norms.shape == (4, 3)
    assert model[0].bias.grad is None
    ref, _ = _hand_loop(model, x, y, 4, "layer")
    for p, r in zip([p for p in model.parameters() if p.requires_grad], ref):
        torch.testing.assert_close(p.grad.double(), r, rtol=1e-5, atol=1e-6)


def test_auto_engine_with_batchnorm_and_uneven_batches_uses_loop():
    model = _model(bn=True)
    x, y = _batch(10)  # 10 is not divisible by 4: uneven shards
    ref_model = copy.deepcopy(model)
    ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 4, method="auto")
    ssgd.shard_unit_grad_(ref_model, F.cross_entropy, x, y, 4, method="loop")
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
    torch.testing.assert_close(model[1].running_mean, ref_model[1].running_mean)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_zero_gradient_shards_no_nan(method):
    model = _model()
    x, y = _batch()

    def zero_loss(out, target):
        return 0.0 * out.sum()

    ssgd.shard_unit_grad_(model, zero_loss, x, y, 4, method=method)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())


@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_nonfinite_shard_raises_naming_parameter(method):
    model = _model()
    x, y = _batch()
    x[5, 0] = float("nan")  # shard 1 of 4 (examples 3..5)
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"'0\.weight \(shard 1\)'"):
        ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 4, method=method)
    assert all(p.grad is None for p in model.parameters())


def test_errors():
    model = _model()
    x, y = _batch(12)
    with pytest.raises(ValueError, match="m=13 shards; use m <= batch size"):
        ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 13)
    with pytest.raises(ValueError, match=r"method='vmap' needs the batch size \(12\) divisible by m=5"):
        ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 5, method="vmap")
    with pytest.raises(ValueError, match="Invalid reduce='avg'"):
        ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 2, reduce="avg")
    with pytest.raises(ValueError, match="Invalid method='jit'"):
        ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 2, method="jit")
    with pytest.raises(ValueError, match="Invalid scope: 'all'"):
        ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 2, scope="all")
    with pytest.raises(ValueError, match="disagree on batch size: 12 vs 11"):
        ssgd.shard_unit_grad_(model, F.cross_entropy, x, y[:11], 2)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad=True"):
        ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 2)


def test_training_with_shards_and_sgd_decreases_loss():
    model = _model()
    x, y = _batch(48)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with torch.no_grad():
        start = float(F.cross_entropy(model(x), y))
    for _ in range(30):
        opt.zero_grad()
        ssgd.shard_unit_grad_(model, F.cross_entropy, x, y, 4)
        opt.step()
    with torch.no_grad():
        assert float(F.cross_entropy(model(x), y)) < start - 0.1
