"""Server side: update validation and the SSGD strategy's aggregation (no processes)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("flwr")

from flower_helpers import identity, model_arrays, norm, pushed, record, reply_message, request  # noqa: E402

from ssgd.distributed.flower import SSGDStrategy, UpdateSpec, validate_update  # noqa: E402
from ssgd.distributed.flower.faults import FAULTS, corrupt_arrays  # noqa: E402
from ssgd.distributed.flower.validation import arrays_from_record  # noqa: E402


@pytest.fixture(autouse=True)
def _task_identity():
    """Flower's Message constructors need a task identity; every test sets it itself (no order dependence)."""
    identity()


def _unit(seed: int) -> dict[str, np.ndarray]:
    a = model_arrays(seed)
    n = norm(a)
    return {k: (v / n).astype(np.float32) for k, v in a.items()}


SPEC = UpdateSpec.from_arrays(model_arrays(0))


def test_a_unit_update_is_accepted_with_its_norm():
    verdict, arrays = validate_update(_unit(1), SPEC)
    assert verdict.ok and verdict.norm == pytest.approx(1.0, abs=1e-6)
    assert set(arrays) == set(SPEC.names)


@pytest.mark.parametrize("fault, needle", [("nan", "non-finite"), ("shape", "shape"), ("norm1000", "norm 1000"),
                                           ("dtype", "dtype"), ("names", "names")])
def test_corrupted_updates_are_rejected_with_a_reason(fault, needle):
    verdict, arrays = validate_update(corrupt_arrays(_unit(1), fault), SPEC)
    assert not verdict.ok and arrays is None
    assert needle in verdict.reason


def test_every_fault_is_covered_by_validation():
    for fault in FAULTS:
        verdict, _ = validate_update(corrupt_arrays(_unit(1), fault), SPEC)
        assert verdict.ok == (fault == "none"), fault


def test_strict_needs_norm_one_non_strict_only_bounds_it():
    half = {k: v * 0.5 for k, v in _unit(1).items()}
    assert not validate_update(half, SPEC)[0].ok
    loose = UpdateSpec(SPEC.names, SPEC.shapes, strict=False)
    assert validate_update(half, loose)[0].ok
    assert not validate_update({k: v * 1.5 for k, v in _unit(1).items()}, loose)[0].ok
    zero = {k: np.zeros_like(v) for k, v in _unit(1).items()}
    assert validate_update(zero, SPEC)[0].ok  # SSGD keeps a zero gradient zero


def test_layer_scope_checks_each_tensor():
    layer_unit = {k: (v / np.linalg.norm(v)).astype(np.float32) for k, v in model_arrays(1).items()}
    spec = UpdateSpec(SPEC.names, SPEC.shapes, scope="layer")
    assert validate_update(layer_unit, spec)[0].ok
    assert not validate_update(_unit(1), spec)[0].ok  # a global unit vector is not layer-wise unit


def test_a_reply_with_two_array_records_is_rejected():
    from flwr.app import Message, MetricRecord, RecordDict

    msg = request(model_arrays(0))
    two = Message(RecordDict({"a": record(_unit(1)), "b": record(_unit(2)), "m": MetricRecord({"x": 1})}), reply_to=msg)
    verdict, _ = validate_update(two.content, SPEC)
    assert not verdict.ok and "exactly one ArrayRecord" in verdict.reason


class _Grid:
    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return list(self.nodes)


def _replies(strategy, w, updates):
    msgs = list(strategy.configure_train(1, record(w), __import__("flwr.app", fromlist=["ConfigRecord"]).ConfigRecord(),
                                         _Grid(range(11, 11 + len(updates)))))
    from ssgd.distributed.flower.local import with_message_id

    out = []
    for m, u in zip(msgs, updates):
        m = pushed(m, f"id-{m.metadata.dst_node_id}")
        out.append(reply_message(m, u) if not isinstance(u, str) else reply_message(m, None, error=u))
    return msgs, out


@pytest.mark.parametrize("mode, sign", [("fedsgd", -1.0), ("delta", 1.0)])
def test_strategy_applies_the_mean_unit_update_with_server_lr(mode, sign):
    w = model_arrays(0)
    strategy = SSGDStrategy(mode=mode, server_lr=0.3)
    msgs, replies = _replies(strategy, w, [_unit(1), _unit(2), _unit(3)])
    cfg = msgs[0].content["config"]
    assert cfg["ssgd-mode"] == mode and cfg["ssgd-scope"] == "global" and cfg["server-round"] == 1
    new, metrics = strategy.aggregate_train(1, replies)
    got = arrays_from_record(new)
    for k in w:
        want = w[k] + sign * 0.3 * np.mean([_unit(s)[k] for s in (1, 2, 3)], axis=0)
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6)
    assert metrics["accepted"] == 3 and metrics["rejected"] == 0
    # the round moved the model by at most server_lr
    assert norm({k: got[k] - w[k] for k in w}) <= 0.3 + 1e-6


def test_bad_updates_are_rejected_logged_with_node_id_and_the_round_goes_on(caplog):
    w = model_arrays(0)
    strategy = SSGDStrategy(server_lr=0.3)
    good = _unit(1)
    _, replies = _replies(strategy, w, [good, corrupt_arrays(good, "nan"), corrupt_arrays(good, "norm1000"),
                                        corrupt_arrays(good, "shape"), "ClientApp crashed"])
    with caplog.at_level(logging.WARNING, logger="ssgd.distributed.flower.strategy"):
        new, metrics = strategy.aggregate_train(1, replies)
    assert metrics["accepted"] == 1 and metrics["rejected"] == 3 and metrics["failed"] == 1
    got = arrays_from_record(new)
    for k in w:  # exactly the honest node's step
        np.testing.assert_allclose(got[k], w[k] - 0.3 * good[k], rtol=1e-5, atol=1e-6)
    book = strategy.rounds[1]
    assert [n for n, _ in book["rejected"]] == [12, 13, 14]
    assert book["failed"][0][0] == 15
    text = caplog.text
    for node in (12, 13, 14, 15):
        assert f"node {node}" in text


def test_no_valid_update_leaves_the_model_unchanged():
    w = model_arrays(0)
    strategy = SSGDStrategy()
    _, replies = _replies(strategy, w, [corrupt_arrays(_unit(1), "nan")])
    new, metrics = strategy.aggregate_train(1, replies)
    assert new is None and metrics["accepted"] == 0


def test_sampling_gives_up_with_a_clear_error():
    from ssgd.distributed.flower import NotEnoughNodesError

    strategy = SSGDStrategy(min_train_nodes=3, node_wait_timeout=0.6)
    from flwr.app import ConfigRecord

    with pytest.raises(NotEnoughNodesError, match="min_train_nodes=3"):
        strategy.configure_train(1, record(model_arrays(0)), ConfigRecord(), _Grid([1, 2]))


@pytest.mark.parametrize("kw, needle", [({"mode": "avg"}, "mode"), ({"server_lr": 0.0}, "server_lr"),
                                        ({"scope": "x"}, "scope"), ({"min_train_nodes": 0}, "min_train_nodes"),
                                        ({"straggler_timeout": -1}, "straggler_timeout")])
def test_strategy_arguments_are_validated(kw, needle):
    with pytest.raises(ValueError, match=needle):
        SSGDStrategy(**kw)


def test_the_strategy_step_is_the_poisoning_experiments_ssgd_aggregator():
    """`ssgd reproduce poisoning` simulates the SSGD server with `unit_mean`; it must be this strategy's step."""
    import torch

    from ssgd.experiments.poisoning import unit_mean

    w = model_arrays(0)
    raw = [{k: v * (10.0 ** s) for k, v in model_arrays(s + 1).items()} for s in range(4)]
    units = [{k: (v / norm(r)).astype(np.float32) for k, v in r.items()} for r in raw]
    strategy = SSGDStrategy(server_lr=0.7)
    _, replies = _replies(strategy, w, units)
    got = arrays_from_record(strategy.aggregate_train(1, replies)[0])
    flat = torch.stack([torch.cat([torch.from_numpy(r[k]).double().ravel() for k in w]) for r in raw])
    want = torch.cat([torch.from_numpy(w[k]).double().ravel() for k in w]) - 0.7 * unit_mean(flat)
    np.testing.assert_allclose(np.concatenate([got[k].ravel() for k in w]), want.numpy(), rtol=1e-5, atol=1e-6)


def _reply(to, arrays, metrics=None, extra=None):
    """A reply to ``to`` with ``arrays`` and arbitrary ``metrics`` / extra records (a hostile node)."""
    from flwr.app import Message, MetricRecord, RecordDict

    content = {"arrays": record(arrays)}
    if metrics is not None:
        content["metrics"] = MetricRecord(metrics)
    content.update(extra or {})
    return Message(RecordDict(content), reply_to=to)


def _sent(strategy, w, n):
    from flwr.app import ConfigRecord

    from ssgd.distributed.flower.local import with_message_id

    msgs = strategy.configure_train(1, record(w), ConfigRecord(), _Grid(range(11, 11 + n)))
    return [pushed(m, f"id-{m.metadata.dst_node_id}") for m in msgs]


@pytest.mark.parametrize("case, needle", [
    ("num_examples_list", "num-examples"),   # finding 5: TypeError in np.average
    ("zero_weight", "num-examples"),          # finding 5: ZeroDivisionError
    ("nan_loss", "train-loss"),
    ("unknown_metric", "unknown metric"),
    ("config_echo", "ConfigRecord"),
    ("two_metric_records", "MetricRecords"),
    ("float64", "dtype"),
])
def test_one_bad_reply_field_is_rejected_with_the_node_id_and_the_round_goes_on(case, needle, caplog):
    from flwr.app import ConfigRecord, MetricRecord

    w = model_arrays(0)
    strategy = SSGDStrategy(server_lr=0.3)
    good, bad_to = _sent(strategy, w, 2)
    u = _unit(1)
    metrics, extra, arrays = {"train-loss": 0.5, "num-examples": 3}, None, _unit(2)
    if case == "num_examples_list":
        metrics = {"train-loss": 0.5, "num-examples": [1, 2]}
    elif case == "zero_weight":
        metrics = {"train-loss": 0.5, "num-examples": 0}
    elif case == "nan_loss":
        metrics = {"train-loss": float("nan")}
    elif case == "unknown_metric":
        metrics = {"grad-norm": 3.2}
    elif case == "config_echo":
        extra = {"config": ConfigRecord({"ssgd-eps": 1e-12})}
    elif case == "two_metric_records":
        extra = {"more": MetricRecord({"train-loss": 0.1})}
    elif case == "float64":
        arrays = {k: v.astype(np.float64) for k, v in _unit(2).items()}
    replies = [_reply(good, u, {"train-loss": 0.25, "num-examples": 1}), _reply(bad_to, arrays, metrics, extra)]
    with caplog.at_level(logging.WARNING, logger="ssgd.distributed.flower.strategy"):
        new, out_metrics = strategy.aggregate_train(1, replies)
    assert out_metrics["accepted"] == 1 and out_metrics["rejected"] == 1
    [(node, reason)] = strategy.rounds[1]["rejected"]
    assert node == 12 and needle in reason
    assert "node 12" in caplog.text
    got = arrays_from_record(new)
    for k in w:  # exactly the good node's step
        np.testing.assert_allclose(got[k], w[k] - 0.3 * u[k], rtol=1e-5, atol=1e-6)
    assert out_metrics["train-loss"] == pytest.approx(0.25)


def test_twenty_replies_from_one_node_count_once_and_unsampled_nodes_are_rejected(caplog):
    """Finding 7: 20 replies from one node id moved the model 0.87 at lr 1."""
    w = model_arrays(0)
    strategy = SSGDStrategy(server_lr=1.0)
    to_a, to_b = _sent(strategy, w, 2)
    attacker = _unit(5)
    honest = _unit(6)
    replies = [_reply(to_a, attacker) for _ in range(20)] + [_reply(to_b, honest)]
    with caplog.at_level(logging.WARNING, logger="ssgd.distributed.flower.strategy"):
        new, metrics = strategy.aggregate_train(1, replies)
    assert metrics["accepted"] == 2 and metrics["rejected"] == 19
    assert all(n == 11 and "second reply" in r for n, r in strategy.rounds[1]["rejected"])
    got = arrays_from_record(new)
    for k in w:
        np.testing.assert_allclose(got[k], w[k] - 0.5 * (attacker[k] + honest[k]), rtol=1e-5, atol=1e-6)
    # a node id that was not sampled this round (spoofed) is rejected
    from flwr.app import ConfigRecord

    from ssgd.distributed.flower.local import with_message_id

    strategy2 = SSGDStrategy(server_lr=1.0)
    [m] = strategy2.configure_train(1, record(w), ConfigRecord(), _Grid([11]))
    spoof_to = with_message_id(request(w, node=99), "x")  # a message this strategy never sent to node 99
    new2, metrics2 = strategy2.aggregate_train(1, [_reply(pushed(m, "a"), honest), _reply(spoof_to, attacker)])
    assert metrics2["accepted"] == 1 and metrics2["rejected"] == 1
    # rejected on its message id first (every reply, error replies included, is checked for it first)
    assert "not sent in round 1" in strategy2.rounds[1]["rejected"][0][1]


def test_one_node_against_the_honest_sum_moves_the_round_by_more_than_lr_over_n():
    """Finding 11, measured: with n-1 honest nodes pointing the same way and one against them, the round
    moves by lr*(n-2)/n instead of lr (n-1)/(n-1) = lr: the attacker's effect is 2 lr/n, not lr/n."""
    w = {"fc.weight": np.zeros((4, 3), np.float32), "fc.bias": np.zeros(4, np.float32)}
    lr, n = 1.0, 4
    u = _unit(1)
    honest = SSGDStrategy(server_lr=lr)
    _, r1 = _replies(honest, w, [u] * (n - 1))
    without = arrays_from_record(honest.aggregate_train(1, r1)[0])
    attacked = SSGDStrategy(server_lr=lr)
    _, r2 = _replies(attacked, w, [u] * (n - 1) + [{k: -v for k, v in u.items()}])
    with_attacker = arrays_from_record(attacked.aggregate_train(1, r2)[0])
    effect = norm({k: with_attacker[k] - without[k] for k in w})
    assert effect == pytest.approx(2 * lr / n, rel=1e-5)  # 0.5 at lr 1, n 4: more than lr/n = 0.25
    assert effect > lr / n


def test_in_layer_scope_one_node_moves_the_model_lr_sqrt_l():
    w = model_arrays(0)
    L = len(w)
    strategy = SSGDStrategy(server_lr=1.0, scope="layer")
    layer_unit = {k: (v / np.linalg.norm(v)).astype(np.float32) for k, v in model_arrays(3).items()}
    _, replies = _replies(strategy, w, [layer_unit])
    got = arrays_from_record(strategy.aggregate_train(1, replies)[0])
    assert norm({k: got[k] - w[k] for k in w}) == pytest.approx(np.sqrt(L), rel=1e-5)


def test_replies_belong_to_this_round_replays_and_unsent_ids_are_rejected():
    """Finding 5: a round-1 reply replayed in round 2 was accepted, and so was a reply to an id never sent."""
    from flwr.app import ConfigRecord

    from ssgd.distributed.flower.local import with_message_id

    w = model_arrays(0)
    strategy = SSGDStrategy(server_lr=0.3)
    [m1] = strategy.configure_train(1, record(w), ConfigRecord(), _Grid([11]))
    old = _reply(pushed(m1, "r1-n11"), _unit(1))
    assert strategy.aggregate_train(1, [old])[1]["accepted"] == 1
    [m2] = strategy.configure_train(2, record(w), ConfigRecord(), _Grid([11]))
    pushed(m2, "r2-n11")
    forged = _reply(with_message_id(m2, "never-sent"), _unit(2))  # the right node, an id this strategy never sent
    new, metrics = strategy.aggregate_train(2, [old, forged])
    assert new is None and metrics["accepted"] == 0 and metrics["rejected"] == 2
    assert all("not sent in round 2" in why for _, why in strategy.rounds[2]["rejected"])
    # the genuine round-2 reply is accepted
    assert strategy.aggregate_train(2, [_reply(m2, _unit(3))])[1]["accepted"] == 1


def test_error_replies_are_checked_for_this_rounds_message_id_first():
    """Red team 19, still open: check_reply returned an error reply before looking at its reply_to_message_id,
    so a replayed round-1 error reply, or one to an id never sent, was counted as a round-2 failure (with its
    text stored in the round's record)."""
    from flwr.app import ConfigRecord, Error, Message

    from ssgd.distributed.flower.local import with_message_id

    w = model_arrays(0)
    strategy = SSGDStrategy(server_lr=0.3)
    [m1] = strategy.configure_train(1, record(w), ConfigRecord(), _Grid([11]))
    old = Message(Error(code=2, reason="round-1 failure"), reply_to=pushed(m1, "r1-n11"))
    strategy.aggregate_train(1, [old])
    assert strategy.rounds[1]["failed"] == [(11, "error reply (code 2): round-1 failure")]
    [m2] = strategy.configure_train(2, record(w), ConfigRecord(), _Grid([11]))
    pushed(m2, "r2-n11")
    foreign = Message(Error(code=2, reason="<b>forged</b>"), reply_to=with_message_id(m2, "never-sent"))
    _, metrics = strategy.aggregate_train(2, [old, foreign])
    assert strategy.rounds[2]["failed"] == []
    assert [why for _, why in strategy.rounds[2]["rejected"]] == ["a reply to a message not sent in round 2"] * 2
    assert metrics["rejected"] == 2
    # the genuine round-2 error reply is this round's failure
    strategy.aggregate_train(2, [Message(Error(code=2, reason="round-2 failure"), reply_to=m2)])
    assert strategy.rounds[2]["failed"] == [(11, "error reply (code 2): round-2 failure")]
    # the SuperLink's own error reply for an unreachable node (src = SUPERLINK_NODE_ID, reply_to = our message)
    # is that node's failure, not a rejection
    from flwr.app import Metadata
    from flwr.common.constant import SUPERLINK_NODE_ID

    [m3] = strategy.configure_train(3, record(w), ConfigRecord(), _Grid([11]))
    pushed(m3, "r3-n11")
    meta = Metadata(run_id=1, message_id="", src_node_id=SUPERLINK_NODE_ID, dst_node_id=SUPERLINK_NODE_ID,
                    reply_to_message_id="r3-n11", group_id="3", created_at=0.0, ttl=10.0, message_type="train")
    lost = Message(metadata=meta, error=Error(code=1, reason="node unavailable"))
    stale = Message(metadata=Metadata(**{**{k: getattr(meta, k) for k in ("run_id", "message_id", "src_node_id",
                                                                         "dst_node_id", "group_id", "created_at",
                                                                         "ttl", "message_type")},
                                         "reply_to_message_id": "r2-n11"}), error=Error(code=1, reason="stale"))
    strategy.aggregate_train(3, [lost, stale])
    assert strategy.rounds[3]["failed"] == [(11, "error reply (code 1): node unavailable")]
    assert [why for _, why in strategy.rounds[3]["rejected"]] == ["a reply to a message not sent in round 3"]


def test_one_node_cannot_set_the_rounds_train_loss():
    """Finding 8: with num-examples 1e18 and train-loss 1e6 one opted-in node made the round's loss 999999.99."""
    w = model_arrays(0)
    strategy = SSGDStrategy(server_lr=0.3, client_config={"batch-size": 32})
    msgs = _sent(strategy, w, 4)
    honest = [_reply(m, _unit(i + 1), {"train-loss": 0.5 + 0.1 * i, "num-examples": 32}) for i, m in enumerate(msgs[:3])]
    boosted = _reply(msgs[3], _unit(9), {"train-loss": 1e6, "num-examples": 10**18})
    _, metrics = strategy.aggregate_train(1, honest + [boosted])
    assert metrics["accepted"] == 3 and "more than the 32 asked for" in strategy.rounds[1]["rejected"][0][1]
    assert metrics["train-loss"] == pytest.approx(0.6)
    # within the count it asked for, the node still cannot move the round's loss past the honest ones
    strategy = SSGDStrategy(server_lr=0.3, client_config={"batch-size": 32})
    msgs = _sent(strategy, w, 4)
    honest = [_reply(m, _unit(i + 1), {"train-loss": 0.5 + 0.1 * i, "num-examples": 32}) for i, m in enumerate(msgs[:3])]
    _, metrics = strategy.aggregate_train(1, honest + [_reply(msgs[3], _unit(9), {"train-loss": 1e6, "num-examples": 32})])
    assert metrics["accepted"] == 4 and 0.5 <= metrics["train-loss"] <= 0.7


def test_a_nodes_error_text_is_stored_bounded_and_on_one_line():
    """Finding 6: a node's error reason went verbatim (4 MB after 2 rounds) into metrics.json and report.md."""
    w = model_arrays(0)
    strategy = SSGDStrategy(server_lr=0.3)
    [m] = _sent(strategy, w, 1)
    from flwr.app import Error, Message

    huge = "<img src=x onerror=alert(1)>\n# pwned " + "A" * 2_000_000
    strategy.aggregate_train(1, [Message(Error(code=2, reason=huge), reply_to=m)])
    [(node, why)] = strategy.rounds[1]["failed"]
    assert node == 11 and len(why) <= 200 and "\n" not in why
