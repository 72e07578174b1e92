"""examples/flower-app: the `flwr new`-style template (issue 23 item 3). Its run on a real, signed
loopback deployment is in test_flower_trust.py (one deployment for both)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr")

APP = Path(__file__).resolve().parents[2] / "examples" / "flower-app"


@pytest.fixture
def template(monkeypatch):
    monkeypatch.syspath_prepend(str(APP))
    yield
    for name in [m for m in sys.modules if m == "ssgd_app" or m.startswith("ssgd_app.")]:
        del sys.modules[name]


def test_the_template_is_a_valid_app_whose_nodes_send_unit_vectors_and_obey_their_policy(template):
    from flwr.app import ConfigRecord
    from flwr.cli.config_utils import load_and_validate
    from ssgd_app.client_app import app
    from ssgd_app.task import make_model

    from ssgd.distributed.flower import InProcessGrid, SSGDStrategy
    from ssgd.distributed.flower.validation import record_from_arrays

    config, _ = load_and_validate(APP / "pyproject.toml", check_module=False)
    assert config["tool"]["flwr"]["app"]["components"]["clientapp"] == "ssgd_app.client_app:app"
    run = config["tool"]["flwr"]["app"]["config"]
    arrays = {n: p.detach().numpy().copy() for n, p in make_model().named_parameters()}
    strategy = SSGDStrategy(server_lr=0.5, client_config={"batch-size": int(run["batch-size"])})
    grid = InProcessGrid(app, 2, run, node_configs=[{}, {"min-batch-size": 64}])  # node 2 asks for more
    strategy.start(grid, record_from_arrays(arrays), num_rounds=1, train_config=ConfigRecord())
    book = strategy.rounds[1]
    assert [n for n, _ in book["accepted"]] == [1001] and abs(book["accepted"][0][1] - 1.0) < 1e-4
    assert [n for n, _ in book["failed"]] == [1002]  # its own min-batch-size refused the server's 32
