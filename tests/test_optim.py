"""ssgd.SSGD: the optimizer's math, corners, paths, state and validation."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ssgd

DEVICES = [
    pytest.param("cpu"),
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")),
]


def _params(device="cpu", dtype=torch.float32, seed=0, shapes=((4, 3), (3,), (2, 2, 2))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype).requires_grad_() for s in shapes]


def _set_grads(params, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * scale).to(device=p.device, dtype=p.dtype)


def _unit_by_hand(grads, scope):
    if scope == "global":
        n = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        return [(g.double() / n).to(g.dtype) for g in grads]
    return [(g.double() / g.double().norm()).to(g.dtype) for g in grads]


def _bits(t):
    return t.detach().clone().view(torch.int32 if t.element_size() == 4 else torch.int64 if t.element_size() == 8
                                   else torch.int16)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-0.1), "Invalid learning rate: -0.1"),
    (dict(lr=float("nan")), "Invalid learning rate: nan"),
    (dict(lr=torch.tensor([0.1, 0.2])), "1-element"),
    (dict(momentum=-0.5), "Invalid momentum value: -0.5"),
    (dict(dampening=-0.1), "Invalid dampening value: -0.1"),
    (dict(dampening=1.5), "Invalid dampening value: 1.5"),
    (dict(nesterov=True), "Nesterov momentum requires a momentum > 0"),
    (dict(nesterov=True, momentum=0.9, dampening=0.1), "zero dampening"),
    (dict(scope="bogus"), "Invalid scope: 'bogus'"),
    (dict(scope="model"), "Invalid scope: 'model'"),
    (dict(eps=0.0), "Invalid eps value: 0.0"),
    (dict(eps=-1e-8), "Invalid eps value: -1e-08"),
    (dict(nonfinite="ignore"), "Invalid nonfinite policy: 'ignore'"),
    (dict(weight_decay=-1e-4), "Invalid weight_decay value: -0.0001"),
])
def test_invalid_hyperparameters(kwargs, match):
    kwargs = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        ssgd.SSGD(_params(), **kwargs)


@pytest.mark.parametrize("override, match", [
    (dict(lr=-1.0), "param group 1: Invalid learning rate"),
    (dict(scope="nope"), "param group 1: Invalid scope"),
    (dict(momentum=-1.0), "param group 1: Invalid momentum"),
    (dict(nesterov=True), "param group 1: Nesterov"),
])
def test_invalid_param_group_override(override, match):
    a, b = _params()[:2]
    with pytest.raises(ValueError, match=match):
        ssgd.SSGD([{"params": [a]}, {"params": [b], **override}], lr=0.1)
    opt = ssgd.SSGD([a], lr=0.1)
    with pytest.raises(ValueError, match=match):
        opt.add_param_group({"params": [b], **override})
    assert len(opt.param_groups) == 1  # the bad group was not kept


# ----------------------------------------------------------------------------- the basic step
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("maximize", [False, True])
def test_plain_step_is_lr_times_unit_vector(device, foreach, scope, maximize):
    ps = _params(device)
    _set_grads(ps, 1)
    before = [p.detach().clone() for p in ps]
    ssgd.SSGD(ps, lr=0.3, scope=scope, foreach=foreach, maximize=maximize).step()
    sign = 1.0 if maximize else -1.0
    for p, b, u in zip(ps, before, _unit_by_hand([p.grad for p in ps], scope)):
        torch.testing.assert_close(p.detach() - b, sign * 0.3 * u, rtol=1e-5, atol=1e-6)


def test_grads_are_not_modified_and_closure_loss_returned():
    ps = _params()
    _set_grads(ps, 1)
    g0 = [p.grad.clone() for p in ps]
    opt = ssgd.SSGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1)
    assert opt.step(lambda: torch.tensor(1.5)) == torch.tensor(1.5)
    assert all(torch.equal(p.grad, g) for p, g in zip(ps, g0))


def test_tensor_lr_and_lr_scheduler():
    ps = _params()
    opt = ssgd.SSGD(ps, lr=torch.tensor(0.2))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for expected in (0.2, 0.1):
        _set_grads(ps, 2)
        before = [p.detach().clone() for p in ps]
        opt.step()
        sched.step()
        moved = math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(ps, before)))
        assert moved == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------------- zero gradients
@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_zero_gradient_whole_model_no_update(foreach, scope, momentum):
    ps = _params()
    for p in ps:
        p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in ps]
    opt = ssgd.SSGD(ps, lr=0.5, scope=scope, momentum=momentum, foreach=foreach)
    for _ in range(2):
        opt.step()
    for p, b in zip(ps, before):
        assert torch.equal(p.detach(), b)
    if momentum:
        assert all(torch.equal(opt.state[p]["momentum_buffer"], torch.zeros_like(p)) for p in ps)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("foreach", [True, False])
def test_zero_gradient_one_layer_in_layer_scope(foreach):
    ps = _params()
    _set_grads(ps, 3)
    ps[1].grad.zero_()
    before = [p.detach().clone() for p in ps]
    ssgd.SSGD(ps, lr=0.5, scope="layer", foreach=foreach).step()
    assert torch.equal(ps[1].detach(), before[1])
    for i in (0, 2):
        assert float((ps[i].detach() - before[i]).norm()) == pytest.approx(0.5, rel=1e-5)
        assert torch.isfinite(ps[i]).all()


# ----------------------------------------------------------------------------- non-finite gradients
def test_nonfinite_raise_names_parameter_from_named_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = ssgd.SSGD(model.named_parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()  # creates momentum buffers
    model(torch.randn(5, 3)).sum().backward()
    model[2].bias.grad[1] = float("nan")
    before = {n: _bits(p) for n, p in model.named_parameters()}
    bufs = {n: _bits(opt.state[p]["momentum_buffer"]) for n, p in model.named_parameters()}
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"parameter '2\.bias' \(shape \(2,\)\)"):
        opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(_bits(p), before[n]) and torch.equal(_bits(opt.state[p]["momentum_buffer"]), bufs[n])


def test_nonfinite_raise_names_position_without_names():
    ps = _params()
    _set_grads(ps, 1)
    ps[2].grad[0, 0, 0] = float("inf")
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"param_groups\[0\]\['params'\]\[2\]"):
        ssgd.SSGD(ps, lr=0.1).step()


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_nonfinite_skip_counts_and_leaves_params_bit_identical(foreach, scope):
    ps = _params()
    opt = ssgd.SSGD(ps, lr=0.1, scope=scope, momentum=0.9, weight_decay=0.01, foreach=foreach, nonfinite="skip")
    _set_grads(ps, 1)
    opt.step()
    for k, bad in enumerate([float("nan"), float("inf")]):
        _set_grads(ps, 2)
        ps[0].grad[1, 1] = bad
        before = [_bits(p) for p in ps]
        bufs = [_bits(opt.state[p]["momentum_buffer"]) for p in ps]
        opt.step()
        assert opt.skipped_steps == k + 1 and "skipped_steps" not in opt.state
        assert all(torch.equal(_bits(p), b) for p, b in zip(ps, before))
        assert all(torch.equal(_bits(opt.state[p]["momentum_buffer"]), b) for p, b in zip(ps, bufs))
    _set_grads(ps, 3)
    before = [p.detach().clone() for p in ps]
    opt.step()  # a good step moves again
    assert all(not torch.equal(p.detach(), b) for p, b in zip(ps, before))
    sd = opt.state_dict()
    assert sd["ssgd"]["skipped_steps"] == 2 and "skipped_steps" not in sd["state"]
    opt2 = ssgd.SSGD(ps, lr=0.1, nonfinite="skip")
    opt2.load_state_dict(copy.deepcopy(sd))
    assert opt2.skipped_steps == 2
    old = copy.deepcopy(sd)  # checkpoints before the state-dict hooks: a string key in "state"
    old["state"]["skipped_steps"] = old.pop("ssgd")["skipped_steps"]
    opt3 = ssgd.SSGD(ps, lr=0.1, nonfinite="skip")
    opt3.load_state_dict(old)
    assert opt3.skipped_steps == 2 and "skipped_steps" not in opt3.state


def test_nonfinite_mixed_group_policies():
    a, b = _params()[:2]
    opt = ssgd.SSGD([{"params": [a], "nonfinite": "skip"}, {"params": [b]}], lr=0.1)  # default raise
    _set_grads([a, b], 1)
    a.grad[0, 0] = float("nan")
    opt.step()  # only the skip group is bad: skipped
    assert opt.skipped_steps == 1
    b.grad[0] = float("nan")
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"param_groups\[1\]"):
        opt.step()


# ----------------------------------------------------------------------------- dtypes and scales
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_half_precision_overflowing_sum_of_squares(device, dtype, foreach, momentum):
    p = torch.zeros(1000, dtype=dtype, device=device, requires_grad=True)
    q = torch.ones(3, dtype=dtype, device=device, requires_grad=True)
    p.grad = torch.full((1000,), 300.0, dtype=dtype, device=device)  # sum of squares 9e7 > fp16 max
    q.grad = torch.zeros(3, dtype=dtype, device=device)
    ssgd.SSGD([p, q], lr=1.0, momentum=momentum, foreach=foreach).step()
    assert p.dtype == dtype and q.dtype == dtype
    torch.testing.assert_close(p.detach().float().cpu(), torch.full((1000,), -1 / math.sqrt(1000)), rtol=1e-2, atol=0)
    assert torch.equal(q.detach().cpu(), torch.ones(3, dtype=dtype))


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("capturable", [None, True], ids=["default", "device-path"])
def test_huge_fp32_gradients_step_exactly(foreach, scope, momentum, capturable):
    ps = _params(seed=4)
    g = torch.Generator().manual_seed(5)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g) * 1e30
    ps[1].grad[0] = 3e38
    before = [p.detach().clone() for p in ps]
    ssgd.SSGD(ps, lr=0.25, scope=scope, momentum=momentum, foreach=foreach, capturable=capturable).step()
    n_glob = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in ps))
    for p, b in zip(ps, before):
        n = n_glob if scope == "global" else float(p.grad.double().norm())
        expected = (b.double() - 0.25 * p.grad.double() / n).float()
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("foreach", [True, False])
def test_step_length_is_exact_for_large_float32_tensors(foreach):
    p = torch.zeros(2**22 + 5, requires_grad=True)
    q = torch.zeros(7, requires_grad=True)
    g = torch.Generator().manual_seed(8)
    p.grad = torch.randn(p.shape, generator=g) + 0.5  # CPU float32 one-shot reductions are off by ~1e-4 here
    q.grad = torch.randn(q.shape, generator=g)
    ssgd.SSGD([p, q], lr=1.0, foreach=foreach).step()
    length = math.sqrt(float((p.detach().double() ** 2).sum() + (q.detach().double() ** 2).sum()))
    assert length == pytest.approx(1.0, rel=1e-6)


def test_params_without_grad_are_skipped():
    ps = _params()
    _set_grads(ps, 1)
    ps[1].grad = None
    before = [p.detach().clone() for p in ps]
    opt = ssgd.SSGD(ps, lr=0.2, momentum=0.9)
    opt.step()
    assert torch.equal(ps[1].detach(), before[1]) and len(opt.state[ps[1]]) == 0
    moved = math.sqrt(sum(float(((ps[i].detach() - before[i]) ** 2).sum()) for i in (0, 2)))
    assert moved == pytest.approx(0.2, rel=1e-5)  # the norm spans only the params that have a grad
    for p in ps:
        p.grad = None
    opt.step()  # nothing to do
    assert torch.equal(ps[1].detach(), before[1])


def test_mixed_dtypes_share_the_global_norm():
    a = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float32, requires_grad=True)
    a.grad, b.grad = torch.tensor([3.0], dtype=torch.float64), torch.tensor([4.0])
    ssgd.SSGD([a, b], lr=1.0).step()
    assert float(a.detach()) == pytest.approx(-0.6) and float(b.detach()) == pytest.approx(-0.8)


def test_sparse_gradients_are_a_clear_error():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = ssgd.SSGD(emb.named_parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match=r"sparse gradients .* 'weight'.*sparse=False"):
        opt.step()


# ----------------------------------------------------------------------------- foreach vs single tensor
CONFIGS = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.9, dampening=0.5),
    dict(weight_decay=0.1),
    dict(weight_decay=0.1, decoupled_weight_decay=True, momentum=0.5),
    dict(momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True),
    dict(scope="layer"),
    dict(scope="layer", momentum=0.9, nesterov=True, weight_decay=0.1),
    dict(scope="layer", momentum=0.8, dampening=0.2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True),
]


def _groups(ps, mixed):
    if not mixed:
        return ps
    return [{"params": ps[:2]}, {"params": ps[2:], "scope": "layer", "lr": 0.05, "momentum": 0.5}]


PATHS = {"foreach-vs-single": (dict(foreach=True), dict(foreach=False)),
         "device-vs-host": (dict(capturable=True), dict(capturable=False))}  # capturable: no host read


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mixed", [False, True], ids=["one-group", "mixed-scope-groups"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "plain")
@pytest.mark.parametrize("paths", list(PATHS))
def test_foreach_and_single_tensor_paths_agree(device, mixed, cfg, paths):
    shapes = ((4, 3), (3,), (2, 2, 2), (5,))
    pa = _params(device, shapes=shapes)
    pb = [p.detach().clone().requires_grad_() for p in pa]
    oa = ssgd.SSGD(_groups(pa, mixed), lr=0.1, **PATHS[paths][0], **cfg)
    ob = ssgd.SSGD(_groups(pb, mixed), lr=0.1, **PATHS[paths][1], **cfg)
    for step in range(4):
        _set_grads(pa, 10 + step)
        _set_grads(pb, 10 + step)
        if step == 2:
            pa[3].grad.zero_()
            pb[3].grad.zero_()
        oa.step()
        ob.step()
    for a, b, init in zip(pa, pb, _params(device, shapes=shapes)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        assert not torch.equal(a.detach(), init)
    for a, b in zip(pa, pb):
        if "momentum_buffer" in oa.state[a]:
            torch.testing.assert_close(oa.state[a]["momentum_buffer"], ob.state[b]["momentum_buffer"])


# ----------------------------------------------------------------------------- semantics vs torch.optim.SGD
SEMANTICS = [
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.5, weight_decay=0.1),
    dict(momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True),
    dict(weight_decay=0.2),
]


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("cfg", SEMANTICS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_equals_torch_sgd_on_hand_normalised_gradient(foreach, scope, cfg):
    ps = _params()
    ref = [p.detach().clone().requires_grad_() for p in ps]
    opt = ssgd.SSGD(ps, lr=0.1, scope=scope, foreach=foreach, **cfg)
    sgd = torch.optim.SGD(ref, lr=0.1, foreach=foreach, **cfg)
    for step in range(5):
        _set_grads(ps, 20 + step)
        for r, u in zip(ref, _unit_by_hand([p.grad for p in ps], scope)):
            r.grad = u.clone()
        opt.step()
        sgd.step()
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-6)
        if cfg.get("momentum"):
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], sgd.state[r]["momentum_buffer"])


@pytest.mark.parametrize("foreach", [True, False])
def test_decoupled_weight_decay(foreach):
    ps = _params()
    ref = [p.detach().clone().requires_grad_() for p in ps]
    opt = ssgd.SSGD(ps, lr=0.1, momentum=0.9, weight_decay=0.3, decoupled_weight_decay=True, foreach=foreach)
    sgd = torch.optim.SGD(ref, lr=0.1, momentum=0.9)
    for step in range(3):
        _set_grads(ps, 30 + step)
        for r, u in zip(ref, _unit_by_hand([p.grad for p in ps], "global")):
            r.grad = u.clone()
        with torch.no_grad():
            for r in ref:
                r.mul_(1 - 0.1 * 0.3)
        opt.step()
        sgd.step()
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- param groups
def test_global_scope_spans_param_groups_and_groups_override_lr():
    a = torch.zeros(1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    c = torch.zeros(2, requires_grad=True)
    opt = ssgd.SSGD([{"params": [a]}, {"params": [b], "lr": 2.0}, {"params": [c], "scope": "layer", "lr": 0.5}],
                    lr=1.0)
    a.grad, b.grad, c.grad = torch.tensor([3.0]), torch.tensor([4.0]), torch.tensor([0.0, 10.0])
    opt.step()
    # a and b share one norm ||(3, 4)|| = 5 although they are in different groups; c is its own unit vector
    assert float(a.detach()) == pytest.approx(-0.6) and float(b.detach()) == pytest.approx(-1.6)
    assert c.detach().tolist() == pytest.approx([0.0, -0.5])


def test_param_group_momentum_override():
    a, b = _params()[:2]
    opt = ssgd.SSGD([{"params": [a], "momentum": 0.9}, {"params": [b]}], lr=0.1, scope="layer")
    for s in range(2):
        _set_grads([a, b], 40 + s)
        opt.step()
    assert "momentum_buffer" in opt.state[a] and "momentum_buffer" not in opt.state[b]


# ----------------------------------------------------------------------------- state dict
@pytest.mark.parametrize("cfg", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, scope="layer", weight_decay=0.1)])
def test_state_dict_round_trip_continues_identically(cfg):
    def run(ps, opt, seeds):
        for s in seeds:
            _set_grads(ps, s)
            opt.step()

    ps = _params()
    opt = ssgd.SSGD(ps, lr=0.1, **cfg)
    run(ps, opt, range(50, 56))  # uninterrupted

    qs = _params()
    o1 = ssgd.SSGD(qs, lr=0.1, **cfg)
    run(qs, o1, range(50, 53))
    buf = io.BytesIO()
    torch.save({"model": [q.detach().clone() for q in qs], "opt": o1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    rs = [t.clone().requires_grad_() for t in ckpt["model"]]
    o2 = ssgd.SSGD(rs, lr=0.7)  # hyperparameters come back from the state dict
    o2.load_state_dict(ckpt["opt"])
    assert o2.param_groups[0]["lr"] == 0.1 and o2.param_groups[0]["momentum"] == 0.9
    run(rs, o2, range(53, 56))
    for p, r in zip(ps, rs):
        assert torch.equal(p.detach(), r.detach())


# ----------------------------------------------------------------------------- properties
shape_lists = st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(shapes=shape_lists, log_scale=st.floats(-8, 8), seed=st.integers(0, 2**16), lr=st.floats(1e-3, 10.0),
       scope=st.sampled_from(["global", "layer"]), foreach=st.booleans(), log_c=st.floats(-6, 6))
def test_property_step_direction_length_and_scale_invariance(shapes, log_scale, seed, lr, scope, foreach, log_c):
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    grads = [torch.randn(*s, generator=g, dtype=torch.float64) * 10.0**log_scale for s in shapes]

    def step(scale):
        ps = [t.clone().requires_grad_() for t in init]
        for p, gr in zip(ps, grads):
            p.grad = gr * scale
        ssgd.SSGD(ps, lr=lr, scope=scope, foreach=foreach).step()
        return [p.detach() - t for p, t in zip(ps, init)]

    d = step(1.0)
    for di, u in zip(d, _unit_by_hand(grads, scope)):
        torch.testing.assert_close(di, -lr * u, rtol=1e-9, atol=1e-12 * lr)
    if scope == "global":
        assert math.sqrt(sum(float((di ** 2).sum()) for di in d)) == pytest.approx(lr, rel=1e-9)
    else:
        for di in d:
            assert float(di.norm()) == pytest.approx(lr, rel=1e-9)
    for a, b in zip(d, step(10.0**log_c)):  # any c > 0: the same step
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 * lr)
    for a, b in zip(d, step(2.0**round(log_c))):  # a power of two scales exactly: bit-identical step
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- capturable: no host read in the step
class _HostReads:
    """Counts host reads of tensor values (``item``, ``tolist``, ``bool``, ``float``, ``int``) -- on a GPU
    each is a synchronisation. Used as a context manager around ``opt.step()``."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")

    def __enter__(self):
        self.calls, self._orig = [], {}
        for n in self.NAMES:
            orig = getattr(torch.Tensor, n)
            self._orig[n] = orig

            def wrapper(t, *a, _n=n, _orig=orig, **k):
                self.calls.append(_n)
                return _orig(t, *a, **k)
            setattr(torch.Tensor, n, wrapper)
        return self

    def __exit__(self, *exc):
        for n, orig in self._orig.items():
            setattr(torch.Tensor, n, orig)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("cfg", [dict(), dict(momentum=0.9, nesterov=True, weight_decay=0.1),
                                 dict(momentum=0.9, weight_decay=0.1, decoupled_weight_decay=True)],
                         ids=["plain", "nesterov-wd", "decoupled"])
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_capturable_step_reads_nothing_on_the_host(scope, cfg, nonfinite):
    ps = _params()
    opt = ssgd.SSGD(ps, lr=0.1, scope=scope, nonfinite=nonfinite, capturable=True, **cfg)
    host = ssgd.SSGD([p.detach().clone().requires_grad_() for p in ps], lr=0.1, scope=scope, capturable=False, **cfg)
    for step in range(3):
        _set_grads(ps, 60 + step)
        _set_grads(host.param_groups[0]["params"], 60 + step)
        with _HostReads() as reads:
            opt.step()
        # a raise step reads the *previous* step's flag from host memory (lazy raise), never a tensor value
        assert reads.calls == []
        with _HostReads() as reads:
            host.step()
        assert reads.calls  # the host path does read (it is the eager, exact-on-CPU default)
    for p, q in zip(ps, host.param_groups[0]["params"]):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_capturable_numerics_corners(scope, momentum):  # huge float32: test_huge_fp32_gradients_step_exactly
    # float64 of order 1e300, tiny float32 with a tiny eps, and a zero tensor
    big = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    big.grad = torch.full((4,), 1e300, dtype=torch.float64)
    ssgd.SSGD([big], lr=1.0, scope=scope, momentum=momentum, capturable=True).step()
    torch.testing.assert_close(big.detach(), torch.full((4,), -0.5, dtype=torch.float64))
    tiny, zero = torch.zeros(4, requires_grad=True), torch.ones(3, requires_grad=True)
    tiny.grad, zero.grad = torch.full((4,), 1e-25), torch.zeros(3)
    ssgd.SSGD([tiny, zero], lr=1.0, scope=scope, eps=1e-40, momentum=momentum, capturable=True).step()
    torch.testing.assert_close(tiny.detach(), torch.full((4,), -0.5))
    assert torch.equal(zero.detach(), torch.ones(3))
    # half precision whose sum of squares overflows fp16
    h = torch.zeros(1000, dtype=torch.float16, requires_grad=True)
    h.grad = torch.full((1000,), 300.0, dtype=torch.float16)
    ssgd.SSGD([h], lr=1.0, scope=scope, momentum=momentum, capturable=True).step()
    torch.testing.assert_close(h.detach().float(), torch.full((1000,), -1 / math.sqrt(1000)), rtol=1e-2, atol=0)


def test_capturable_step_length_is_exact_for_large_float32_tensors():
    p, q = torch.zeros(2**22 + 5, requires_grad=True), torch.zeros(7, requires_grad=True)
    g = torch.Generator().manual_seed(8)
    p.grad, q.grad = torch.randn(p.shape, generator=g) + 0.5, torch.randn(q.shape, generator=g)
    ssgd.SSGD([p, q], lr=1.0, capturable=True).step()
    length = math.sqrt(float((p.detach().double() ** 2).sum() + (q.detach().double() ** 2).sum()))
    assert length == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_capturable_nonfinite_skip_on_device_and_lazy_raise(scope):
    ps = _params()
    opt = ssgd.SSGD(ps, lr=0.1, scope=scope, momentum=0.9, weight_decay=0.01, nonfinite="skip", capturable=True)
    _set_grads(ps, 1)
    opt.step()
    _set_grads(ps, 2)
    ps[0].grad[1, 1] = float("nan")
    before = [_bits(p) for p in ps]
    bufs = [_bits(opt.state[p]["momentum_buffer"]) for p in ps]
    opt.step()
    assert all(torch.equal(_bits(p), b) for p, b in zip(ps, before))
    assert all(torch.equal(_bits(opt.state[p]["momentum_buffer"]), b) for p, b in zip(ps, bufs))
    assert opt.skipped_steps == 1 and opt.state_dict()["ssgd"]["skipped_steps"] == 1

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = ssgd.SSGD(model.named_parameters(), lr=0.1, momentum=0.9, scope=scope, capturable=True)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    model[2].bias.grad[1] = float("inf")
    before = {n: _bits(p) for n, p in model.named_parameters()}
    opt.step()  # no host read: every coefficient of the step is 0 on the device ...
    for n, p in model.named_parameters():  # ... so only the entry whose gradient was inf is touched (0 * inf)
        if n != "2.bias":
            assert torch.equal(_bits(p), before[n])
    assert torch.equal(_bits(model[2].bias)[0], before["2.bias"][0]) and math.isnan(float(model[2].bias[1]))
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"parameter '2\.bias' \(shape \(2,\)\)"):
        opt.check_finite()  # ... and the error names the parameter when read
    model[2].bias.grad[1] = float("nan")
    opt.step()
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"'2\.bias'"):
        opt.step()  # the next eager step raises it at the latest


def test_capturable_validation():
    with pytest.raises(ValueError, match="Invalid capturable"):
        ssgd.SSGD(_params(), capturable="yes")


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_compiled_step_has_no_graph_break_and_equals_eager(scope, momentum):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    twin = copy.deepcopy(model)
    opt = ssgd.SSGD(model.parameters(), lr=0.1, scope=scope, momentum=momentum)  # default capturable=None
    ref = ssgd.SSGD(twin.parameters(), lr=0.1, scope=scope, momentum=momentum)
    x = torch.randn(5, 6)
    model(x).sum().backward()
    twin(x).sum().backward()
    explained = torch._dynamo.explain(lambda: opt.step())()
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
    ref.step()
    step = torch.compile(lambda: opt.step(), backend="aot_eager")
    for k in range(2):
        for m in (model, twin):
            m.zero_grad()
            m(x * (k + 2)).sum().backward()
        step()
        ref.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        if momentum:
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], ref.state[q]["momentum_buffer"],
                                       rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- norm hooks: the norm pass in backward
@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_norm_hooks_take_the_norms_in_backward_and_step_identically(capturable, scope, monkeypatch):
    import ssgd._numerics as numerics

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    twin = copy.deepcopy(model)
    opt = ssgd.SSGD(model.parameters(), lr=0.1, momentum=0.9, scope=scope, capturable=capturable, norm_hooks=True)
    ref = ssgd.SSGD(twin.parameters(), lr=0.1, momentum=0.9, scope=scope, capturable=capturable)
    x = torch.randn(4, 5)
    calls = []
    for name in ("foreach_norms", "device_norms"):
        orig = getattr(numerics, name)
        monkeypatch.setattr(numerics, name, lambda *a, _o=orig, _n=name, **k: (calls.append(_n), _o(*a, **k))[1])
    import ssgd.optim as optim_mod
    monkeypatch.setattr(optim_mod, "device_norms", numerics.device_norms)
    for k in range(4):
        for m in (model, twin):
            m.zero_grad()
            m(x * (k + 1)).pow(2).sum().backward()
            if k == 1:  # gradient accumulation: the hook sees the final gradient
                m(x).pow(2).sum().backward()
        if k == 2:  # a gradient changed after backward (clipping, ...): its cached norm is not used
            model[0].weight.grad.mul_(3.0)
            twin[0].weight.grad.mul_(3.0)
        if k == 3:  # a gradient replaced after backward
            model[2].bias.grad = torch.ones(3)
            twin[2].bias.grad = torch.ones(3)
        calls.clear()
        opt.step()
        assert (calls == []) == (k < 2)  # nothing left to compute in the step unless a gradient changed
        ref.step()
        for p, q in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    opt.remove_norm_hooks()
    model(x).sum().backward()
    assert opt._norm_cache == {}


def test_capturable_mixed_group_policies():
    a, b = _params()[:2]
    opt = ssgd.SSGD([{"params": [a], "nonfinite": "skip"}, {"params": [b]}], lr=0.1, capturable=True)
    _set_grads([a, b], 1)
    a.grad[0, 0] = float("nan")
    opt.step()  # only the skip group is bad: skipped, nothing to raise
    assert opt.skipped_steps == 1
    opt.check_finite()
    b.grad[0] = float("nan")
    opt.step()
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"param_groups\[1\]\['params'\]\[0\]"):
        opt.check_finite()  # the raise group's tensor is named, not the skip group's
    assert opt.skipped_steps == 1


def test_skip_counter_survives_reloads_and_copies():
    ps = _params()
    opt = ssgd.SSGD(ps, lr=0.1, nonfinite="skip")
    _set_grads(ps, 1)
    ps[0].grad[0, 0] = float("nan")
    opt.step()
    for _ in range(3):  # load_state_dict goes through __setstate__: the hooks must not pile up
        opt.load_state_dict(opt.state_dict())
    assert opt.skipped_steps == 1 and len(opt._optimizer_state_dict_post_hooks) == 1
    twin = copy.deepcopy(opt)
    assert twin.skipped_steps == 1 and twin.state_dict()["ssgd"]["skipped_steps"] == 1
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    fresh = ssgd.SSGD(ps, lr=0.1, nonfinite="skip")
    fresh.load_state_dict(torch.load(buf))
    assert fresh.skipped_steps == 1
