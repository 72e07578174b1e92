"""Run config parsing and the app directory (pyproject.toml) that `flwr run` builds a FAB from."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("flwr")

from ssgd.distributed.flower import FlowerRunConfig  # noqa: E402
from ssgd.distributed.flower.deploy import app_pyproject, write_app_dir  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower"


def test_run_config_accepts_flower_style_keys_and_validates():
    cfg = FlowerRunConfig.from_mapping({"num-rounds": 3, "server-lr": 0.2, "strict": "false", "other-key": 1})
    assert cfg.num_rounds == 3 and cfg.server_lr == 0.2 and cfg.strict is False
    with pytest.raises(ValueError, match="mode"):
        FlowerRunConfig.from_mapping({"mode": "fedprox"})
    with pytest.raises(ValueError, match="num-rounds"):
        FlowerRunConfig.from_mapping({"num-rounds": 0})
    with pytest.raises(ValueError, match="model"):
        FlowerRunConfig.from_mapping({"model": "nope"})
    with pytest.raises(ValueError, match="batch-size"):
        FlowerRunConfig.from_mapping({"batch-size": "many"})


@pytest.mark.parametrize("app_dir", ["generated", "example"])
def test_app_dirs_pass_flowers_own_validation(tmp_path, app_dir):
    from flwr.cli.config_utils import load_and_validate

    path = write_app_dir(tmp_path / "app", {"num-rounds": 4}) if app_dir == "generated" else EXAMPLE
    config, _ = load_and_validate(path / "pyproject.toml", check_module=True)
    app = config["tool"]["flwr"]["app"]
    assert app["components"]["serverapp"] == "ssgd.distributed.flower.server_app:app"
    assert app["components"]["clientapp"] == "ssgd.distributed.flower.client_app:app"
    # every key of the app's run config is one the apps understand, with a valid value
    FlowerRunConfig.from_mapping(app["config"])
    # ... and all of them are there: `flwr run --run-config` can only override keys the app lists
    assert set(k.replace("-", "_") for k in app["config"]) == set(FlowerRunConfig().to_dict())


def test_the_example_app_is_generated_from_the_one_template():
    """examples/flower/pyproject.toml and the app `ssgd flower up` writes come from app_pyproject()."""
    assert (EXAMPLE / "pyproject.toml").read_text() == app_pyproject(), (
        "regenerate: python -c \"from ssgd.distributed.flower.deploy import app_pyproject; "
        "open('examples/flower/pyproject.toml', 'w').write(app_pyproject())\"")


def test_min_nodes_default_of_a_deployment_survives_a_lost_node():
    """Finding 8: `ssgd flower up` waited for all nodes, so one lost SuperNode ended the run."""
    from ssgd.distributed.flower.config import default_min_nodes

    assert [default_min_nodes(n) for n in (1, 2, 3, 4, 5, 10)] == [1, 1, 2, 2, 3, 5]
    for n in range(2, 12):
        assert default_min_nodes(n) < n  # survives losing one node
