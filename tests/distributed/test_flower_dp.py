"""Composition with Flower's own differential-privacy pieces (what works, measured)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

pytestmark = pytest.mark.slow

CFG = {"num-rounds": 1, "test-size": 300, "batch-size": 32, "mode": "delta", "server-lr": 0.5, "local-steps": 2,
       "client-lr": 0.1, "out-dir": "", "resume": False}


def _start(strategy, grid, arrays):
    from ssgd.distributed.flower.validation import arrays_from_record, record_from_arrays

    res = strategy.start(grid, record_from_arrays(arrays), num_rounds=1)
    return arrays_from_record(res.arrays)


def _setup(client_app=None, nodes=3):
    from ssgd.distributed.flower import FlowerRunConfig, InProcessGrid
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.task import make_model, param_arrays

    cfg = FlowerRunConfig.from_mapping(CFG)
    grid = InProcessGrid(client_app or app, nodes, CFG, node_configs=[{"ssgd-mode": "delta"}] * nodes)
    return cfg, grid, param_arrays(make_model(cfg))


def _ssgd(cfg, arrays):
    from ssgd.distributed.flower import SSGDStrategy

    return SSGDStrategy(mode=cfg.mode, server_lr=cfg.server_lr, update_keys=list(arrays),
                        client_config={"local-steps": cfg.local_steps, "client-lr": cfg.client_lr,
                                       "batch-size": cfg.batch_size})


def test_flower_central_dp_wrapper_adds_noise_calibrated_to_the_unit_update():
    """DifferentialPrivacyClientSideFixedClipping(SSGDStrategy, clipping_norm=server_lr) adds N(0, (sigma*lr/n)^2)
    to the new global model: each node moves it by exactly lr/n, so lr is the clipping norm, with no clipping mod."""
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping

    cfg, grid, w0 = _setup()
    plain = _start(_ssgd(cfg, w0), grid, w0)
    sigma, n = 2.0, 3
    dp = DifferentialPrivacyClientSideFixedClipping(_ssgd(cfg, w0), noise_multiplier=sigma,
                                                    clipping_norm=cfg.server_lr, num_sampled_clients=n)
    noisy = _start(dp, grid, w0)
    diff = np.concatenate([(noisy[k] - plain[k]).ravel() for k in w0]).astype(np.float64)
    assert diff.std() == pytest.approx(sigma * cfg.server_lr / n, rel=0.05)
    assert abs(diff.mean()) < 0.01 * sigma * cfg.server_lr / n * 10


def test_local_dp_mod_inside_the_ssgd_mod_sends_the_unit_vector_of_a_noised_delta():
    from flwr.clientapp import ClientApp
    from flwr.clientapp.mod import LocalDpMod

    from ssgd.distributed.flower import SSGDMod
    from ssgd.distributed.flower.client_app import train

    app = ClientApp(mods=[SSGDMod(), LocalDpMod(clipping_norm=1.0, sensitivity=1.0, epsilon=50.0, delta=1e-5)])
    app.train()(train)
    cfg, grid, w0 = _setup(app)
    strategy = _ssgd(cfg, w0)
    noisy = _start(strategy, grid, w0)
    book = strategy.rounds[1]
    assert len(book["accepted"]) == 3 and not book["rejected"]
    assert all(abs(v - 1.0) < 1e-4 for _, v in book["accepted"])  # still unit vectors after the noise
    _, grid2, _ = _setup()
    plain = _start(_ssgd(cfg, w0), grid2, w0)
    moved = np.sqrt(sum(float(np.sum((noisy[k] - w0[k]).astype(np.float64) ** 2)) for k in w0))
    assert moved <= cfg.server_lr + 1e-5  # the step is still bounded by the server lr
    assert any(not np.allclose(noisy[k], plain[k]) for k in w0)  # and the noise changed it
