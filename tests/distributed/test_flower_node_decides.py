"""Issue 19, findings 1 and 2: a malicious server against a default node, through the packaged ClientApp.

Finding 1: the server routed around the node's policy through the run config (the ClientApp fell
back to it for ``ssgd-mode`` and ``batch-size``) and through the ConfigRecord's name (``SSGDMod``
read ``config`` or the only record). Finding 2: under node-local DP a non-finite step became an
error reply -- a noise-free, data-dependent bit naming the parameter.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("flwr")

from flower_helpers import identity  # noqa: E402

RUN = {"num-rounds": 1, "batch-size": 32, "test-size": 100, "mode": "fedsgd", "model": "mlp", "seed": 0}


def _setup(run):
    from ssgd.distributed.flower import FlowerRunConfig
    from ssgd.distributed.flower.task import make_model, param_arrays

    identity()
    return param_arrays(make_model(FlowerRunConfig.from_mapping(run)))


def _message(arrays, config, *, record="config", extra=None):
    """A train message as a malicious server builds it (any record name, any fields)."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from ssgd.distributed.flower.local import with_message_id
    from ssgd.distributed.flower.validation import record_from_arrays

    content = RecordDict({"arrays": record_from_arrays(arrays), record: ConfigRecord(dict(config))})
    for k, v in (extra or {}).items():
        content[k] = v
    return with_message_id(Message(content, dst_node_id=1001, message_type=MessageType.TRAIN), "m-1")


def _context(run, node_config=None):
    from flwr.app import Context, RecordDict

    nc = {"partition-id": 0, "num-partitions": 3, **(node_config or {})}
    return Context(run_id=1, node_id=1001, node_config=nc, state=RecordDict(), run_config=dict(run))


def _refused(reply):
    from ssgd.distributed.flower.mod import REFUSED

    assert reply.has_error(), "the node sent an update"
    assert reply.error.reason == REFUSED and not reply.has_content()


def test_a_run_config_mode_cannot_turn_a_fedsgd_node_into_delta():
    """(a) run config mode=delta, no ssgd-mode in the message: the node trained locally and sent w',
    whose scale a dead input pixel gave back."""
    from ssgd.distributed.flower.client_app import app

    run = {**RUN, "mode": "delta", "local-steps": 5}
    arrays = _setup(run)
    _refused(app(_message(arrays, {"batch-size": 32, "server-round": 1}), _context(run)))


def test_a_config_record_under_another_name_is_refused():
    """(b) the request under record name 'cfg' with ssgd-mode=delta: the mod sent (g - w)/|g - w|."""
    from ssgd.distributed.flower.client_app import app

    arrays = _setup(RUN)
    _refused(app(_message(arrays, {"ssgd-mode": "delta", "batch-size": 32}, record="cfg"), _context(RUN)))
    # a second record next to a proper "config" is refused too, whatever it holds
    from flwr.app import ConfigRecord, MetricRecord

    for extra in ({"cfg": ConfigRecord({"ssgd-mode": "delta"})}, {"metrics": MetricRecord({"x": 1.0})}):
        _refused(app(_message(arrays, {"batch-size": 32}, extra=extra), _context(RUN)))


def test_a_run_config_batch_size_cannot_go_below_the_nodes_minimum():
    """(c) min-batch-size=32 bypassed by run config batch-size=1 (a batch-1 gradient: its label in the bias)."""
    from ssgd.distributed.flower.client_app import app

    run = {**RUN, "batch-size": 1}
    arrays = _setup(run)
    node = {"min-batch-size": 32}
    _refused(app(_message(arrays, {"server-round": 1}), _context(run, node)))
    _refused(app(_message(arrays, {"batch-size": 1}), _context(run, node)))
    # the honest request at the node's minimum, with a run config that agrees, is served
    ok = app(_message(arrays, {"batch-size": 32}), _context({**RUN, "batch-size": 32}, node))
    assert not ok.has_error()


@pytest.mark.parametrize("config, run_extra", [
    ({"batch-size": 32, "batch_size": 1}, {}),          # a second spelling of a field
    ({"batch-size": 32, "ssgd_mode": "delta"}, {}),     # an unknown field
    ({"batch-size": 32, "min-batch-size": 1}, {}),      # a node setting in the request
    ({"batch-size": "32"}, {}),                         # a field of the wrong type
    ({"batch-size": 32}, {"min-batch-size": 1}),        # a node setting in the run config
    ({"batch-size": 32}, {"ssgd-eps": 1e6}),
    ({"batch-size": 32}, {"allowed-metrics": "train-loss"}),
    ({"batch-size": 32, "local-steps": 1}, {"local-steps": 50}),  # run config disagrees with the request
    ({"batch-size": 32, "local-steps": 10_000}, {}),    # more local steps than the node allows
])
def test_every_other_route_around_the_node_policy_is_refused(config, run_extra):
    from ssgd.distributed.flower.client_app import app

    arrays = _setup(RUN)
    _refused(app(_message(arrays, config), _context({**RUN, **run_extra})))


def test_the_client_app_computes_with_the_request_the_mod_resolved_and_not_without_it():
    """One parsed request: the ClientApp reads what SSGDMod resolved; without SSGDMod it trains nothing."""
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower.client_app import train

    arrays = _setup(RUN)
    bare = ClientApp()
    bare.train()(train)
    from ssgd.distributed.flower import PolicyError

    with pytest.raises(PolicyError, match="only under SSGDMod"):  # raised before any data is touched
        bare(_message(arrays, {"batch-size": 32}), _context(RUN))


def _bright_pixel_model(arrays, pixel):
    """The server's crafted mlp: the weights of input ``pixel`` are inf, so the step is non-finite
    (inf * x is inf for a bright pixel; inf * 0 is NaN for a dark one: non-finite either way here, which
    is the case the node must answer exactly like a finite one)."""
    crafted = {k: v.copy() for k, v in arrays.items()}
    first_w = next(k for k in arrays if k.endswith("weight"))
    crafted[first_w][:, pixel] = np.inf
    return crafted


def test_under_node_local_dp_a_non_finite_step_releases_noise_not_an_error(caplog):
    """Finding 2: the error reply was a noise-free oracle (20/20 pixel guesses under sigma = 1).
    Now the reply to a crafted model is a noisy vector of the same kind as any other, and the
    reason stays in the node's log."""
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import FaultMod, LocalNoiseMod, ssgd_mod
    from ssgd.distributed.flower.client_app import train

    app = ClientApp(mods=[FaultMod(), LocalNoiseMod(min_noise_multiplier=1.0), ssgd_mod])
    app.train()(train)
    arrays = _setup(RUN)
    request = {"batch-size": 32, "server-round": 1, "ssgd-dp-noise-multiplier": 1.0}
    norms = []
    for crafted in (arrays, _bright_pixel_model(arrays, 400)):  # an honest model, then the crafted one
        with caplog.at_level(logging.ERROR):
            reply = app(_message(crafted, request), _context(RUN))
        assert not reply.has_error(), "an error reply under DP is a release outside the mechanism"
        [record] = reply.content.array_records.values()
        out = {k: np.asarray(a.numpy()) for k, a in record.items()}
        assert list(out) == list(arrays) and all(a.dtype == np.float32 for a in out.values())
        norms.append(float(np.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in out.values()))))
    assert "zero vector" in caplog.text  # the reason, logged on the node
    d = sum(a.size for a in arrays.values())
    for n in norms:  # both are unit-or-zero vectors plus N(0, (2 sigma)^2 I): norm ~ 2 sqrt(d)
        assert n == pytest.approx(2.0 * np.sqrt(d), rel=0.01)


def test_the_strategy_counts_the_release_of_a_non_finite_step():
    """The noisy reply to a crafted model is a release: the accountant counts it like any other."""
    from ssgd.distributed.flower import PrivateSSGDStrategy
    from ssgd.distributed.flower.validation import record_from_arrays
    from ssgd.privacy import NodePrivacy

    from flwr.app import ConfigRecord

    from ssgd.distributed.flower import FaultMod, LocalNoiseMod, ssgd_mod
    from ssgd.distributed.flower.client_app import train
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=[FaultMod(), LocalNoiseMod(min_noise_multiplier=1.0), ssgd_mod])
    app.train()(train)
    arrays = _setup(RUN)
    strategy = PrivateSSGDStrategy(privacy=NodePrivacy(1.0, mode="local", seed=0), mode="fedsgd")

    class Grid:
        def get_node_ids(self):
            return [1001]

    crafted = record_from_arrays(_bright_pixel_model(arrays, 400))
    [msg] = strategy.configure_train(1, crafted, ConfigRecord({"batch-size": 32}), Grid())
    from ssgd.distributed.flower.local import with_message_id

    msg = with_message_id(msg, "m-1")
    reply = app(msg, _context(RUN))
    strategy.aggregate_train(1, [reply])
    assert strategy.releases == {1001: 1} and strategy.privacy.accountant.steps == 1


def test_seeded_node_noise_is_not_repeated_for_a_replayed_round(tmp_path):
    """Another route: seeded noise was a function of (seed, node, round). A server asking for round 1
    twice, at two models, got the same noise twice: the difference of the replies is noise-free. Now the
    stream is keyed by the release's number in the node's ledger (never repeated; by default the node's own
    ledger file under its Flower home); under the opt-out privacy-ledger=memory a seeded mod refuses."""
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import FaultMod, InProcessGrid, LocalNoiseMod, ssgd_mod
    from ssgd.distributed.flower.client_app import train

    app = ClientApp(mods=[FaultMod(), LocalNoiseMod(min_noise_multiplier=1.0, seed=0), ssgd_mod])
    app.train()(train)
    arrays = _setup(RUN)
    other = {k: v * 0.5 for k, v in arrays.items()}
    request = {"batch-size": 32, "server-round": 1, "ssgd-dp-noise-multiplier": 1.0}
    grid = InProcessGrid(app, 1, RUN, node_configs=[{"privacy-ledger": "memory"}])
    assert grid.get_node_ids() == [1001]  # the node _message addresses
    _refused(list(grid.send_and_receive([_message(arrays, request)]))[0])  # seeded, count in Context.state: refused
    grid = InProcessGrid(app, 1, RUN)  # the node's default ledger

    def ask(model, config):
        r = list(grid.send_and_receive([_message(model, config)]))[0]
        assert not r.has_error()
        return np.concatenate([np.asarray(a.numpy(), np.float64).ravel() for a in r.content["arrays"].values()])

    a, b = ask(arrays, request), ask(other, request)  # the same round again, another model: fresh noise
    d = a.size
    # two independent N(0, 2^2) draws differ by ~2*sqrt(2d); the unit vectors by at most 2
    assert np.linalg.norm(a - b) == pytest.approx(2.0 * np.sqrt(2 * d), rel=0.05)


@pytest.mark.parametrize("node_config, request_, served", [
    ({"ssgd-mode": "delta"}, {"client-lr": 1e-6}, False),  # below the node's min-client-lr (default 1e-4)
    ({"ssgd-mode": "delta"}, {"client-lr": 1e3}, False),  # above its max-client-lr (default 10)
    ({"ssgd-mode": "delta", "min-client-lr": 1e-8}, {"client-lr": 1e-6}, True),  # the node's own range
    ({}, {"batch-size": 10_000}, False),  # above the node's max-batch-size (default 8192: its memory)
    ({"max-batch-size": 20_000}, {"batch-size": 10_000}, True),
])
def test_client_lr_and_batch_size_stay_in_the_nodes_own_range(node_config, request_, served):
    from ssgd.distributed.flower.client_app import app

    run = {**RUN, "mode": node_config.get("ssgd-mode", "fedsgd")}
    run.pop("batch-size")
    arrays = _setup(run)
    reply = app(_message(arrays, {"server-round": 1, "local-steps": 1, "batch-size": 8, **request_}),
                _context(run, node_config))
    if served:
        assert not reply.has_error()
    else:
        _refused(reply)


def test_an_inverted_client_lr_or_batch_range_is_a_bad_node_config():
    from ssgd.distributed.flower.policy import NodePolicy

    with pytest.raises(ValueError, match="min-client-lr"):
        NodePolicy.from_node_config({"min-client-lr": 1.0, "max-client-lr": 0.1})
    with pytest.raises(ValueError, match="max-batch-size"):
        NodePolicy.from_node_config({"min-batch-size": 64, "max-batch-size": 32})
