"""ssgd.SSGD: the optimizer's math, corners, state, validation, and its cost (ops, host reads, compile)."""

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
from ssgd.experiments.bench_step import count_host_reads, count_ops

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


def _unit_by_hand(grads, scope, eps=1e-12):
    if scope == "global":
        n = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).clamp_min(eps)
        return [(g.double() / n).to(g.dtype) for g in grads]
    return [(g.double() / g.double().norm().clamp_min(eps)).to(g.dtype) for g in grads]


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
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("maximize", [False, True])
def test_plain_step_is_lr_times_unit_vector(device, scope, maximize):
    ps = _params(device)
    _set_grads(ps, 1)
    before = [p.detach().clone() for p in ps]
    units = _unit_by_hand([p.grad for p in ps], scope)
    ssgd.SSGD(ps, lr=0.3, scope=scope, maximize=maximize).step()
    sign = 1.0 if maximize else -1.0
    for p, b, u in zip(ps, before, units):
        torch.testing.assert_close(p.detach() - b, sign * 0.3 * u, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cfg", [dict(), dict(momentum=0.9, weight_decay=0.1), dict(scope="layer", momentum=0.9)])
def test_closure_loss_returned_and_grad_holds_the_gradient_or_its_unit_vector(cfg):
    ps = _params()
    _set_grads(ps, 1)
    g0 = [p.grad.clone() for p in ps]
    opt = ssgd.SSGD(ps, lr=0.1, **cfg)
    assert opt.step(lambda: torch.tensor(1.5)) == torch.tensor(1.5)
    unit = _unit_by_hand(g0, cfg.get("scope", "global"))
    for p, g, u in zip(ps, g0, unit):  # torch's fused kernel unscales .grad in place under a grad_scale
        assert torch.equal(p.grad, g) or torch.allclose(p.grad, u, rtol=1e-6, atol=1e-7)


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
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_zero_gradient_whole_model_no_update(scope, momentum):
    ps = _params()
    for p in ps:
        p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in ps]
    opt = ssgd.SSGD(ps, lr=0.5, scope=scope, momentum=momentum)
    for _ in range(2):
        opt.step()
    for p, b in zip(ps, before):
        assert torch.equal(p.detach(), b)
    if momentum:
        assert all(torch.equal(opt.state[p]["momentum_buffer"], torch.zeros_like(p)) for p in ps)


@pytest.mark.filterwarnings("error")
def test_zero_gradient_one_layer_in_layer_scope():
    ps = _params()
    _set_grads(ps, 3)
    ps[1].grad.zero_()
    before = [p.detach().clone() for p in ps]
    ssgd.SSGD(ps, lr=0.5, scope="layer").step()
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


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_nonfinite_skip_counts_and_leaves_params_bit_identical(scope):
    ps = _params()
    opt = ssgd.SSGD(ps, lr=0.1, scope=scope, momentum=0.9, weight_decay=0.01, nonfinite="skip")
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


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("cfg", [dict(), dict(weight_decay=0.1, decoupled_weight_decay=True), dict(maximize=True),
                                 dict(momentum=0.9, weight_decay=0.1, decoupled_weight_decay=True)])
def test_a_skipped_step_moves_nothing_whatever_the_options(scope, cfg):
    ps = _params()
    opt = ssgd.SSGD(ps, lr=0.1, scope=scope, nonfinite="skip", **cfg)
    _set_grads(ps, 1)
    opt.step()
    _set_grads(ps, 2)
    ps[2].grad[0, 1, 0] = float("inf")
    before = [_bits(p) for p in ps]
    opt.step()
    assert opt.skipped_steps == 1 and all(torch.equal(_bits(p), b) for p, b in zip(ps, before))


def test_nonfinite_mixed_group_policies():
    a, b = _params()[:2]
    opt = ssgd.SSGD([{"params": [a], "nonfinite": "skip"}, {"params": [b]}], lr=0.1)  # default raise
    _set_grads([a, b], 1)
    a.grad[0, 0] = float("nan")
    opt.step()  # only the skip group is bad: skipped, nothing to raise
    assert opt.skipped_steps == 1
    opt.check_finite()
    b.grad[0] = float("nan")
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"param_groups\[1\]\['params'\]\[0\]"):
        opt.step()  # the raise group's tensor is named, not the skip group's


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_overflowing_norm_is_nonfinite(scope, momentum):
    # entries of 3e19: finite, but the float32 sum of squares overflows (clip_grad_norm_'s convention)
    ps = _params(seed=4)
    _set_grads(ps, 5)
    ps[1].grad[0] = 3e19
    before = [_bits(p) for p in ps]
    opt = ssgd.SSGD(ps, lr=0.25, scope=scope, momentum=momentum, nonfinite="skip")
    opt.step()
    assert opt.skipped_steps == 1 and all(torch.equal(_bits(p), b) for p, b in zip(ps, before))
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"param_groups\[0\]\['params'\]\[1\]"):
        ssgd.SSGD(ps, lr=0.25, scope=scope, momentum=momentum).step()
    if scope == "global":  # every tensor finite in norm, their joint norm not: named by the largest
        for p in ps:
            p.grad = torch.full(p.shape, 1e19 / math.sqrt(p.numel()))
        ps[2].grad.mul_(2)
        with pytest.raises(ssgd.NonFiniteGradientError, match=r"param_groups\[0\]\['params'\]\[2\]"):
            ssgd.SSGD(ps, lr=0.25, momentum=momentum).step()


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_nonfinite_raise_under_compile_is_read_by_check_finite(scope):
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = ssgd.SSGD(model.named_parameters(), lr=0.1, momentum=0.9, scope=scope)
    step = torch.compile(opt.step, backend="eager", fullgraph=True)
    model(torch.randn(5, 3)).sum().backward()
    step()
    model[2].bias.grad[1] = float("inf")
    before = {n: _bits(p) for n, p in model.named_parameters()}
    step()  # compiled: nothing is read on the host, nothing moves ...
    assert all(torch.equal(_bits(p), before[n]) for n, p in model.named_parameters())
    model[2].bias.grad[1] = 1.0
    step()  # a good step after it: the first failing step is still the one reported
    assert not torch.equal(_bits(model[0].weight), before["0.weight"])
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"parameter '2\.bias' \(shape \(2,\)\)"):
        opt.check_finite()  # ... and the flag names the parameter when read
    opt.check_finite()  # read once


class _Event:
    """Stands in for a CUDA event: not complete until ``done``."""

    def __init__(self):
        self.done = False

    def query(self):
        return self.done

    def synchronize(self):
        self.done = True


def test_lazy_raise_waits_for_the_event_and_loses_no_step():
    ps = _params()
    opt = ssgd.SSGD(ps, lr=0.1)
    spans = [(0, 0, 3, "global", ps)]
    late, ok = _Event(), _Event()
    # two earlier steps as a GPU leaves them: the flag copied to host memory, the norms on the device
    opt._flags["pending"] = [(torch.ones(1), late, torch.tensor([1.0, float("nan"), 1.0]), spans),
                             (torch.zeros(1), ok, torch.tensor([1.0, 1.0, 1.0]), spans)]
    _set_grads(ps, 1)
    opt.step()  # the failing step's event has not completed: no wait, no raise, nothing dropped
    assert len(opt._flags["pending"]) == 2
    late.done = True
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"param_groups\[0\]\['params'\]\[1\]"):
        opt.step()  # read at the next step once it is known
    assert len(opt._flags["pending"]) == 1
    opt.check_finite()  # waits for the rest: all finite
    assert opt._flags["pending"] == [] and len(opt._flags["pool"]) == 2  # the flag slots are reused


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("device", ["cuda"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_cuda_graph_capture_replays_the_step(device, scope):
    ps = _params(device)
    ref = [p.detach().clone().requires_grad_() for p in ps]
    opt = ssgd.SSGD(ps, lr=0.1, scope=scope, momentum=0.9, nonfinite="skip")
    eager = ssgd.SSGD(ref, lr=0.1, scope=scope, momentum=0.9, nonfinite="skip")
    _set_grads(ps, 1)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up eagerly: buffers and counters exist before capture
        for _ in range(2):
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for _ in range(2):
        _set_grads(ref, 1)
        eager.step()
    for k in range(3):
        _set_grads(ref, 10 + k)
        g = torch.Generator().manual_seed(10 + k)
        for p in ps:  # new gradients into the captured tensors
            p.grad.copy_(torch.randn(p.shape, generator=g).to(device))
        if k == 1:
            ps[0].grad[0, 0] = float("nan")
            ref[0].grad[0, 0] = float("nan")
        graph.replay()
        eager.step()
    torch.cuda.synchronize()
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)
    assert opt.skipped_steps == eager.skipped_steps == 1


# ----------------------------------------------------------------------------- dtypes and scales
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_half_precision_overflowing_sum_of_squares(device, dtype, scope, momentum):
    p = torch.zeros(1000, dtype=dtype, device=device, requires_grad=True)
    q = torch.ones(3, dtype=dtype, device=device, requires_grad=True)
    p.grad = torch.full((1000,), 300.0, dtype=dtype, device=device)  # sum of squares 9e7 > fp16 max
    q.grad = torch.zeros(3, dtype=dtype, device=device)
    ssgd.SSGD([p, q], lr=1.0, scope=scope, momentum=momentum).step()
    assert p.dtype == dtype and q.dtype == dtype
    torch.testing.assert_close(p.detach().float().cpu(), torch.full((1000,), -1 / math.sqrt(1000)), rtol=1e-2, atol=0)
    assert torch.equal(q.detach().cpu(), torch.ones(3, dtype=dtype))


def test_step_length_of_large_float32_tensors():
    p = torch.zeros(2**22 + 5, requires_grad=True)
    q = torch.zeros(7, requires_grad=True)
    g = torch.Generator().manual_seed(8)
    p.grad = torch.randn(p.shape, generator=g) + 0.5
    q.grad = torch.randn(q.shape, generator=g)
    ssgd.SSGD([p, q], lr=1.0).step()
    length = math.sqrt(float((p.detach().double() ** 2).sum() + (q.detach().double() ** 2).sum()))
    assert length == pytest.approx(1.0, rel=2e-4)  # torch's float32 CPU reduction at 4M entries (see transform)


def test_float64_step_length_to_float32_scale_precision():
    ps = _params(dtype=torch.float64)
    _set_grads(ps, 9, scale=1e-3)
    before = [p.detach().clone() for p in ps]
    ssgd.SSGD(ps, lr=1.0, momentum=0.9).step()  # the kernel's grad_scale is float32: length 1 to ~6e-8
    length = math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(ps, before)))
    assert length == pytest.approx(1.0, rel=1e-7)


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


# ----------------------------------------------------------------------------- semantics vs torch.optim.SGD
SEMANTICS = [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.5, weight_decay=0.1),
    dict(momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True),
    dict(weight_decay=0.2),
    dict(weight_decay=0.2, maximize=True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("cfg", SEMANTICS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "plain")
def test_equals_torch_sgd_on_hand_normalised_gradient(dtype, scope, cfg):
    ps = _params(dtype=dtype)
    ref = [p.detach().clone().requires_grad_() for p in ps]
    opt = ssgd.SSGD(ps, lr=0.1, scope=scope, **cfg)
    sgd = torch.optim.SGD(ref, lr=0.1, foreach=True, **cfg)
    for step in range(5):
        _set_grads(ps, 20 + step)
        if step == 3:
            ps[1].grad.zero_()
        for r, u in zip(ref, _unit_by_hand([p.grad for p in ps], scope)):
            r.grad = u.clone()
        opt.step()
        sgd.step()
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-6)
        if cfg.get("momentum"):
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], sgd.state[r]["momentum_buffer"])


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("momentum, maximize", [(0.9, False), (0.0, False), (0.0, True)])
def test_decoupled_weight_decay(scope, momentum, maximize):
    ps = _params()
    ref = [p.detach().clone().requires_grad_() for p in ps]
    opt = ssgd.SSGD(ps, lr=0.1, scope=scope, momentum=momentum, weight_decay=0.3, decoupled_weight_decay=True,
                    maximize=maximize)
    sgd = torch.optim.SGD(ref, lr=0.1, momentum=momentum, maximize=maximize)
    for step in range(3):
        _set_grads(ps, 30 + step)
        for r, u in zip(ref, _unit_by_hand([p.grad for p in ps], scope)):
            r.grad = u.clone()
        with torch.no_grad():
            for r in ref:
                r.mul_(1 - 0.1 * 0.3)
        opt.step()
        sgd.step()
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-6)


def test_mixed_scope_groups_equal_torch_sgd_groups():
    shapes = ((4, 3), (3,), (2, 2, 2), (5,))
    ps = _params(shapes=shapes)
    ref = [p.detach().clone().requires_grad_() for p in ps]
    opt = ssgd.SSGD([{"params": ps[:2]}, {"params": ps[2:], "scope": "layer", "lr": 0.05, "momentum": 0.5,
                                           "nesterov": True}], lr=0.1, momentum=0.9, weight_decay=0.01)
    sgd = torch.optim.SGD([{"params": ref[:2]}, {"params": ref[2:], "lr": 0.05, "momentum": 0.5, "nesterov": True}],
                          lr=0.1, momentum=0.9, weight_decay=0.01)
    for step in range(4):
        _set_grads(ps, 10 + step)
        units = _unit_by_hand([p.grad for p in ps[:2]], "global") + _unit_by_hand([p.grad for p in ps[2:]], "layer")
        for r, u in zip(ref, units):
            r.grad = u.clone()
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
       scope=st.sampled_from(["global", "layer"]), log_c=st.floats(-6, 6))
def test_property_step_direction_length_and_scale_invariance(shapes, log_scale, seed, lr, scope, log_c):
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    grads = [torch.randn(*s, generator=g, dtype=torch.float64) * 10.0**log_scale for s in shapes]

    def step(scale):
        ps = [t.clone().requires_grad_() for t in init]
        for p, gr in zip(ps, grads):
            p.grad = gr * scale
        ssgd.SSGD(ps, lr=lr, scope=scope, eps=1e-30).step()  # every norm drawn is far above eps
        return [p.detach() - t for p, t in zip(ps, init)]

    d = step(1.0)  # float64, to the float32 precision of the kernel's scale
    for di, u in zip(d, _unit_by_hand(grads, scope)):
        torch.testing.assert_close(di, -lr * u, rtol=2e-7, atol=1e-12 * lr)
    if scope == "global":
        assert math.sqrt(sum(float((di ** 2).sum()) for di in d)) == pytest.approx(lr, rel=2e-7)
    else:
        for di in d:
            assert float(di.norm()) == pytest.approx(lr, rel=2e-7)
    for a, b in zip(d, step(10.0**log_c)):  # any c > 0: the same step
        torch.testing.assert_close(a, b, rtol=2e-7, atol=1e-12 * lr)
    for a, b in zip(d, step(2.0**round(log_c))):  # a power of two scales exactly: bit-identical step
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- the cost: host reads, ops, compile
# every option that changes what a step runs; the ops and host reads of each are checked on both scopes and policies
STEADY = [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=0.1),
          dict(momentum=0.9, dampening=0.3, maximize=True), dict(weight_decay=0.1), dict(maximize=True),
          dict(weight_decay=0.1, decoupled_weight_decay=True),
          dict(momentum=0.9, weight_decay=0.1, decoupled_weight_decay=True)]
STEADY_IDS = ["plain", "momentum", "nesterov-wd", "dampening-maximize", "wd", "maximize", "decoupled",
              "momentum-decoupled"]


def _steady_step(opt, ps, counter):
    for s in range(2):  # the first steps create buffers
        _set_grads(ps, 70 + s)
        opt.step()
    _set_grads(ps, 80)
    with counter as c:
        opt.step()
    return c


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("cfg", STEADY, ids=STEADY_IDS)
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_step_reads_nothing_on_the_host(scope, cfg, nonfinite):
    ps = _params()
    reads = _steady_step(ssgd.SSGD(ps, lr=0.1, scope=scope, nonfinite=nonfinite, **cfg), ps,
                         count_host_reads(torch.device("cpu")))
    assert reads == []


def test_host_read_counter_sees_reads_and_value_dependent_ops():
    t = torch.tensor([0.0, 2.0])
    with count_host_reads(torch.device("cpu")) as reads:
        bool(t[1])
        t.nonzero()
        torch.repeat_interleave(t, torch.tensor([1, 2]), output_size=3)  # the size is given: no read
    assert reads == ["__bool__", "aten.nonzero.default"]


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("cfg", STEADY, ids=STEADY_IDS)
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_ops_per_step_do_not_grow_with_tensors_and_stay_near_sgd(scope, cfg, nonfinite):
    ops, launches = {}, {}
    for k in (4, 32):
        ps = _params(shapes=[(3, 2)] * (k // 2) + [(5,)] * (k // 2))
        c = _steady_step(ssgd.SSGD(ps, lr=0.1, scope=scope, nonfinite=nonfinite, **cfg), ps, count_ops())
        ops[k], launches[k] = len(c.ops), c.launches
    qs = _params(shapes=[(3, 2)] * 16 + [(5,)] * 16)
    sgd_cfg = {k: v for k, v in cfg.items() if k != "decoupled_weight_decay"}
    sgd = _steady_step(torch.optim.SGD(qs, lr=0.1, foreach=True, **sgd_cfg), qs, count_ops())
    assert ops[4] == ops[32] <= len(sgd.ops) + 8, (ops, sgd.ops)
    # on a GPU: global scope launches as many kernels at 32 tensors as at 4; layer scope's division by each
    # tensor's own norm (a list of 0-dim tensors, off torch's foreach fast path) is one kernel per tensor
    assert launches[32] - launches[4] == (0 if scope == "global" else 28), launches


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_compiled_step_has_no_graph_break_and_equals_eager(scope, momentum, nonfinite):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    twin = copy.deepcopy(model)
    opt = ssgd.SSGD(model.parameters(), lr=0.1, scope=scope, momentum=momentum, nonfinite=nonfinite)
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("device", ["cuda"])
def test_compiled_step_on_cuda_equals_eager(device):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(device)
    twin = copy.deepcopy(model)
    opt = ssgd.SSGD(model.parameters(), lr=0.1, momentum=0.9)
    ref = ssgd.SSGD(twin.parameters(), lr=0.1, momentum=0.9)
    step = torch.compile(opt.step, backend="aot_eager", fullgraph=True)
    x = torch.randn(5, 6, device=device)
    for k in range(3):
        for m in (model, twin):
            m.zero_grad()
            m(x * (k + 1)).sum().backward()
        step()
        ref.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


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
