"""The node's own randomness (red team 3 findings 1, 2, 5): seeded node-local noise is keyed by a random salt in
the node's ledger, batches by a node-secret batch key -- never by anything the server assigns or can know."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

pytest.importorskip("flwr")

from test_flower_redteam3 import _context, _dp_app, _flat, _message, _model  # noqa: E402


def test_seeded_noise_does_not_repeat_on_two_nodes_with_the_same_ledger_path(tmp_path):
    """Two machines, one ledger path each (the same string): the noise is keyed by the salt each node wrote into its
    own ledger, so node A's noise-only release and node B's u + noise do not cancel to B's unit vector."""
    app, w = _dp_app(seed=1234), _model()
    nan = {n: a.copy() for n, a in w.items()}
    nan["net.1.weight"][0, 0] = np.nan
    req = {"batch-size": 1, "seed": 7, "server-round": 1, "ssgd-dp-noise-multiplier": 1.0}
    path = tmp_path / "ledger.json"
    ra = app(_message(nan, req, 0), _context({"privacy-ledger": str(path)}))
    salt_a = __import__("json").loads(path.read_text())["salt"]
    path.unlink()  # node B's machine: a fresh ledger at the same path
    rb = app(_message(w, req, 1), _context({"partition-id": 1, "privacy-ledger": str(path)}))
    assert not ra.has_error() and not rb.has_error()
    assert __import__("json").loads(path.read_text())["salt"] != salt_a
    assert np.linalg.norm(_flat(rb) - _flat(ra)) > 10.0


def test_the_batch_key_is_the_nodes_own_and_its_file_is_private(tmp_path, monkeypatch):
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.secret import batch_key, batch_key_path

    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    w, req = _model(), {"batch-size": 8, "seed": 1, "server-round": 1}

    def reply(node_config, i):
        r = app(_message(w, req, i), _context(node_config))
        assert not r.has_error()
        return _flat(r)

    fixed = [reply({"batch-key": "owner-a"}, i) for i in range(2)]
    np.testing.assert_array_equal(fixed[0], fixed[1])  # the node owner's fixed key: reproducible
    assert np.linalg.norm(reply({"batch-key": "owner-b"}, 2) - fixed[0]) > 1e-3  # another key: another batch
    default = reply({}, 3)  # no key: a random one, made once in the node's Flower home and kept
    path = batch_key_path({"partition-id": 0})
    assert path.parent == tmp_path / "ssgd" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    np.testing.assert_array_equal(reply({}, 4), default)
    assert batch_key({"partition-id": 0}) == path.read_text() and len(path.read_text()) == 64
    path.write_text("not a key")
    r = app(_message(w, req, 5), _context({}))
    from ssgd.distributed.flower.mod import PUBLIC_REASONS

    assert r.has_error() and r.error.reason in PUBLIC_REASONS  # a damaged key file: no update, a fixed text


def test_the_run_config_cannot_set_the_batch_key():
    from ssgd.distributed.flower.client_app import app
    from ssgd.distributed.flower.mod import REFUSED

    run = {"num-rounds": 1, "mode": "fedsgd", "model": "mlp", "seed": 0, "batch-key": "server-chosen"}
    r = app(_message(_model(), {"batch-size": 8, "seed": 1, "server-round": 1}, 0), _context({}, run))
    assert r.has_error() and r.error.reason == REFUSED
