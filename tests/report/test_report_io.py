"""ssgd.report.io: run folders are never silently reused, configs are compared by key."""

from __future__ import annotations

import json
import tempfile

import pytest

from ssgd.report import ConfigMismatchError, RunDirError, check_same_config, check_saved_config, make_run_dir


def test_existing_run_is_refused_without_resume_or_overwrite(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(RunDirError, match="already holds results; pass --resume"):
        make_run_dir(tmp_path, "train")
    assert make_run_dir(tmp_path, "train", resume=True) == tmp_path
    assert make_run_dir(tmp_path, "train", overwrite=True) == tmp_path
    assert make_run_dir(tmp_path / "new", "train") == tmp_path / "new" and (tmp_path / "new").is_dir()
    assert make_run_dir(tmp_path / "new", "train") == tmp_path / "new"  # empty: fine


def test_a_file_or_missing_resume_folder_is_refused(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        make_run_dir(f, "train")
    with pytest.raises(RunDirError, match="does not exist; drop --resume"):
        make_run_dir(tmp_path / "absent", "train", resume=True)
    assert f.read_text() == "x"


def test_a_folder_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    # root may write into a chmod-555 folder, so the check tries a real file: simulate a read-only mount
    def no(*a, **k):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", no)
    with pytest.raises(RunDirError, match="not writable"):
        make_run_dir(tmp_path / "ro", "train")


def test_config_mismatch_names_every_key(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.1, "seed": 0, "device": "cpu"}))
    assert check_saved_config(tmp_path, {"lr": 0.1, "seed": 0, "device": "cuda"}) is True
    assert check_saved_config(tmp_path / "none", {"lr": 1}) is False
    with pytest.raises(ConfigMismatchError, match=r"differs in \['lr', 'seed'\]"):
        check_saved_config(tmp_path, {"lr": 0.5, "seed": 1, "device": "cpu"})
    with pytest.raises(ConfigMismatchError, match="holds no config object"):
        check_same_config([1], {"lr": 1}, source="x")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigMismatchError, match="unreadable"):
        check_saved_config(tmp_path, {"lr": 0.1})


def test_read_csv_round_trips_write_csv_numbers(tmp_path):
    import math

    from ssgd.report import read_csv, write_csv

    path = tmp_path / "rows.csv"
    assert read_csv(path) == []
    write_csv(path, [{"method": "ssgd", "lr": 0.5, "acc": float("nan"), "eps": float("inf")}])
    (row,) = read_csv(path)
    assert row["method"] == "ssgd" and row["lr"] == 0.5 and math.isnan(row["acc"]) and row["eps"] == math.inf
