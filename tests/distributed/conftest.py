"""Flower tests: every test runs with a private Flower home (``FLWR_HOME``).

A node-local DP node keeps its release budget in a ledger file under its Flower home by default
(:func:`ssgd.distributed.flower.privacy.default_ledger_path`): without a private home per test, one
test's releases would be counted in the next test's budget (and in the developer's ``~/.flwr``).
"""

import pytest


@pytest.fixture(autouse=True)
def _private_flwr_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("flwr-home")
    monkeypatch.setenv("FLWR_HOME", str(home))
    yield home
