"""`ssgd flower`: the report says "resumed" only after a real resume, `local` plots its rounds, and `up`
takes --no-progress like `local`."""

from __future__ import annotations

import pytest

from ssgd import cli


@pytest.fixture(autouse=True)
def _flower_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))


def _local(capsys, out, rounds, *extra):
    rc = cli.main(["flower", "local", "--nodes", "2", "--rounds", str(rounds), "--set", "test-size=100",
                   "--out", str(out), "--no-progress", *extra])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    return (out / "report.md").read_text()


def test_local_report_plots_and_says_resumed_only_on_a_resume(capsys, tmp_path):
    out = tmp_path / "run"
    fresh = _local(capsys, out, 1)
    assert "resumed" not in fresh  # it read "resumed after round 0" on every fresh run
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG" and "](accuracy.png)" in fresh
    resumed = _local(capsys, out, 2, "--resume")
    assert "Rounds: 2 (resumed after round 1)" in resumed


def test_up_accepts_no_progress(capsys):
    rc = cli.main(["flower", "up", "--no-progress", "--nodes", "0"])  # refused for --nodes, not for the flag
    err = capsys.readouterr().err
    assert rc == 2 and "--nodes 0" in err and "No such option" not in err


def test_up_round_bar_follows_metrics_json_and_ignores_a_damaged_file(tmp_path, monkeypatch):
    import json
    import time

    import tqdm

    from ssgd.commands import flower

    seen = []

    class Bar(tqdm.tqdm):
        def update(self, n=1):
            seen.append(self.n + n)
            return super().update(n)

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    (tmp_path / "metrics.json").write_text("{not json")
    with flower._round_bar(tmp_path, 3, True, poll=0.02):
        time.sleep(0.1)  # a damaged file is skipped, not raised
        (tmp_path / "metrics.json").write_text(json.dumps({"history": [{"round": 0}, {"round": 2}]}))
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
    assert seen == [2]
    with flower._round_bar(tmp_path, 3, False):  # --no-progress: no bar, no thread
        pass
    assert seen == [2]


def test_local_with_a_dirichlet_partition_runs_on_nodes_given_that_partition(capsys, tmp_path):
    """`--partition`/`--alpha`/`--seed` reach the nodes as node config: they agree with the run config, so every
    node answers (a node left on its default iid share would refuse the run config's dirichlet)."""
    import json

    out = tmp_path / "run"
    _local(capsys, out, 1, "--partition", "dirichlet", "--alpha", "0.3", "--seed", "3")
    last = json.loads((out / "metrics.json").read_text())["history"][-1]
    assert (last["round"], last["accepted"], last["rejected"], last["failed"]) == (1, 2, 0, 0)
