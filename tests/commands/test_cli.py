"""The CLI tells you where you are: one-line errors, --version, the run folder, Ctrl-C's --resume command,
the thread default, and the note when Opacus's epsilon bound may be loose."""

from __future__ import annotations

import os
import warnings

import pytest

from ssgd import cli
from ssgd.commands import _experiment_cli


def _run(capsys, *args):
    rc = cli.main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_version(capsys):
    rc, out, _ = _run(capsys, "--version")
    assert rc == 0 and out.startswith("ssgd ")


@pytest.mark.parametrize("args,expect", [
    (("trian",), "Did you mean 'train'?"),
    (("reproduce", "tabel2"), "Did you mean 'table2', 'table6'?"),
])
def test_a_mistyped_command_is_suggested_once_on_one_line(capsys, args, expect):
    rc, _, err = _run(capsys, *args)
    assert rc == 2 and err.count("Did you mean") == 1 and expect in err
    assert len(err.strip().splitlines()) == 1 and "╭" not in err


def test_demo_refuses_zero_epochs_in_one_line_and_writes_nothing(capsys, tmp_path):
    rc, _, err = _run(capsys, "demo", "--epochs", "0", "--out", str(tmp_path / "run"))
    assert rc == 2 and "--epochs 0 must be >= 1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_data_dir_that_is_a_file_says_so(capsys, tmp_path):
    f = tmp_path / "mnist.npz"
    f.write_bytes(b"x")
    for args in (("attack", "--data-dir", str(f)), ("reproduce", "table2", "--quick", "--data-dir", str(f))):
        rc, _, err = _run(capsys, *args)
        assert rc == 2 and "is a file" in err and len(err.strip().splitlines()) == 1


def test_help_lists_every_optimizer(capsys):
    rc, out, _ = _run(capsys, "--help")
    assert rc == 0
    for name in ("ssgd", "sgdm", "adam", "nsgd", "lars"):
        assert name in out


def test_ctrl_c_exits_130_and_names_the_run_folder(capsys, tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("ssgd.experiments.demo.run_demo", interrupted)
    monkeypatch.setattr(_experiment_cli, "_RUN", {})
    rc, out, err = _run(capsys, "demo", "--out", str(tmp_path / "d"), "--no-progress")
    assert rc == 130
    assert out.splitlines() == [f"run folder: {tmp_path / 'd'}"]  # printed before the work starts
    assert "interrupted" in err and str(tmp_path / "d") in err.splitlines()[-1]


def test_resume_hint_is_the_exact_command(tmp_path, monkeypatch):
    monkeypatch.setattr(_experiment_cli, "_RUN", {})
    assert "no run folder" in _experiment_cli.interrupted_hint(["train"])
    _experiment_cli.open_run_dir(tmp_path / "my run", "train")
    hint = _experiment_cli.interrupted_hint(["train", "--epochs", "3", "--out", "elsewhere", "--no-resume"])
    assert hint.splitlines()[-1].strip() == f"ssgd train --epochs 3 --out '{tmp_path / 'my run'}' --resume"


def test_threads_default_and_overrides(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert cli.choose_threads() == 4  # idle: every core this process may use
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 0.0, 0.0))
    assert cli.choose_threads() == 3  # one busy neighbour: its core is left to it
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert cli.choose_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cli.choose_threads() == 2  # the user's own setting wins over the default
    assert cli.choose_threads(3) == 3  # --threads / $SSGD_THREADS win over everything


def test_threads_option_and_env_reach_torch(capsys, monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))  # restored after the test
    try:
        monkeypatch.setenv(cli.THREADS_ENV, "2")
        _run(capsys, "reproduce", "--help")
        assert torch.get_num_threads() == 2
        _run(capsys, "--threads", "1", "reproduce", "--help")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_opacus_loose_bound_warning_becomes_one_note(capsys):
    passed = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *a, **k: passed.append(str(message))
        cli._note_loose_bound()
        for _ in range(3):
            warnings.warn("Optimal order is the smallest alpha. Please consider expanding the range of alphas")
        warnings.warn("something else")
    err = capsys.readouterr().err
    assert err.count("may be loose") == 1 and "Optimal order" not in err
    assert len(err.strip().splitlines()) == 1 and "--accountant prv" in err  # the option train/privacy take
    assert passed == ["something else"]  # other warnings pass through untouched


def test_train_help_lists_the_registries(capsys, monkeypatch):
    from ssgd.data import DATASETS
    from ssgd.models import MODELS, OPTIMIZERS

    monkeypatch.setenv("COLUMNS", "300")  # one option per line: no name is wrapped
    rc, out, _ = _run(capsys, "train", "--help")
    assert rc == 0
    for name in [*MODELS, *OPTIMIZERS, *DATASETS]:  # tanh-cnn was missing when the list was typed by hand
        assert name in out, name
