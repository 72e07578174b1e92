"""DP in single-process training: epsilon per epoch (= Opacus's accountant), reproducible, resumable."""

import json
import math

import pytest
import torch

from ssgd.data import ImageDataset
from ssgd.experiments.train import TrainConfig, train
from ssgd.privacy import compute_epsilon


@pytest.fixture(scope="module")
def small():
    """Synthetic 8x8 images: exactly 256 training examples, so q = 1/4 exactly (no loading cost)."""
    g = torch.Generator().manual_seed(0)
    return ImageDataset("synthetic", torch.rand(256, 1, 8, 8, generator=g), torch.randint(0, 10, (256,), generator=g),
                        torch.rand(50, 1, 8, 8, generator=g), torch.randint(0, 10, (50,), generator=g), 10)


def _cfg(**kw):
    base = dict(model="lenet", optimizer="sgd", lr=0.5, batch_size=64, epochs=2, seed=3, dp="example",
                noise_multiplier=1.1)
    base.update(kw)
    return TrainConfig(**base)


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_example_level_epsilon_per_epoch_equals_opacus(small, tmp_path):
    res = train(_cfg(), tmp_path, data=small, progress=False)
    q, spe = 1 / 4, 4  # ceil(256 / 64) = 4 Poisson batches per epoch
    eps = [h["epsilon"] for h in res.history]
    assert eps == [pytest.approx(compute_epsilon(1.1, q, spe * e, 1e-5)) for e in (1, 2)]
    assert eps[0] < eps[1]
    priv = json.loads((tmp_path / "privacy.json").read_text())
    assert priv["steps"] == 8 and priv["sample_rate"] == q and priv["epsilon"] == pytest.approx(eps[1])
    assert priv["level"] == "example" and priv["noise_multiplier"] == 1.1
    assert "epsilon" in (tmp_path / "metrics.csv").read_text().splitlines()[0]


def test_target_epsilon_is_met_and_seeded_runs_reproduce(small):
    kw = dict(noise_multiplier=None, target_epsilon=3.0, epochs=1)
    a = train(_cfg(**kw), data=small, progress=False, checkpoint=False)
    b = train(_cfg(**kw), data=small, progress=False, checkpoint=False)
    c = train(_cfg(**kw, seed=4), data=small, progress=False, checkpoint=False)
    assert 3.0 - 0.01 <= a.privacy["epsilon"] <= 3.0
    assert torch.equal(_weights(a.model), _weights(b.model))  # same seed: same batches, same noise
    assert not torch.equal(_weights(a.model), _weights(c.model))


def test_resume_continues_noise_sampler_and_accountant(small, tmp_path):
    full = train(_cfg(epochs=2), tmp_path / "full", data=small, progress=False)
    train(_cfg(epochs=2), tmp_path / "cut", data=small, progress=False, stop_after=1)
    resumed = train(_cfg(epochs=2), tmp_path / "cut", data=small, progress=False, resume=True)
    assert torch.equal(_weights(full.model), _weights(resumed.model))
    assert resumed.privacy["steps"] == 8 and resumed.privacy["epsilon"] == full.privacy["epsilon"]


@pytest.mark.parametrize("level", ["node", "node-local"])
def test_node_level_accounts_every_step_without_sampling(small, level):
    res = train(_cfg(dp=level, shards=4, optimizer="ssgd", lr=0.1, epochs=1, batch_size=128, noise_multiplier=3.0),
                data=small, progress=False, checkpoint=False)
    assert res.privacy["sample_rate"] == 1.0 and res.privacy["steps"] == 2
    assert res.privacy["epsilon"] == pytest.approx(compute_epsilon(3.0, 1.0, 2, 1e-5))
    assert res.privacy["level"] == "node" and math.isfinite(res.test_acc)


def test_invalid_dp_settings_are_clear():
    with pytest.raises(ValueError, match="noise_multiplier=-1"):
        _cfg(noise_multiplier=-1.0).validate()
    with pytest.raises(ValueError, match="delta=1"):
        _cfg(delta=1.0).validate()
    with pytest.raises(ValueError, match="exactly one of"):
        _cfg(noise_multiplier=None).validate()
    with pytest.raises(ValueError, match="shards=2 does not apply to dp='example'"):
        _cfg(shards=2).validate()
    with pytest.raises(ValueError, match="dp='off'"):
        TrainConfig(noise_multiplier=1.0).validate()


def test_node_local_dp_refuses_sigma_below_the_node_minimum(small):
    """Issue 19 #9: sigma 0 (or a target epsilon of inf) under node-local DP would send un-noised vectors."""
    from ssgd.privacy import DPConfig, DPTraining, MIN_NODE_LOCAL_NOISE

    assert MIN_NODE_LOCAL_NOISE > 0
    for kw in (dict(noise_multiplier=0.0), dict(noise_multiplier=MIN_NODE_LOCAL_NOISE / 2),
               dict(noise_multiplier=None, target_epsilon=math.inf)):
        with pytest.raises(ValueError, match="below this node's minimum"):
            _cfg(dp="node-local", shards=2, optimizer="ssgd", **kw).validate()
    with pytest.raises(ValueError, match="below this node's minimum"):  # a sigma solved for a huge epsilon
        DPTraining(DPConfig(level="node-local", target_epsilon=1e9), torch.nn.Linear(4, 2), 100, 10, 1, num_nodes=2)
    _cfg(dp="node-local", shards=2, optimizer="ssgd", noise_multiplier=MIN_NODE_LOCAL_NOISE).validate()
    _cfg(noise_multiplier=0.0).validate()  # example level: sigma 0 stays the non-private reference


def test_cli_refuses_node_local_sigma_zero_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from ssgd.cli import app

    res = CliRunner().invoke(app, ["train", "--dp", "node-local", "--shards", "2", "--noise-multiplier", "0",
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--noise-multiplier 0.0 is below this node's minimum" in res.output
    assert not (tmp_path / "r").exists()


def test_unreachable_target_and_batchnorm_fail_before_training(small):
    from ssgd.privacy import PrivacyBudgetError

    with pytest.raises(PrivacyBudgetError, match="unreachable"):
        train(_cfg(noise_multiplier=None, target_epsilon=1e-9), data=small, progress=False, checkpoint=False)
    with pytest.raises(ValueError, match="BatchNorm"):
        train(_cfg(model="resnet18", epochs=1), data=small, progress=False, checkpoint=False)
    with pytest.raises(ValueError, match="custom grad_fn"):
        train(_cfg(), data=small, progress=False, checkpoint=False, grad_fn=lambda m, x, y, c: None)


def test_cli_train_prints_final_epsilon_and_rejects_bad_values(tmp_path):
    from typer.testing import CliRunner

    from ssgd.cli import app
    from ssgd.data import load_dataset

    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--dp", "example", "--noise-multiplier", "-1", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "--noise-multiplier -1" in bad.output  # the command layer names its flags
    bad = runner.invoke(app, ["train", "--dp", "example", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "exactly one of" in bad.output
    ok = runner.invoke(app, ["train", "--dataset", "digits", "--dp", "node", "--shards", "2", "--noise-multiplier",
                             "2", "--epochs", "1", "--model", "mlp", "--batch-size", "500", "--optimizer", "ssgd",
                             "--lr", "0.1", "--no-progress", "--out", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    n = load_dataset("digits").x_train.shape[0]
    expect = compute_epsilon(2.0, 1.0, math.ceil(n / 500), 1e-5)
    assert f"epsilon = {expect:.4g}" in ok.output and "per node" in ok.output


@pytest.mark.parametrize("level, scope", [("example", "global"), ("example", "layer"), ("node", "layer"),
                                          ("node-local", "layer"), ("node-local", "global")])
def test_measured_noise_std_is_sigma_times_the_true_sensitivity(level, scope):
    """Layer scope releases a sum of L per-tensor unit vectors: sensitivity sqrt(L) (add/remove), 2 sqrt(L)
    (replace, node-local). The noise actually in .grad must be sigma times that (issue 9 #6)."""
    from ssgd.privacy import DPConfig, DPTraining

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 96), torch.nn.Tanh(), torch.nn.Linear(96, 48),
                                torch.nn.Tanh(), torch.nn.Linear(48, 10))
    n_tensors = 6
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    idx = torch.arange(32)
    m = 1 if level == "example" else 4
    sigma = 0.7

    def grads(noise_multiplier, level=level):
        dp = DPTraining(DPConfig(level, noise_multiplier=noise_multiplier), model, n_train=32, batch_size=32,
                        epochs=1, num_nodes=m, scope=scope, seed=5)
        model.zero_grad(set_to_none=True)
        dp.backward(model, x, y, idx)
        return torch.cat([p.grad.flatten() for p in model.parameters()]), dp

    # the noise-free reference: node-local refuses sigma 0 (issue 19 #9); the node level computes the same sum
    clean, _ = grads(0.0, "node" if level == "node-local" else level)
    noisy, dp = grads(sigma)
    noise = noisy - clean
    if level == "example":
        noise = noise * dp.expected_batch_size  # the example-level update is the noisy sum / expected batch
    true_delta = (2.0 if level == "node-local" else 1.0) * (math.sqrt(n_tensors) if scope == "layer" else 1.0)
    # node-local: every one of the m nodes adds its own sigma * Delta; aggregate/example: sigma * Delta once
    want = sigma * true_delta * (math.sqrt(m) if level == "node-local" else 1.0)
    assert float(noise.std()) == pytest.approx(want, rel=0.03)  # 11,000 entries: std known to ~1 %
