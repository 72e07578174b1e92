"""Issue 19, findings 6, 7 and 9: result files are data, not authority (Flower side).

A crafted ``checkpoint.pt`` is resumed with ``ssgd flower local --resume``: each is refused in one
line (exit status 1, no traceback, the folder untouched). A node's error text reaches ``report.md``
escaped and bounded. ``--model`` is limited to what its help promises; config values keep their types.
"""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("flwr")

RUN = {"num-rounds": 2, "test-size": 100, "model": "mlp"}


def _genuine(path):
    """A checkpoint exactly as the ServerApp writes it after round 1 of RUN."""
    from ssgd.distributed.flower import FlowerRunConfig, save_checkpoint
    from ssgd.distributed.flower.task import make_model, param_arrays

    cfg = FlowerRunConfig.from_mapping(RUN)
    arrays = param_arrays(make_model(cfg))
    history = [{"round": 0, "test_acc": 0.1, "test_loss": 2.3, "accepted": 0, "rejected": 0, "failed": 0, "norms": [],
                "rejections": [], "failures": []},
               {"round": 1, "test_acc": 0.5, "test_loss": 1.5, "train_loss": None, "accepted": 2, "rejected": 0,
                "failed": 0, "norms": [[1001, 1.0], [1002, 1.0]], "rejections": [], "failures": [], "seconds": 1.0}]
    save_checkpoint(path / "checkpoint.pt", 1, arrays, history, cfg.to_dict())
    return torch.load(path / "checkpoint.pt", weights_only=True)


def _craft(payload, case):
    p = dict(payload)
    first = next(iter(p["arrays"]))
    if case == "float64":
        p["arrays"] = {k: v.double() for k, v in p["arrays"].items()}
    elif case == "int64":
        p["arrays"] = {k: v.long() for k, v in p["arrays"].items()}
    elif case == "nan":
        p["arrays"] = {k: v.clone() for k, v in p["arrays"].items()}
        p["arrays"][first].view(-1)[0] = float("nan")
    elif case == "shape":
        p["arrays"] = {**p["arrays"], first: p["arrays"][first][:-1]}
    elif case == "round-huge":
        p["round"] = 10**9
    elif case == "round-str":
        p["round"] = "1"
    elif case == "config-list":
        p["config"] = [1, 2]
    elif case == "no-arrays":
        del p["arrays"]
    elif case == "history-nan":
        p["history"] = [dict(r) for r in p["history"]]
        p["history"][1]["test_acc"] = float("nan")
    elif case == "history-str":
        p["history"] = [dict(r) for r in p["history"]]
        p["history"][1]["accepted"] = "2; <script>alert(1)</script>"
    elif case == "history-extra":
        p["history"] = [dict(r) for r in p["history"]]
        p["history"][1]["note"] = "# forged"
    elif case == "history-rounds":
        p["history"] = [dict(r) for r in p["history"]] + [dict(p["history"][1], round=7)]
    elif case in ("acc-above-1", "acc-negative", "loss-negative", "seconds-negative"):  # red team 19, still open
        field, value = {"acc-above-1": ("test_acc", 1.5), "acc-negative": ("test_acc", -0.1),
                        "loss-negative": ("test_loss", -3.0), "seconds-negative": ("seconds", -1.0)}[case]
        p["history"] = [dict(r) for r in p["history"]]
        p["history"][1][field] = value
    elif case == "texts-many":  # 10^5 short texts: each bounded, but the list was not
        p["history"] = [dict(r) for r in p["history"]]
        p["history"][1]["rejections"] = [[1001, "x"]] * 100_000
    return p


CASES = ["float64", "int64", "nan", "shape", "round-huge", "round-str", "config-list", "no-arrays", "history-nan",
         "history-str", "history-extra", "history-rounds", "acc-above-1", "acc-negative", "loss-negative",
         "seconds-negative", "texts-many"]


@pytest.mark.parametrize("case", CASES)
def test_a_crafted_checkpoint_is_refused_in_one_line(tmp_path, case):
    """Finding 7: float64/int64/NaN arrays ran with every reply rejected (rc 0), round=1e9 'finished' with
    no round run, a crafted history went verbatim into report.md, wrong types gave tracebacks."""
    from ssgd.distributed.flower import FlowerRunConfig, load_checkpoint
    from ssgd.distributed.flower.task import make_model, param_arrays
    from ssgd.report import ResultFileError

    cfg = FlowerRunConfig.from_mapping(RUN)
    torch.save(_craft(_genuine(tmp_path), case), tmp_path / "checkpoint.pt")
    with pytest.raises(ResultFileError) as info:
        load_checkpoint(tmp_path / "checkpoint.pt", cfg.to_dict(), reference=param_arrays(make_model(cfg)))
    assert "\n" not in str(info.value) and str(tmp_path / "checkpoint.pt") in str(info.value)


def test_the_cli_refuses_a_crafted_checkpoint_without_a_traceback_and_keeps_the_folder(tmp_path):
    from typer.testing import CliRunner

    from ssgd.cli import app

    _genuine(tmp_path)
    torch.save(_craft(torch.load(tmp_path / "checkpoint.pt", weights_only=True), "round-huge"),
               tmp_path / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    res = CliRunner().invoke(app, ["flower", "local", "--nodes", "2", "--rounds", "2", "--set", "test-size=100",
                                   "--out", str(tmp_path), "--resume", "--no-progress"])
    assert res.exit_code == 1, res.output
    assert "round" in res.output and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # the genuine checkpoint resumes
    _genuine(tmp_path)
    ok = CliRunner().invoke(app, ["flower", "local", "--nodes", "2", "--rounds", "2", "--set", "test-size=100",
                                  "--out", str(tmp_path), "--resume", "--no-progress"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "result.json").read_text())["resumed_after_round"] == 1


def test_a_nodes_error_text_reaches_report_md_escaped_and_bounded(tmp_path):
    """Finding 6: unbounded, unescaped node text went into metrics.json (4 MB after 2 rounds) and report.md."""
    from flwr.app import Error, Message
    from flwr.clientapp import ClientApp

    from ssgd.distributed.flower import InProcessGrid
    from ssgd.distributed.flower.server_app import run_server

    evil = "<img src=x onerror=alert(1)> [click](http://evil) | # head\n" + "A" * 1_000_000
    app = ClientApp()

    @app.train()
    def train(msg, context):  # a node (not ours) that answers with an error carrying a huge crafted text
        return Message(Error(code=2, reason=evil), reply_to=msg)

    out = tmp_path / "run"
    run_server(InProcessGrid(app, 2, {}), {**RUN, "out-dir": str(out), "resume": False})
    report = (out / "report.md").read_text()
    assert "<img" not in report and "[click](" not in report and "A" * 300 not in report
    assert "&lt;img" in report
    assert (out / "metrics.json").stat().st_size < 20_000


def test_flower_model_is_limited_to_models_without_buffers_and_fields_keep_their_types(tmp_path):
    """Finding 9: `ssgd flower local --model resnet18` was accepted although the help says 'without BatchNorm';
    `--set test-size=500` was stored as a string."""
    from typer.testing import CliRunner

    from ssgd.cli import app
    from ssgd.commands.flower import _run_config
    from ssgd.distributed.flower.config import FLOWER_MODELS
    from ssgd.models import build_model

    res = CliRunner().invoke(app, ["flower", "local", "--model", "resnet18", "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "resnet18" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()
    for name in FLOWER_MODELS:  # what the help promises holds for every allowed model
        assert list(build_model(name, (1, 28, 28), 10, seed=0).buffers()) == [], name

    class Run:
        rounds, mode, scope, server_lr, local_steps, client_lr, batch_size = 2, "fedsgd", "global", 0.5, 5, 0.05, 64
        dataset, model, partition, alpha, seed, strict = "mnist", "mlp", "iid", 0.5, 0, True

    cfg = _run_config(Run(), None, 120.0, 0.0, ["test-size=500", "strict=false"])
    assert cfg["test-size"] == 500 and cfg["strict"] is False
