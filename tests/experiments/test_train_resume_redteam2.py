"""Red team of 2026-12-04 (second pass): ``ssgd train --resume`` restores the DP accountant of checkpoint.pt
without checking it against the run it resumes.

The checkpoint is hostile input (threat model, "Files a run reads back"): weights and ``seconds`` are checked
now, but ``dp.load_state_dict(ck["dp"])`` takes the accountant's history as it is. A checkpoint whose
accountant was rewound (one step where the epochs ran eight) makes the resumed run publish a smaller ε in
``privacy.json`` and ``report.md`` than the releases it made: measured on MNIST/mlp, node-local DP, σ = 1,
2 epochs: 4.73 instead of 25.9 (probes/p4_train_resume_accountant.sh).

RED TEAM: FAILS on the code of commit 3fe6d59 (the lead fixes it and keeps the test).
"""
from __future__ import annotations

import json

import pytest
import torch

from ssgd.data import load_dataset, subsample
from ssgd.experiments.train import CHECKPOINT, TrainConfig, train


@pytest.fixture(scope="module")
def digits():
    return subsample(load_dataset("digits"), 200, 100, seed=0)


def _cfg():
    return TrainConfig(dataset="digits", model="mlp", optimizer="ssgd", batch_size=50, epochs=2, seed=1,
                       shards=2, dp="node-local", noise_multiplier=1.0, lr=0.1)


def test_a_rewound_accountant_in_the_checkpoint_never_lowers_the_published_epsilon(tmp_path, digits):
    from ssgd.report import CheckpointError, save_checkpoint

    clean = tmp_path / "clean"
    train(_cfg(), clean, data=digits, progress=False)
    honest = json.loads((clean / "privacy.json").read_text())["epsilon"]

    run = tmp_path / "run"
    train(_cfg(), run, data=digits, progress=False, stop_after=1)
    path = run / CHECKPOINT
    ck = torch.load(path, weights_only=True)
    acc = ck["dp"]["accountant"]
    assert acc["steps"] > 1  # precondition: epoch 1 made several releases
    acc["accountant"]["history"] = [(1.0, 1.0, 1)]  # rewound: one release
    acc["steps"] = 1
    save_checkpoint(path, ck, format=ck["format"])
    try:
        train(_cfg(), run, data=digits, progress=False, resume=True)
    except CheckpointError as e:  # refused in one line: fine
        assert "\n" not in str(e)
        return
    published = json.loads((run / "privacy.json").read_text())["epsilon"]
    assert published >= honest * (1 - 1e-9), (published, honest)


def _plain_cfg():
    return TrainConfig(dataset="digits", model="mlp", optimizer="sgd", batch_size=128, epochs=2, seed=1)


@pytest.mark.parametrize("row", [{"test_acc": 7.5}, {"test_acc": -1.0}, {"val_acc": 3.0}, {"test_loss": -2.0},
                                 {"train_loss": -1.0}, {"seconds": -4.0}, {"lr": -0.1}])
def test_a_history_value_out_of_range_in_the_checkpoint_is_refused(tmp_path, digits, row):
    """The Flower checkpoint's history is range-checked (accuracy in [0, 1], losses and seconds >= 0); the train
    checkpoint's is only type-checked: a resumed run publishes 'best test accuracy 7.5000' in report.md."""
    from ssgd.report import CheckpointError, save_checkpoint

    run = tmp_path / "run"
    train(_plain_cfg(), run, data=digits, progress=False, stop_after=1)
    path = run / CHECKPOINT
    ck = torch.load(path, weights_only=True)
    ck["history"][0].update(row)
    save_checkpoint(path, ck, format=ck["format"])
    with pytest.raises(CheckpointError):
        train(_plain_cfg(), run, data=digits, progress=False, resume=True)
