"""``ssgd flower up/local`` start nodes whose data is their node config (red team 19, still-open row 2)."""
from __future__ import annotations

import pytest

pytest.importorskip("flwr")


def test_ssgd_flower_passes_dataset_and_data_dir_to_its_nodes_as_node_config():
    from ssgd.commands.flower import _node_configs
    from ssgd.distributed.flower import NodePolicy

    share = {"partition": "iid", "alpha": 0.5, "partition-seed": 0}
    cfgs = _node_configs([], [], 2, "fedsgd", "digits", "/data/digits")
    assert cfgs == [{"ssgd-mode": "fedsgd", "dataset": "digits", "data-dir": "/data/digits", **share}] * 2
    assert NodePolicy.from_node_config(cfgs[0]).data_dir == "/data/digits"
    assert _node_configs([], [], 1, "delta") == [{"ssgd-mode": "delta", "dataset": "mnist", **share}]


def test_ssgd_flower_passes_partition_alpha_and_seed_to_its_nodes_as_node_config():
    from ssgd.commands.flower import _node_configs
    from ssgd.distributed.flower import NodePolicy

    [cfg] = _node_configs([], [], 1, "fedsgd", "mnist", "", "dirichlet", 0.3, 7)
    assert {k: cfg[k] for k in ("partition", "alpha", "partition-seed")} == {"partition": "dirichlet", "alpha": 0.3,
                                                                              "partition-seed": 7}
    policy = NodePolicy.from_node_config(cfg)
    assert (policy.partition, policy.alpha, policy.partition_seed) == ("dirichlet", 0.3, 7)
