"""examples/flower-app: the `flwr new`-style template (issue 23 item 3) runs as it is, on a real
loopback deployment whose SuperNodes trust only the deployment's key (the template signed by it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("flwr")

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parents[2] / "examples" / "flower-app"


def test_the_template_passes_flowers_validation():
    from flwr.cli.config_utils import load_and_validate

    config, _ = load_and_validate(APP / "pyproject.toml", check_module=False)
    assert config["tool"]["flwr"]["app"]["components"]["clientapp"] == "ssgd_app.client_app:app"
    src = (APP / "ssgd_app" / "client_app.py").read_text()
    assert "ClientApp(mods=[SSGDMod()])" in src and "run_config" not in src.split('"""', 2)[2]


def test_the_template_runs_on_loopback_and_every_update_is_accepted(tmp_path):
    from ssgd.distributed.flower import Deployment
    from ssgd.distributed.flower.deploy import flower_env

    if shutil.which("flower-superlink", path=flower_env("/tmp")["PATH"]) is None:
        pytest.skip("flower-superlink not installed")
    app = shutil.copytree(APP, tmp_path / "app", ignore=shutil.ignore_patterns("runs", "__pycache__"))
    out = tmp_path / "out"
    with Deployment(2, tmp_path / "dep") as dep:
        result = dep.wait(dep.submit({"num-rounds": 2, "out-dir": str(out)}, app_dir=app), out, timeout=300)
    assert result["status"] == "finished" and result["accepted"] == [2, 2], result
    assert json.loads((out / "result.json").read_text())["test_acc"] > 0.2
