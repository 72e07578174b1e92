"""``ssgd flower up/local`` start nodes whose data is their node config (red team 19, still-open row 2)."""
from __future__ import annotations

import pytest

pytest.importorskip("flwr")


def test_ssgd_flower_passes_dataset_and_data_dir_to_its_nodes_as_node_config():
    from ssgd.commands.flower import _node_configs
    from ssgd.distributed.flower import NodePolicy

    cfgs = _node_configs([], [], 2, "fedsgd", "digits", "/data/digits")
    assert cfgs == [{"ssgd-mode": "fedsgd", "dataset": "digits", "data-dir": "/data/digits"}] * 2
    assert NodePolicy.from_node_config(cfgs[0]).data_dir == "/data/digits"
    assert _node_configs([], [], 1, "delta") == [{"ssgd-mode": "delta", "dataset": "mnist"}]
