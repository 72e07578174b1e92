"""Node-level DP on Flower: the server adds N(0, (sigma*Delta)^2) to the sum of unit updates and reports epsilon."""

import numpy as np
import pytest

pytest.importorskip("flwr")

pytestmark = pytest.mark.slow

CFG = {"num-rounds": 1, "test-size": 100, "batch-size": 32, "mode": "delta", "server-lr": 0.5, "local-steps": 1,
       "client-lr": 0.1, "out-dir": "", "resume": False}


def _run(strategy, nodes=3, rounds=1):
    from ssgd.distributed.flower import FlowerRunConfig, InProcessGrid
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.task import make_model, param_arrays
    from ssgd.distributed.flower.validation import arrays_from_record, record_from_arrays

    cfg = FlowerRunConfig.from_mapping(CFG)
    w0 = param_arrays(make_model(cfg))
    res = strategy(cfg, w0).start(InProcessGrid(app, nodes, CFG), record_from_arrays(w0), num_rounds=rounds)
    return w0, arrays_from_record(res.arrays), res


def _kw(cfg, w0):
    return dict(mode=cfg.mode, server_lr=cfg.server_lr, update_keys=list(w0),
                client_config={"local-steps": cfg.local_steps, "client-lr": cfg.client_lr, "batch-size": cfg.batch_size})


def test_private_strategy_noise_and_epsilon():
    from ssgd.distributed.flower import SSGDStrategy
    from ssgd.privacy import NodePrivacy, compute_epsilon
    from ssgd.privacy.flower import PrivateSSGDStrategy

    sigma, n = 2.0, 2
    made = {}

    def private(cfg, w0):
        made["s"] = PrivateSSGDStrategy(privacy=NodePrivacy(sigma, split="central", seed=0), **_kw(cfg, w0))
        return made["s"]

    w0, plain, _ = _run(lambda cfg, w0: SSGDStrategy(**_kw(cfg, w0)), nodes=n)
    _, noisy, _ = _run(private, nodes=n)
    diff = np.concatenate([(noisy[k] - plain[k]).ravel() for k in w0]).astype(np.float64)
    strategy = made["s"]
    # delta mode: w += lr/n * (sum of unit updates + N(0, (sigma * (1 + tol))^2))
    assert diff.std() == pytest.approx(sigma * strategy.sensitivity * CFG["server-lr"] / n, rel=0.05)
    assert abs(diff.mean()) < 5 * diff.std() / np.sqrt(diff.size)
    assert strategy.privacy.accountant.steps == 1
    assert strategy.privacy.epsilon() == pytest.approx(compute_epsilon(sigma, 1.0, 1, 1e-5))


def test_private_strategy_refuses_local_noise_objects():
    from ssgd.privacy import NodePrivacy
    from ssgd.privacy.flower import PrivateSSGDStrategy

    with pytest.raises(ValueError, match="split='central'"):
        PrivateSSGDStrategy(privacy=NodePrivacy(1.0, split="distributed", num_nodes=3))
    with pytest.raises(TypeError, match="NodePrivacy"):
        PrivateSSGDStrategy(privacy=1.0)
