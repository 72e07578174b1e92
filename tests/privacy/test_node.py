"""Node level in one process: node j's contribution is the unit vector of its own examples' gradient."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ssgd.privacy import NodeNoise, node_unit_sum_


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    g = torch.Generator().manual_seed(2)
    return model, torch.randn(10, 1, 3, 4, generator=g), torch.randint(0, 4, (10,), generator=g)


def test_node_sum_is_sum_of_each_nodes_unit_vector():
    model, x, y = _setup()
    owners = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    zero = [NodeNoise(0.0, num_nodes=3, rank=j) for j in range(3)]
    loss, norms = node_unit_sum_(model, F.cross_entropy, x, y, owners, zero)
    expect = [torch.zeros_like(p) for p in model.parameters()]
    for j in range(3):
        sel = owners == j
        gs = torch.autograd.grad(F.cross_entropy(model(x[sel]), y[sel]), list(model.parameters()))
        n = torch.sqrt(sum(g.pow(2).sum() for g in gs))
        assert float(norms[j]) == pytest.approx(float(n), rel=1e-5)
        for e, g in zip(expect, gs):
            e += g / n
    for p, e in zip(model.parameters(), expect):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert float(loss) == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-5)


def test_absent_node_sends_only_noise_and_noise_matches_the_stream():
    model, x, y = _setup()
    owners = torch.zeros(10, dtype=torch.long)  # node 1 has no example in this batch
    noises = [NodeNoise(0.5, mode="local", num_nodes=2, rank=j, seed=1) for j in range(2)]
    _, norms = node_unit_sum_(model, F.cross_entropy, x, y, owners, noises)
    assert torch.isnan(norms[1]) and not torch.isnan(norms[0])
    got = torch.cat([p.grad.flatten() for p in model.parameters()])
    # replay both nodes' noise streams and the node-0 unit vector
    replay = [NodeNoise(0.5, mode="local", num_nodes=2, rank=j, seed=1) for j in range(2)]
    gs = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    u = torch.cat([g.flatten() for g in gs])
    u = u / u.norm()
    z = []
    for nd in replay:
        ts = [torch.zeros_like(p) for p in model.parameters()]
        nd.add_(ts)
        z.append(torch.cat([t.flatten() for t in ts]))
    torch.testing.assert_close(got, u + z[0] + z[1], rtol=1e-5, atol=1e-6)


def test_node_privacy_accounts_rounds_and_splits_the_noise():
    from ssgd.privacy import NodePrivacy, compute_epsilon

    p = NodePrivacy(3.0, delta=1e-5, num_nodes=4, rank=2, seed=0)
    for _ in range(20):
        p.step()
    assert p.epsilon() == pytest.approx(compute_epsilon(3.0, 1.0, 20, 1e-5))
    assert p.end_epoch(1)["epsilon"] == p.epsilon()
    s = p.summary()
    assert s["noise_std_this_node"] == pytest.approx(p.noise_multiplier / 2)  # sqrt(4) nodes share the noise
    assert s["noise_std_sum"] == pytest.approx(p.noise_multiplier) and s["sample_rate"] == 1.0
    z = torch.zeros(10)
    p.add_([z], scale=0.0)
    assert torch.equal(z, torch.zeros(10))
    with pytest.raises(ValueError, match="rounds=None"):
        NodePrivacy(target_epsilon=1.0)
    with pytest.raises(ValueError, match="exactly one of"):
        NodePrivacy()
