"""The noise is what it claims: N(0, (sigma*Delta)^2) per entry, fresh on every call, reproducible by seed."""

import math

import pytest
import torch

from ssgd import unit
from ssgd.privacy import GaussianNoise, NodeNoise, sensitivity

D, DRAWS = 200, 4000


def _draws(noise, u):
    out = torch.empty(DRAWS, D, dtype=torch.float64)
    for k in range(DRAWS):
        t = u.clone()
        noise.add_(t)
        out[k] = t
    return out


@pytest.mark.parametrize("sigma,delta", [(0.5, 1.0), (1.3, 2.0)])
def test_noise_mean_and_variance_on_a_fixed_unit_vector(sigma, delta):
    u = unit(torch.randn(D, dtype=torch.float64))[0]
    assert float(u.norm()) == pytest.approx(1.0)
    noise = GaussianNoise(sigma, delta, seed=1)
    x = _draws(noise, u)
    z = x - u
    std = sigma * delta
    # mean of all N = DRAWS*D entries: standard error std/sqrt(N); 5 sigma tolerance
    n = z.numel()
    assert abs(float(z.mean())) < 5 * std / math.sqrt(n)
    # per-coordinate means match u (each within 5 standard errors, jointly via the max)
    se = std / math.sqrt(DRAWS)
    assert float((x.mean(0) - u).abs().max()) < 5.5 * se
    # variance: var of sample variance ~ 2 std^4 / N
    assert abs(float(z.var()) - std**2) < 5 * std**2 * math.sqrt(2 / n)
    # independent coordinates: off-diagonal correlations small
    c = torch.corrcoef(z[:, :20].T)
    assert float((c - torch.eye(20, dtype=c.dtype)).abs().max()) < 5 / math.sqrt(DRAWS)
    assert noise.std == pytest.approx(std) and noise.calls == DRAWS


def test_noise_is_fresh_every_call_and_seeded_runs_reproduce():
    a, b, c = GaussianNoise(1.0, seed=7), GaussianNoise(1.0, seed=7), GaussianNoise(1.0, seed=8)
    seq_a = [a.sample((50,)) for _ in range(3)]
    seq_b = [b.sample((50,)) for _ in range(3)]
    seq_c = [c.sample((50,)) for _ in range(3)]
    for x, y in zip(seq_a, seq_b):
        assert torch.equal(x, y)  # same seed, same stream
    assert not torch.equal(seq_a[0], seq_a[1]) and not torch.equal(seq_a[1], seq_a[2])  # fresh each call
    assert not torch.equal(seq_a[0], seq_c[0])  # another seed, another stream
    # the model's RNG is not consumed
    torch.manual_seed(3)
    r1 = torch.rand(3)
    torch.manual_seed(3)
    GaussianNoise(1.0, seed=None).sample((10,))
    assert torch.equal(torch.rand(3), r1)


def test_noise_state_dict_resumes_the_stream():
    a = GaussianNoise(0.8, seed=3)
    a.sample((5,))
    st = a.state_dict()
    nxt = a.sample((5,))
    b = GaussianNoise(0.8, seed=99)
    b.load_state_dict(st)
    assert torch.equal(b.sample((5,)), nxt)


def test_zero_sigma_adds_nothing_and_dtypes_are_kept():
    t = torch.ones(4, dtype=torch.bfloat16)
    GaussianNoise(0.0, seed=0).add_(t)
    assert torch.equal(t, torch.ones(4, dtype=torch.bfloat16))
    GaussianNoise(1.0, seed=0).add_(t)
    assert t.dtype == torch.bfloat16 and not torch.equal(t, torch.ones(4, dtype=torch.bfloat16))


def test_invalid_noise_settings():
    with pytest.raises(ValueError, match="noise_multiplier=-1"):
        GaussianNoise(-1.0)
    with pytest.raises(ValueError, match="sensitivity=0"):
        GaussianNoise(1.0, 0)
    with pytest.raises(ValueError, match="Invalid privacy level"):
        sensitivity("user")


def test_sensitivity_table():
    assert sensitivity("example") == 1.0
    assert sensitivity("node") == 1.0
    assert sensitivity("node-local") == 2.0
    assert sensitivity("example", "layer", 4) == 2.0
    assert sensitivity("node-local", "layer", 9) == 6.0


def test_layer_scope_sensitivity_is_the_worst_case_difference():
    # layer scope: L tensors each of norm 1 -> the whole vector has norm sqrt(L)
    ts = unit([torch.randn(3), torch.randn(5), torch.randn(2), torch.randn(7)], scope="layer")
    assert float(torch.cat(ts).norm()) == pytest.approx(sensitivity("example", "layer", 4))


def test_node_noise_split_sums_to_the_calibrated_std():
    n, sigma = 4, 0.9
    nodes = [NodeNoise(sigma, mode="aggregate", num_nodes=n, rank=j, seed=5) for j in range(n)]
    assert all(nd.std == pytest.approx(sigma / 2) for nd in nodes)
    total = torch.zeros(20000, dtype=torch.float64)
    parts = []
    for nd in nodes:
        z = torch.zeros(20000, dtype=torch.float64)
        nd.add_(z)
        parts.append(z)
        total += z
    assert float(total.std()) == pytest.approx(sigma, rel=0.03)
    # every rank draws its own noise (identical shares would not cancel: they would add up coherently)
    c = torch.corrcoef(torch.stack(parts))
    assert float((c - torch.eye(n, dtype=c.dtype)).abs().max()) < 0.05


def test_node_noise_central_and_local_modes():
    central = [NodeNoise(1.0, mode="aggregate", split="central", num_nodes=3, rank=j, seed=0) for j in range(3)]
    assert [nd.std for nd in central] == [1.0, 0.0, 0.0]
    local = NodeNoise(0.5, mode="local", num_nodes=3, rank=1, seed=0)
    assert local.std == pytest.approx(1.0)  # sensitivity 2 in the local model
    assert local.total_std == pytest.approx(math.sqrt(3))
    z = torch.zeros(20000, dtype=torch.float64)
    local(z)
    assert float(z.std()) == pytest.approx(1.0, rel=0.03)
    with pytest.raises(ValueError, match="mode='lokal'"):
        NodeNoise(1.0, mode="lokal")
    with pytest.raises(ValueError, match="rank=3"):
        NodeNoise(1.0, num_nodes=3, rank=3)


def test_sensitivity_counts_the_tensors_of_a_model_or_list():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))  # L = 4 tensors
    assert sensitivity("node", "layer", model) == pytest.approx(2.0)
    assert sensitivity("node-local", "layer", list(model.parameters())) == pytest.approx(4.0)
    model[0].bias.requires_grad_(False)  # frozen tensors are not released
    assert sensitivity("example", "layer", model) == pytest.approx(3 ** 0.5)
    assert sensitivity("example", "global", model) == 1.0
    with pytest.raises(ValueError, match="n_tensors=0"):
        sensitivity("node", "layer", 0)
    with pytest.raises(ValueError, match="n_tensors=2.5"):
        sensitivity("node", "layer", 2.5)
