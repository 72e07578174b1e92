"""ssgd.unit_ / ssgd.unit / ssgd.batched_unit / grad_norms: the unit-vector rule and its numerical corners."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssgd
from ssgd.transform import check_eps, check_nonfinite, check_scope, grad_norms, unit_denominator

DEVICES = [
    pytest.param("cpu"),
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")),
]


def _ref_unit(ts, scope):
    """float64 reference: g / ||g|| (global over all tensors, or per tensor)."""
    t64 = [t.detach().double().cpu() for t in ts]
    if scope == "global":
        n = math.sqrt(sum(float((t * t).sum()) for t in t64))
        return [t / n for t in t64]
    return [t / float(t.norm()) for t in t64]


def _grads(device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in [(3, 4), (5,), (2, 2, 2)]]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unit_inplace_matches_reference_and_returns_norms(device, scope):
    ts = _grads(device)
    before = [t.clone() for t in ts]
    norms = ssgd.unit_(ts, scope)
    for u, r in zip(ts, _ref_unit(before, scope)):
        torch.testing.assert_close(u.cpu().double(), r, rtol=1e-6, atol=1e-7)
    if scope == "global":
        assert norms.shape == () and norms.dtype == torch.float64
        assert float(norms) == pytest.approx(math.sqrt(sum(float((b.double() ** 2).sum()) for b in before)), rel=1e-6)
        assert math.sqrt(sum(float((t.double() ** 2).sum()) for t in ts)) == pytest.approx(1.0, abs=1e-6)
    else:
        assert norms.shape == (3,)
        torch.testing.assert_close(norms.cpu(), torch.stack([b.double().norm() for b in before]).cpu(), rtol=1e-6, atol=0)
        for t in ts:
            assert float(t.double().norm()) == pytest.approx(1.0, abs=1e-6)


def test_unit_out_of_place_leaves_inputs_and_equals_inplace():
    ts = _grads()
    before = [t.clone() for t in ts]
    out = ssgd.unit(ts, "layer")
    for t, b in zip(ts, before):
        assert torch.equal(t, b)
    ssgd.unit_(before, "layer")
    for o, b in zip(out, before):
        assert torch.equal(o, b)


def test_single_tensor_input():
    t = torch.tensor([3.0, 4.0])
    n = ssgd.unit_(t)
    assert float(n) == 5.0
    torch.testing.assert_close(t, torch.tensor([0.6, 0.8]))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unit_is_differentiable(scope):
    ts = [torch.randn(3, dtype=torch.float64, requires_grad=True), torch.randn(2, 2, dtype=torch.float64,
                                                                                requires_grad=True)]
    assert torch.autograd.gradcheck(lambda a, b: tuple(ssgd.unit([a, b], scope)), tuple(ts))
    out = ssgd.unit(ts, scope)
    for o, r in zip(out, _ref_unit(ts, scope)):
        torch.testing.assert_close(o.detach(), r)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_zero_gradient_stays_zero(scope):
    ts = [torch.zeros(3, 4), torch.zeros(5)]
    norms = ssgd.unit_(ts, scope)
    assert all(torch.equal(t, torch.zeros_like(t)) for t in ts)
    assert torch.all(norms == 0)
    assert all(torch.equal(u, torch.zeros_like(u)) for u in ssgd.unit([torch.zeros(2, requires_grad=True)], scope))


@pytest.mark.filterwarnings("error")
def test_one_zero_layer_in_layer_scope():
    ts = [torch.zeros(3), torch.tensor([0.0, 2.0])]
    ssgd.unit_(ts, "layer")
    assert torch.equal(ts[0], torch.zeros(3))
    assert torch.equal(ts[1], torch.tensor([0.0, 1.0]))


def test_norm_below_eps_is_divided_by_eps():
    t = torch.tensor([3e-14, 4e-14], dtype=torch.float64)
    ssgd.unit_([t], eps=1e-12)
    torch.testing.assert_close(t, torch.tensor([0.03, 0.04], dtype=torch.float64))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_nonfinite_raises_naming_tensor_and_modifies_nothing(bad, scope):
    ts = _grads()
    ts[1][2] = bad
    before = [t.clone() for t in ts]
    with pytest.raises(ssgd.NonFiniteGradientError, match="'layer1.bias'") as ei:
        ssgd.unit_(ts, scope, names=["layer0.weight", "layer1.bias", "layer2.weight"])
    assert ei.value.index == 1 and ei.value.name == "layer1.bias"
    assert "nonfinite='skip'" in str(ei.value)
    for t, b in zip(ts, before):  # bit-identical (NaN where NaN was)
        assert torch.equal(t.view(torch.int32), b.view(torch.int32))
    with pytest.raises(ssgd.NonFiniteGradientError, match="tensor #1"):
        ssgd.unit_(ts, scope)
    assert torch.isfinite(grad_norms(ts)).tolist() == [True, False, True]  # no host read, no raise


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_half_precision_sum_of_squares_overflow(dtype, scope):
    # 1000 entries of 300: the sum of squares 9e7 overflows fp16 (max 65504); norm in fp32 is fine
    t = torch.full((1000,), 300.0, dtype=dtype)
    assert torch.isinf((t * t).sum()) or dtype == torch.bfloat16
    norm = ssgd.unit_([t], scope)
    assert t.dtype == dtype
    assert float(norm) == pytest.approx(300.0 * math.sqrt(1000), rel=1e-6)
    torch.testing.assert_close(t.float(), torch.full((1000,), 1 / math.sqrt(1000)), rtol=1e-2, atol=0)


def test_half_precision_zero_and_mixed_dtypes_global():
    ts = [torch.tensor([3.0], dtype=torch.float16), torch.tensor([4.0], dtype=torch.bfloat16),
          torch.tensor([0.0], dtype=torch.float64)]
    assert float(ssgd.unit_(ts)) == 5.0
    assert [t.dtype for t in ts] == [torch.float16, torch.bfloat16, torch.float64]
    assert float(ts[0]) == pytest.approx(0.6, rel=1e-3) and float(ts[1]) == pytest.approx(0.8, rel=1e-2)
    assert float(ts[2]) == 0.0


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_overflowing_norm_is_nonfinite_and_modifies_nothing(scope):
    # entries of 1e20 are finite, but their float32 sum of squares is not: clip_grad_norm_'s convention
    g = torch.Generator().manual_seed(3)
    ts = [torch.randn(64, generator=g), torch.full((8,), 1e20), torch.randn(3, 3, generator=g)]
    before = [t.clone() for t in ts]
    with pytest.raises(ssgd.NonFiniteGradientError, match="'b'"):
        ssgd.unit_(ts, scope, names=["a", "b", "c"])
    assert all(torch.equal(t, b) for t, b in zip(ts, before))
    if scope == "global":  # finite per tensor, overflowing together: named by the largest
        ts = [torch.full((1,), 1.2e19), torch.full((1,), 1.5e19)]
        with pytest.raises(ssgd.NonFiniteGradientError, match="'y'"):
            ssgd.unit_(ts, names=["x", "y"])


def test_large_float64_and_small_float32_gradients():
    big = torch.full((4,), 1e150, dtype=torch.float64)  # float64 accumulates in float64
    assert float(ssgd.unit_([big])) == pytest.approx(2e150)
    torch.testing.assert_close(big, torch.full((4,), 0.5, dtype=torch.float64))
    small = torch.full((4,), 1e-17)  # squares 1e-34: still normal float32 numbers
    assert float(ssgd.unit_([small], eps=1e-30)) == pytest.approx(2e-17, rel=1e-6)
    torch.testing.assert_close(small, torch.full((4,), 0.5))


def test_grad_norms_and_denominator():
    ts = _grads()
    n = grad_norms(ts)
    assert n.dtype == torch.float32 and grad_norms([ts[0].double(), ts[1]]).dtype == torch.float64
    torch.testing.assert_close(n.double(), torch.stack([t.double().norm() for t in ts]), rtol=1e-6, atol=0)
    assert grad_norms([]).numel() == 0
    mixed = [ts[0].half(), ts[1].double(), ts[2]]  # three kernels, one vector in the input order
    torch.testing.assert_close(grad_norms(mixed), torch.stack([t.double().norm() for t in mixed]), rtol=1e-3, atol=0)
    d = unit_denominator(torch.tensor([3.0, 4.0]), "global", 1e-12)
    assert d.shape == () and float(d) == 5.0
    assert unit_denominator(torch.tensor([2.0, 0.0]), "layer", 0.5).tolist() == [2.0, 0.5]
    assert unit_denominator(torch.tensor([[3.0, 4.0], [0.0, 0.0]]), "global", 0.5).tolist() == [5.0, 0.5]


def test_sparse_gradient_is_a_clear_error():
    sp = torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (4,), check_invariants=True)
    with pytest.raises(ValueError, match="sparse"):
        ssgd.unit_([torch.ones(2), sp])


@pytest.mark.parametrize("kwargs, match", [
    (dict(scope="bogus"), "Invalid scope: 'bogus'"),
    (dict(eps=0.0), "Invalid eps value: 0.0"),
    (dict(eps=-1e-3), "Invalid eps value"),
    (dict(eps=float("nan")), "Invalid eps value"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ssgd.unit_([torch.ones(2)], **kwargs)
    with pytest.raises(ValueError, match=match):
        ssgd.unit([torch.ones(2)], **kwargs)


def test_bad_inputs():
    with pytest.raises(TypeError, match="p.grad is None"):
        ssgd.unit_([torch.ones(2), None])
    with pytest.raises(TypeError, match="floating point"):
        ssgd.unit_([torch.ones(2, dtype=torch.int64)])
    with pytest.raises(ValueError, match="2 names for 1 tensors"):
        ssgd.unit_([torch.ones(2)], names=["a", "b"])
    assert float(ssgd.unit_([])) == 0.0 and ssgd.unit([]) == []


shapes = st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=3), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(shapes=shapes, log_scale=st.floats(-20, 20), seed=st.integers(0, 2**16), scope=st.sampled_from(["global", "layer"]))
def test_property_unit_vector_and_scale_invariance(shapes, log_scale, seed, scope):
    g = torch.Generator().manual_seed(seed)
    ts = [torch.randn(*s, generator=g, dtype=torch.float64) * 10.0**log_scale for s in shapes]
    if any(float(t.norm()) == 0 for t in ts):
        return
    eps = 1e-100  # far below every norm drawn here: the unit vector is exact
    u = ssgd.unit(ts, scope, eps)
    for a, r in zip(u, _ref_unit(ts, scope)):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-15)
    c = 10.0 ** (seed % 7 - 3)
    for a, b in zip(u, ssgd.unit([t * c for t in ts], scope, eps)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_large_tensor_norm_carries_torchs_cpu_reduction_error(dtype):
    g = torch.Generator().manual_seed(7)
    big = (torch.randn(2**22 + 123, generator=g) + 0.5).to(dtype)
    ref = float(torch.linalg.vector_norm(big.double()))
    others = [torch.randn(64, 65, generator=g).t(), torch.randn(5, generator=g)]  # non-contiguous, small
    norms = grad_norms([big, *others])
    assert float(norms[0]) == pytest.approx(ref, rel=2e-4)  # the documented CPU float32 reduction error
    for n, t in zip(norms[1:], others):
        assert float(n) == pytest.approx(float(t.double().norm()), rel=1e-6)


# --- ssgd.batched_unit: B stacked gradients at once -------------------------------------------------------


def _stacked(b=5, dtype=torch.float64, seed=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, *s, generator=g, dtype=dtype) for s in [(3, 4), (5,), (2, 2, 2)]]


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_batched_unit_matches_unit_row_by_row(scope):
    ts = _stacked()
    units, norms = ssgd.batched_unit(ts, scope=scope)
    assert norms.shape == ((5,) if scope == "global" else (5, 3)) and norms.dtype == torch.float64
    for b in range(5):
        ref = ssgd.unit([t[b] for t in ts], scope)
        for u, r in zip(units, ref):
            torch.testing.assert_close(u[b], r, rtol=1e-12, atol=0)
        row = [t[b] for t in ts]
        torch.testing.assert_close(norms[b], grad_norms(row).norm() if scope == "global" else grad_norms(row))


def test_batched_unit_batch_dims_and_float32_norms():
    g = torch.Generator().manual_seed(5)
    ts = [torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, generator=g)]  # batch (2, 3)
    units, norms = ssgd.batched_unit(ts, scope="layer", batch_dims=2)
    assert norms.shape == (2, 3, 2) and norms.dtype == torch.float32
    torch.testing.assert_close(units[0].norm(dim=-1), torch.ones(2, 3))
    torch.testing.assert_close(units[1], ts[1] / ts[1].abs())  # one entry per gradient: its sign


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_batched_unit_overflow_zero_and_half(scope):
    huge = torch.full((2, 8), 1e20)  # float32 sum of squares overflows: a non-finite norm, units 0 not NaN
    units, norms = ssgd.batched_unit([huge], scope=scope)
    assert not torch.isfinite(norms).any() and torch.equal(units[0], torch.zeros(2, 8))
    big64 = torch.full((2, 4), 1e150, dtype=torch.float64)
    units, norms = ssgd.batched_unit([big64], scope=scope)
    torch.testing.assert_close(units[0], torch.full((2, 4), 0.5, dtype=torch.float64))
    zero = torch.zeros(3, 6, requires_grad=True)
    units, norms = ssgd.batched_unit([zero], scope=scope)
    assert torch.equal(units[0], torch.zeros(3, 6)) and torch.equal(norms.reshape(-1), torch.zeros(3))
    half = torch.full((2, 1000), 300.0, dtype=torch.float16)  # fp16 sum of squares overflows
    units, norms = ssgd.batched_unit([half], scope=scope)
    assert units[0].dtype == torch.float16 and torch.isfinite(units[0]).all()
    assert float(norms.reshape(-1)[0]) == pytest.approx(300.0 * math.sqrt(1000), rel=1e-6)


def test_batched_unit_gamma_is_automatic_clipping_and_differentiable():
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(6), requires_grad=True)
    units, norms = ssgd.batched_unit([x[:, :2], x[:, 2:]], gamma=0.5)
    ref = x / (x.detach().norm(dim=1, keepdim=True) + 0.5)
    torch.testing.assert_close(torch.cat(units, 1), ref.detach())
    assert (torch.cat(units, 1).norm(dim=1) < 1).all()
    assert torch.autograd.gradcheck(lambda t: ssgd.batched_unit([t[:, :2], t[:, 2:]], scope="global")[0][1], (x,))
    assert torch.autograd.gradcheck(lambda t: ssgd.batched_unit([t], scope="layer", gamma=0.1)[0][0], (x,))


def test_batched_unit_nan_row_is_visible_in_norms_only():
    t = torch.ones(3, 4)
    t[1, 2] = float("nan")
    units, norms = ssgd.batched_unit([t])
    assert torch.isfinite(norms).tolist() == [True, False, True]
    torch.testing.assert_close(units[0][0], torch.full((4,), 0.5))


@pytest.mark.parametrize("kwargs, match", [
    (dict(scope="row"), "Invalid scope"), (dict(eps=0.0), "Invalid eps"), (dict(eps=float("inf")), "Invalid eps"),
    (dict(gamma=-1.0), "Invalid gamma"), (dict(batch_dims=-1), "Invalid batch_dims"),
])
def test_batched_unit_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ssgd.batched_unit([torch.ones(2, 3)], **kwargs)
    with pytest.raises(ValueError, match="batch shape"):
        ssgd.batched_unit([torch.ones(2, 3), torch.ones(3, 3)])


def test_validators_share_one_rule():
    assert check_scope("layer") == "layer" and check_nonfinite("skip") == "skip"
    assert check_eps(1) == 1.0
    for bad in (0, -1.0, float("inf"), float("nan"), True, "1e-12"):
        with pytest.raises(ValueError, match="Invalid eps"):
            check_eps(bad)
    with pytest.raises(ValueError, match="Invalid nonfinite"):
        check_nonfinite("ignore")


def test_package_exports_what_users_call():
    assert set(ssgd.__all__) == {"NonFiniteGradientError", "SSGD", "SSGDWrapper", "__version__", "batched_unit",
                                 "shard_unit_grad_", "unit", "unit_"}
