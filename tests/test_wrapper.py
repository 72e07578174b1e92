"""ssgd.SSGDWrapper: unit-vector gradients in front of any torch optimizer."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import ssgd

DEVICES = [
    pytest.param("cpu"),
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")),
]


def _params(device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(device).requires_grad_() for s in [(4, 3), (3,), (2, 5)]]


def _set_grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(p.device)


def _unit_by_hand(grads, scope):
    if scope == "global":
        n = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        return [(g.double() / n).float() for g in grads]
    return [(g.double() / g.double().norm()).float() for g in grads]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_composes_with_adam(device, scope):
    ps, ref = _params(device), _params(device)
    opt = ssgd.SSGDWrapper(torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3), scope=scope)
    adam = torch.optim.Adam(ref, lr=1e-2, weight_decay=1e-3)
    for step in range(5):
        _set_grads(ps, step)
        for r, u in zip(ref, _unit_by_hand([p.grad for p in ps], scope)):
            r.grad = u.to(device)
        opt.step()
        adam.step()
        for p, r in zip(ps, ref):  # the wrapper leaves the unit vector in .grad
            torch.testing.assert_close(p.grad, r.grad, rtol=1e-6, atol=1e-7)
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(opt.state[p]["exp_avg"], adam.state[r]["exp_avg"], rtol=1e-5, atol=1e-7)


@pytest.mark.filterwarnings("error")
def test_works_with_lr_scheduler_and_forwards_groups():
    ps = _params()
    inner = torch.optim.SGD(ps, lr=0.4)
    opt = ssgd.SSGDWrapper(inner)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state and opt.defaults is inner.defaults
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for expected in (0.4, 0.2, 0.1):
        _set_grads(ps, 7)
        before = [p.detach().clone() for p in ps]
        opt.step()
        sched.step()  # warnings are errors: no "scheduler.step() before optimizer.step()"
        moved = math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(ps, before)))
        assert moved == pytest.approx(expected, rel=1e-5)
    assert inner.param_groups[0]["lr"] == pytest.approx(0.05)


def test_nonfinite_raise_names_parameter_and_modifies_nothing():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = ssgd.SSGDWrapper(torch.optim.Adam(model.named_parameters(), lr=1e-2))
    model(torch.randn(2, 3)).sum().backward()
    model[1].weight.grad[0, 0] = float("inf")
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    with pytest.raises(ssgd.NonFiniteGradientError, match=r"parameter '1\.weight'"):
        opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), params[n]) and torch.equal(p.grad, grads[n])
    assert len(opt.state) == 0  # Adam never ran


def test_nonfinite_skip_counts_and_round_trips():
    ps = _params()
    opt = ssgd.SSGDWrapper(torch.optim.Adam(ps, lr=1e-2), nonfinite="skip")
    _set_grads(ps, 1)
    opt.step()
    steps = [float(opt.state[p]["step"]) for p in ps]
    _set_grads(ps, 2)
    ps[2].grad[1, 1] = float("nan")
    before = [p.detach().clone() for p in ps]
    opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(p.detach(), b) for p, b in zip(ps, before))
    assert [float(opt.state[p]["step"]) for p in ps] == steps
    sd = copy.deepcopy(opt.state_dict())
    assert sd["ssgd"] == {"scope": "global", "eps": 1e-12, "nonfinite": "skip", "skipped_steps": 1}
    assert "ssgd_wrapper" not in sd and "skipped_steps" not in sd["state"]  # one layout, as ssgd.SSGD's
    qs = [p.detach().clone().requires_grad_() for p in ps]
    opt2 = ssgd.SSGDWrapper(torch.optim.Adam(qs, lr=0.5), nonfinite="skip")
    opt2.load_state_dict(sd)
    assert opt2.skipped_steps == 1 and opt2.param_groups[0]["lr"] == 1e-2
    for p, q in zip(ps, qs):
        _set_grads([p], 3)
        _set_grads([q], 3)
    opt.step()
    opt2.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p.detach(), q.detach())


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_zero_gradient_no_update(scope):
    ps = _params()
    for p in ps:
        p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in ps]
    ssgd.SSGDWrapper(torch.optim.SGD(ps, lr=1.0, momentum=0.9), scope=scope).step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(ps, before))


def test_params_without_grad_and_zero_grad_forwarding():
    ps = _params()
    _set_grads(ps, 4)
    ps[0].grad = None
    opt = ssgd.SSGDWrapper(torch.optim.SGD(ps, lr=1.0))
    before = ps[0].detach().clone()
    opt.step()
    assert torch.equal(ps[0].detach(), before)
    assert math.sqrt(float(ps[1].grad.norm() ** 2 + ps[2].grad.norm() ** 2)) == pytest.approx(1.0, rel=1e-6)
    opt.zero_grad()
    assert all(p.grad is None for p in ps)


def test_add_param_group_hooks_and_repr():
    a, b, c = _params()
    opt = ssgd.SSGDWrapper(torch.optim.SGD([a], lr=0.1), scope="layer")
    opt.add_param_group({"params": [b], "lr": 0.2})
    assert len(opt.optimizer.param_groups) == 2
    calls = []
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(type(o).__name__))
    _set_grads([a, b], 5)
    opt.step()
    assert calls == ["SGD"]
    assert "SSGDWrapper(scope='layer'" in repr(opt)


def test_closure_loss_is_returned():
    ps = _params()
    opt = ssgd.SSGDWrapper(torch.optim.SGD(ps, lr=0.1))

    def closure():
        opt.zero_grad()
        loss = sum((p ** 2).sum() for p in ps)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.detach()) > 0 and all(p.grad is not None for p in ps)


def test_invalid_arguments():
    ps = _params()
    with pytest.raises(TypeError, match="construct the optimizer first"):
        ssgd.SSGDWrapper(torch.optim.SGD)
    with pytest.raises(TypeError, match="wrapping twice"):
        ssgd.SSGDWrapper(ssgd.SSGDWrapper(torch.optim.SGD(ps, lr=0.1)))
    for kwargs, match in [(dict(scope="bogus"), "Invalid scope: 'bogus'"), (dict(eps=0.0), "Invalid eps value"),
                          (dict(nonfinite="warn"), "Invalid nonfinite policy: 'warn'")]:
        with pytest.raises(ValueError, match=match):
            ssgd.SSGDWrapper(torch.optim.SGD(ps, lr=0.1), **kwargs)


def test_sparse_gradient_is_a_clear_error():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = ssgd.SSGDWrapper(torch.optim.SparseAdam(emb.parameters()))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()
