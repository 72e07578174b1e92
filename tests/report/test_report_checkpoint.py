"""ssgd.report.checkpoint: checkpoints are loaded as data; anything else is one line naming the file."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch

from ssgd.report import CheckpointError, load_checkpoint, save_checkpoint

MARKER_ENV = "SSGD_TEST_MARKER"


class _Evil:
    """Unpickling this object would create the file named by $SSGD_TEST_MARKER (code execution)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_evil_checkpoint(path, marker) -> None:
    """A torch.save'd checkpoint whose unpickling runs code (``open(marker, 'w')``)."""
    torch.save({"format": "ssgd-train", "model": _Evil(str(marker))}, path)


def test_roundtrip_keeps_tensors_generators_and_numbers(tmp_path):
    g = torch.Generator().manual_seed(3)
    state = {"w": torch.randn(3), "generator": g.get_state(), "rng": torch.get_rng_state(), "epoch": 2,
             "history": [{"epoch": 1, "loss": 0.5}], "dp": None, "name": "x", "pairs": [(1.0, 2.0, 3)]}
    save_checkpoint(tmp_path / "c.pt", state, format="t")
    back = load_checkpoint(tmp_path / "c.pt", format="t", required=("w", "generator"))
    assert torch.equal(back["w"], state["w"]) and torch.equal(back["generator"], state["generator"])
    assert back["history"] == state["history"] and back["epoch"] == 2 and back["format"] == "t"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    write_evil_checkpoint(path, marker)
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path, format="ssgd-train")
    assert not marker.exists()  # the payload never ran
    msg = str(ei.value)
    assert str(path) in msg and "\n" not in msg and "not a plain-data checkpoint" in msg


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "foreign", "wrong-format", "not-a-dict",
                                  "missing-key", "plain-pickle"])
def test_corrupt_truncated_or_foreign_files_get_one_line(tmp_path, kind):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.ones(4), "epoch": 1}, format="ssgd-train")
    good = path.read_bytes()
    if kind == "garbage":
        path.write_bytes(os.urandom(300))
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "foreign":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("hello.txt", "not a checkpoint")
    elif kind == "wrong-format":
        save_checkpoint(path, {"w": torch.ones(4), "epoch": 1}, format="ssgd-flower")
    elif kind == "not-a-dict":
        torch.save([1, 2, 3], path)
    elif kind == "missing-key":
        save_checkpoint(path, {"w": torch.ones(4)}, format="ssgd-train")
    elif kind == "plain-pickle":
        path.write_bytes(pickle.dumps({"format": "ssgd-train", "epoch": 1}))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path, format="ssgd-train", required=("w", "epoch"))
    msg = str(ei.value)
    assert str(path) in msg and "\n" not in msg and "Traceback" not in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # the folder is left as it was


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="drop --resume"):
        load_checkpoint(tmp_path / "nope.pt", format="ssgd-train")
