"""The SSGD client mod: unit vectors out, settings per call, error replies instead of crashes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flower_helpers import model_arrays, norm, reply_with, request  # noqa: E402

from ssgd.distributed.flower import SSGDMod  # noqa: E402
from ssgd.distributed.flower.validation import arrays_from_record  # noqa: E402


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
    out = _out(SSGDMod()(msg, None, reply_with([trained])))
    delta = {k: trained[k] - w[k] for k in w}
    for k in w:
        np.testing.assert_allclose(out[k], delta[k] / norm(delta), rtol=1e-4, atol=1e-6)


def test_settings_are_read_per_call_from_the_config():
    mod = SSGDMod()  # defaults: fedsgd, global
    grad = model_arrays(2)
    layer = _out(mod(request(model_arrays(0), {"ssgd-scope": "layer"}), None, reply_with([grad])))
    for v in layer.values():
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-6)
    glob = _out(mod(request(model_arrays(0)), None, reply_with([grad])))
    assert norm(glob) == pytest.approx(1.0, abs=1e-6)
    assert not all(np.linalg.norm(v) == pytest.approx(1.0, abs=1e-3) for v in glob.values())


def test_zero_gradient_stays_zero():
    zero = {k: np.zeros_like(v) for k, v in model_arrays(0).items()}
    out = _out(SSGDMod()(request(model_arrays(0)), None, reply_with([zero])))
    assert norm(out) == 0.0


@pytest.mark.parametrize("case, needle", [
    ("two_records", "exactly one ArrayRecord"),
    ("no_record", "exactly one ArrayRecord"),
    ("shape", "shape"),
    ("nan", "non-finite"),
    ("unknown_name", "not in the model"),
    ("bad_mode", "ssgd-mode"),
    ("bad_eps", "ssgd-eps"),
])
def test_malformed_replies_become_error_messages(case, needle):
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
    assert reply.has_error()
    assert reply.error.code == 6  # ErrorCode.MOD_FAILED_PRECONDITION
    assert needle in reply.error.reason


def test_error_replies_of_the_app_pass_through_and_evaluate_is_untouched():
    from flwr.app import Error, Message

    def failing(msg, ctxt):
        return Message(Error(code=2, reason="boom"), reply_to=msg)

    reply = SSGDMod()(request(model_arrays(0)), None, failing)
    assert reply.has_error() and reply.error.reason == "boom"
    metrics_only = SSGDMod()(request(model_arrays(0), message_type="evaluate"), None,
                             reply_with([model_arrays(3)]))
    out = _out(metrics_only)
    np.testing.assert_array_equal(out["fc.weight"], model_arrays(3)["fc.weight"])  # not normalised


def test_constructor_validates_defaults():
    with pytest.raises(ValueError, match="ssgd-mode"):
        SSGDMod(mode="sgd")
    with pytest.raises(ValueError, match="ssgd-scope"):
        SSGDMod(scope="tensor")
