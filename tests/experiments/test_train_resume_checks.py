"""``ssgd train --resume`` checks the checkpoint's weights and clock (red team 19, still-open row 5).

Before: a checkpoint whose model weights hold NaN or inf was resumed (training then went on from a
broken model), and ``seconds`` was ``float()``-ed, so the string ``"12"`` passed. Now each is a one-line
CheckpointError naming the file, and the run folder is left as it was.
"""
from __future__ import annotations

import pytest
import torch

from ssgd.data import load_dataset, subsample
from ssgd.experiments.train import CHECKPOINT, TrainConfig, train


@pytest.fixture(scope="module")
def digits():
    return subsample(load_dataset("digits"), 200, 100, seed=0)


def _cfg():
    return TrainConfig(dataset="digits", model="mlp", optimizer="sgd", batch_size=128, epochs=2, seed=1)


@pytest.mark.parametrize("case", ["weights-nan", "weights-inf", "seconds-str", "seconds-nan", "seconds-negative"])
def test_resume_refuses_non_finite_weights_and_a_bad_clock(tmp_path, digits, case):
    from ssgd.report import CheckpointError, save_checkpoint

    run = tmp_path / "run"
    train(_cfg(), run, data=digits, progress=False, stop_after=1)
    path = run / CHECKPOINT
    ck = torch.load(path, weights_only=True)
    if case.startswith("weights"):
        first = next(iter(ck["model"]))
        ck["model"][first].view(-1)[0] = float("nan") if case == "weights-nan" else float("inf")
    else:
        ck["seconds"] = {"seconds-str": "12", "seconds-nan": float("nan"), "seconds-negative": -5.0}[case]
    save_checkpoint(path, ck, format=ck["format"])
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(CheckpointError, match="refusing checkpoint .*(non-finite|seconds)") as ei:
        train(_cfg(), run, data=digits, progress=False, resume=True)
    assert "\n" not in str(ei.value) and str(path) in str(ei.value)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
