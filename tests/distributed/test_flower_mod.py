"""The SSGD client mod: unit vectors out, settings per call, error replies instead of crashes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flower_helpers import model_arrays, node_context, norm, reply_with, request  # noqa: E402
from flwr.common.constant import ErrorCode  # noqa: E402

from ssgd.distributed.flower import SSGDMod  # noqa: E402
from ssgd.distributed.flower.mod import NOT_SENT, REFUSED  # noqa: E402
from ssgd.distributed.flower.validation import arrays_from_record  # noqa: E402


def _refused(reply, caplog, needle, public=REFUSED):
    """An error reply with the fixed public text; the detail (``needle``) only in the node's own log."""
    assert reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert reply.error.reason == public
    assert not reply.has_content()
    assert needle in caplog.text
    caplog.clear()


def _out(reply):
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    return arrays_from_record(next(iter(reply.content.array_records.values())))


def test_fedsgd_reply_becomes_the_unit_gradient():
    grad = model_arrays(1)
    out = _out(SSGDMod()(request(model_arrays(0)), None, reply_with([grad])))
    assert list(out) == list(grad)
    assert norm(out) == pytest.approx(1.0, abs=1e-6)
    scale = norm(grad)
    for k in grad:
        np.testing.assert_allclose(out[k] * scale, grad[k], rtol=1e-5, atol=1e-6)


def test_delta_mode_sends_the_unit_model_delta_not_the_weights():
    w = model_arrays(0)
    trained = {k: v + 0.01 * (i + 1) for i, (k, v) in enumerate(w.items())}
    msg = request(w, {"ssgd-mode": "delta"})
    out = _out(SSGDMod(mode="delta")(msg, None, reply_with([trained])))
    delta = {k: trained[k] - w[k] for k in w}
    for k in w:
        np.testing.assert_allclose(out[k], delta[k] / norm(delta), rtol=1e-4, atol=1e-6)


def test_scope_comes_from_the_node_and_a_request_for_another_is_refused(caplog):
    grad = model_arrays(2)
    layer_node = node_context({"ssgd-scope": "layer"})
    layer = _out(SSGDMod()(request(model_arrays(0), {"ssgd-scope": "layer"}), layer_node, reply_with([grad])))
    for v in layer.values():
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-6)
    # no request key: the node's own scope is used
    layer2 = _out(SSGDMod()(request(model_arrays(0)), layer_node, reply_with([grad])))
    for k in layer:
        np.testing.assert_array_equal(layer[k], layer2[k])
    glob = _out(SSGDMod()(request(model_arrays(0)), None, reply_with([grad])))
    assert norm(glob) == pytest.approx(1.0, abs=1e-6)
    assert not all(np.linalg.norm(v) == pytest.approx(1.0, abs=1e-3) for v in glob.values())
    # the server cannot switch the scope: a global node refuses "layer" and vice versa
    for node, asked in ((None, "layer"), (layer_node, "global")):
        reply = SSGDMod()(request(model_arrays(0), {"ssgd-scope": asked}), node, reply_with([grad]))
        _refused(reply, caplog, "ssgd-scope")


@pytest.mark.parametrize("eps", [1e6, 1e300, 1e-3])
def test_the_server_cannot_raise_eps(eps, caplog):
    """Finding 3: with ssgd-eps=1e6 the node sent g/1e6 (the raw gradient, scaled), with 1e300 all zeros."""
    grad = {k: v * 1e-2 for k, v in model_arrays(2).items()}
    reply = SSGDMod()(request(model_arrays(0), {"ssgd-eps": eps}), None, reply_with([grad]))
    _refused(reply, caplog, "ssgd-eps")
    # a smaller eps than the node's is more protective: the node still uses its own and sends a unit vector
    out = _out(SSGDMod()(request(model_arrays(0), {"ssgd-eps": 1e-20}), None, reply_with([grad])))
    assert norm(out) == pytest.approx(1.0, abs=1e-6)


def test_the_node_config_sets_eps_and_a_node_refuses_a_bad_one(caplog):
    with pytest.raises(ValueError, match="ssgd-eps"):
        SSGDMod(eps=1.0)  # a node cannot be configured to send scaled raw gradients either
    reply = SSGDMod()(request(model_arrays(0)), node_context({"ssgd-eps": 5.0}), reply_with([model_arrays(1)]))
    _refused(reply, caplog, "ssgd-eps")


def test_the_server_cannot_lower_the_batch_size_below_the_nodes_minimum(caplog):
    node = node_context({"min-batch-size": 16})
    reply = SSGDMod()(request(model_arrays(0), {"batch-size": 1}), node, reply_with([model_arrays(1)]))
    _refused(reply, caplog, "min-batch-size")
    assert not SSGDMod()(request(model_arrays(0), {"batch-size": 16}), node, reply_with([model_arrays(1)])).has_error()


def test_by_default_only_the_unit_vector_leaves_metrics_are_opt_in():
    """Finding 2: the ClientApp's train-loss and num-examples passed through the mod."""
    metrics = {"train-loss": 0.7, "num-examples": 1, "secret": 3.0}
    reply = SSGDMod()(request(model_arrays(0), {"server-round": 4, "seed": 9}), None,
                      reply_with([model_arrays(1)], metrics=metrics))
    assert list(reply.content.keys()) == ["arrays"]
    assert len(reply.content.metric_records) == 0 and len(reply.content.config_records) == 0
    opted = SSGDMod()(request(model_arrays(0)), node_context({"allowed-metrics": "num-examples"}),
                      reply_with([model_arrays(1)], metrics=metrics))
    assert dict(opted.content["metrics"]) == {"num-examples": 1}
    opted2 = SSGDMod(allowed_metrics=("train-loss", "num-examples"))(request(model_arrays(0)), None,
                                                                     reply_with([model_arrays(1)], metrics=metrics))
    assert dict(opted2.content["metrics"]) == {"train-loss": 0.7, "num-examples": 1}
    with pytest.raises(ValueError, match="unknown metric"):
        SSGDMod(allowed_metrics=("secret",))


def test_the_node_checks_its_outgoing_vector(caplog):
    """A gradient so small that g/(|g|+eps) is not a unit vector is not sent (it would not hide |g|)."""
    tiny = {k: (v / norm(model_arrays(1)) * 1e-13).astype(np.float32) for k, v in model_arrays(1).items()}
    reply = SSGDMod()(request(model_arrays(0)), None, reply_with([tiny]))
    _refused(reply, caplog, "not a unit vector", public=NOT_SENT)


def test_zero_gradient_stays_zero():
    zero = {k: np.zeros_like(v) for k, v in model_arrays(0).items()}
    out = _out(SSGDMod()(request(model_arrays(0)), None, reply_with([zero])))
    assert norm(out) == 0.0


@pytest.mark.parametrize("case, needle, public", [
    ("two_records", "exactly one ArrayRecord", NOT_SENT),
    ("no_record", "exactly one ArrayRecord", NOT_SENT),
    ("shape", "shape", NOT_SENT),
    ("nan", "NaN", NOT_SENT),
    ("unknown_name", "not in the model", NOT_SENT),
    ("bad_mode", "ssgd-mode", REFUSED),
    ("bad_eps", "eps", REFUSED),
])
def test_malformed_replies_become_error_messages(case, needle, public, caplog):
    w = model_arrays(0)
    g = model_arrays(1)
    config = {}
    replies = [g]
    if case == "two_records":
        replies = [g, g]
    elif case == "no_record":
        replies = []
    elif case == "shape":
        replies = [{**g, "fc.bias": np.ones(5, np.float32)}]
    elif case == "nan":
        bad = {k: v.copy() for k, v in g.items()}
        bad["fc.weight"][0, 0] = np.nan
        replies = [bad]
    elif case == "unknown_name":
        replies = [{**g, "extra": np.ones(2, np.float32)}]
    elif case == "bad_mode":
        config = {"ssgd-mode": "fedprox"}
    elif case == "bad_eps":
        config = {"ssgd-eps": -1.0}
    reply = SSGDMod()(request(w, config), None, reply_with(replies))
    _refused(reply, caplog, needle, public=public)  # nothing of the update leaves with the error


def test_error_replies_and_exceptions_of_the_app_leave_as_a_fixed_text_and_evaluate_is_untouched(caplog):
    """Finding 2: the reason text of a failing ClientApp (Flower sends str(exception)) left the node."""
    from flwr.app import Error, Message

    def failing(msg, ctxt):
        return Message(Error(code=2, reason="boom: secret 0.123"), reply_to=msg)

    def raising(msg, ctxt):
        raise FloatingPointError("non-finite gradient in 'fc.weight' = 1.5e39")

    _refused(SSGDMod()(request(model_arrays(0)), None, failing), caplog, "secret 0.123", public=NOT_SENT)
    _refused(SSGDMod()(request(model_arrays(0)), None, raising), caplog, "fc.weight", public=NOT_SENT)
    metrics_only = SSGDMod()(request(model_arrays(0), message_type="evaluate"), None,
                             reply_with([model_arrays(3)]))
    out = _out(metrics_only)
    np.testing.assert_array_equal(out["fc.weight"], model_arrays(3)["fc.weight"])  # not normalised


def test_constructor_validates_defaults():
    with pytest.raises(ValueError, match="ssgd-mode"):
        SSGDMod(mode="sgd")
    with pytest.raises(ValueError, match="ssgd-scope"):
        SSGDMod(scope="tensor")
    with pytest.raises(ValueError, match="min-batch-size"):
        SSGDMod(min_batch_size=0)
