import math

import pytest
import torch
from typer.testing import CliRunner

from ssgd.data import load_dataset, subsample
from ssgd.models.optimizers import LARS, build_optimizer, build_scheduler, schedule_factor
from ssgd.experiments.train import CHECKPOINT, TrainConfig, prepare_data, train


@pytest.fixture(scope="module")
def digits():
    return subsample(load_dataset("digits"), 400, 200, seed=0)


def _weights(model):
    return [p.detach().clone() for p in model.state_dict().values()]


@pytest.mark.parametrize("opt,extra", [
    ("sgdm", {}),
    ("adam", {"schedule": "step"}),
    ("ssgd", {"shards": 4}),
    ("nsgd", {"warmup": 0.5}),
    ("lars", {"schedule": "cosine", "val_fraction": 0.2}),
])
def test_resume_reaches_the_same_final_weights(tmp_path, digits, opt, extra):
    cfg = TrainConfig(dataset="digits", model="mlp", optimizer=opt, batch_size=32, epochs=3, seed=5, **extra)
    full = train(cfg, tmp_path / "full", data=digits, progress=False)
    part = train(cfg, tmp_path / "cut", data=digits, progress=False, stop_after=1)
    assert len(part.history) == 1 and (tmp_path / "cut" / CHECKPOINT).is_file()
    resumed = train(cfg, tmp_path / "cut", data=digits, progress=False, resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    for a, b in zip(_weights(full.model), _weights(resumed.model)):
        assert torch.equal(a, b)
    assert resumed.history[-1]["test_acc"] == full.history[-1]["test_acc"]
    # and training actually moved the weights (the equality above is not vacuous)
    fresh = train(TrainConfig(**{**cfg.to_dict(), "epochs": 0}), None, data=digits, progress=False)
    assert not all(torch.equal(a, b) for a, b in zip(_weights(fresh.model), _weights(full.model)))


def test_resume_refuses_a_different_config(tmp_path, digits):
    cfg = TrainConfig(dataset="digits", model="mlp", optimizer="sgd", batch_size=64, epochs=2)
    train(cfg, tmp_path, data=digits, progress=False, stop_after=1)
    with pytest.raises(ValueError, match=r"differs in \['lr'\]"):
        train(TrainConfig(**{**cfg.to_dict(), "lr": 0.5}), tmp_path, data=digits, progress=False, resume=True)


@pytest.mark.parametrize("opt, extra, used", [
    ("sgdm", {}, {"lr": 0.01, "momentum": 0.9, "schedule": "constant"}),  # every default resolved
    ("nsgd", {"lr": 0.2}, {"lr": 0.2, "momentum": 0.0, "schedule": "cosine"}),
    ("adam", {"momentum": None}, {"lr": 1e-3, "momentum": None, "schedule": "constant"}),  # adam has no momentum
])
def test_config_json_records_the_values_actually_used(tmp_path, digits, opt, extra, used):
    import json

    cfg = TrainConfig(dataset="digits", model="mlp", optimizer=opt, batch_size=100, epochs=1, **extra)
    res = train(cfg, tmp_path, data=digits, progress=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {k: saved[k] for k in used} == used
    if used["schedule"] == "constant":  # the lr the optimizer really stepped with
        assert res.history[0]["lr"] == used["lr"]
    # the config itself still says "default" (None): a resume with the same options matches the checkpoint
    train(cfg, tmp_path, data=digits, progress=False, resume=True)


def test_training_learns_and_records_val(digits):
    cfg = TrainConfig(dataset="digits", model="mlp", optimizer="adam", lr=3e-3, batch_size=32, epochs=4,
                      val_fraction=0.25)
    res = train(cfg, None, data=digits, progress=False)
    assert res.test_acc > 0.8 and res.val_acc > 0.8
    assert all("val_acc" in r and "lr" in r for r in res.history)


def test_noise_eps_touches_training_data_only(digits):
    cfg = TrainConfig(dataset="digits", noise_eps=2.0, val_fraction=0.2, seed=1)
    tr, val = prepare_data(cfg, digits)
    assert torch.equal(tr.x_test, digits.x_test)
    assert tr.x_train.shape[0] + val.x_test.shape[0] == digits.x_train.shape[0]
    assert float((tr.x_train - tr.x_train.clamp(0, 1)).abs().max()) > 0  # noise leaves [0, 1]
    with pytest.raises(ValueError, match="noise_eps=-1"):
        TrainConfig(noise_eps=-1).validate()


def test_nsgd_step_is_lr_long_and_decays():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(10))
    opt = build_optimizer("nsgd", [w], lr=0.3)
    sched = build_scheduler(opt, "cosine", total_steps=4)
    lengths = []
    for _ in range(4):
        before = w.detach().clone()
        w.grad = torch.randn(10) * 100
        opt.step()
        sched.step()
        lengths.append(float((w.detach() - before).norm()))
    assert math.isclose(lengths[0], 0.3, rel_tol=1e-5)
    assert lengths[0] > lengths[1] > lengths[2] > lengths[3] > 0


def test_lars_update_follows_the_trust_ratio():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    g = torch.tensor([0.0, 2.0])  # |g| = 2
    opt = LARS([w], lr=2.0, momentum=0.0, trust_coefficient=0.01, eps=0.0)
    w.grad = g.clone()
    opt.step()
    expected = torch.tensor([3.0, 4.0]) - 2.0 * 0.01 * 5 / 2 * g
    assert torch.allclose(w.detach(), expected)
    # zero weights fall back to ratio 1 (plain SGD step); bad values are rejected by name
    z = torch.nn.Parameter(torch.zeros(2))
    z.grad = torch.ones(2)
    LARS([z], lr=0.5, momentum=0.0).step()
    assert torch.allclose(z.detach(), torch.full((2,), -0.5))
    with pytest.raises(ValueError, match="trust_coefficient: 0"):
        LARS([z], trust_coefficient=0)


def test_schedule_factors():
    assert [schedule_factor("constant", s, 10, warmup_steps=4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert schedule_factor("cosine", 0, 10) == 1.0 and schedule_factor("cosine", 10, 10) == 0.0
    assert math.isclose(schedule_factor("cosine", 5, 10), 0.5)
    assert [schedule_factor("step", s, 8) for s in (3, 4, 6)] == [1.0, 0.1, 0.01]
    with pytest.raises(ValueError, match="'linear'"):
        schedule_factor("linear", 0, 10)
    with pytest.raises(ValueError, match="Unknown optimizer 'rmsprop'"):
        build_optimizer("rmsprop", [torch.nn.Parameter(torch.zeros(1))])


def test_cli_train_with_new_options_and_resume(tmp_path):
    from ssgd.cli import app

    runner = CliRunner()
    args = ["train", "--dataset", "digits", "--model", "mlp", "--optimizer", "nsgd", "--epochs", "2",
            "--batch-size", "128", "--val-fraction", "0.2", "--schedule", "cosine", "--warmup", "0.5",
            "--out", str(tmp_path), "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output and (tmp_path / CHECKPOINT).is_file()
    r2 = runner.invoke(app, args + ["--resume"])  # already finished: resumes to the same result
    assert r2.exit_code == 0 and r.output.split("(")[0] == r2.output.split("(")[0]
    bad = runner.invoke(app, ["train", "--dataset", "digits", "--schedule", "linear", "--no-progress"])
    assert bad.exit_code != 0 and "linear" in bad.output


# ---------------------------------------------------------------- checkpoints are hostile input (issue 9 #1)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def _tiny(**kw):
    base = dict(dataset="digits", model="mlp", optimizer="sgd", batch_size=128, epochs=2, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_from_a_code_running_checkpoint_runs_nothing_and_changes_nothing(tmp_path, digits):
    from ssgd.report import CheckpointError

    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    train(_tiny(), run, data=digits, progress=False, stop_after=1)
    ck = torch.load(run / CHECKPOINT, weights_only=True)
    ck["model"] = _Evil(str(marker))  # a real checkpoint with a code-running object planted in it
    torch.save(ck, run / CHECKPOINT)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(CheckpointError) as ei:
        train(_tiny(), run, data=digits, progress=False, resume=True)
    assert not marker.exists()
    assert str(run / CHECKPOINT) in str(ei.value) and "\n" not in str(ei.value)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # the folder is left as it was


@pytest.mark.parametrize("damage", ["truncate", "shape"])
def test_resume_from_a_damaged_checkpoint_is_one_line(tmp_path, digits, damage):
    from ssgd.report import CheckpointError

    run = tmp_path / "run"
    train(_tiny(), run, data=digits, progress=False, stop_after=1)
    path = run / CHECKPOINT
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    else:  # loads as data, but its weights do not fit the model
        from ssgd.report import save_checkpoint

        ck = torch.load(path, weights_only=True)
        ck["model"] = {k: torch.zeros(2) for k in ck["model"]}
        save_checkpoint(path, ck, format=ck["format"])
    with pytest.raises(CheckpointError) as ei:
        train(_tiny(), run, data=digits, progress=False, resume=True)
    assert str(path) in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.parametrize("field,value", [("test_acc", float("nan")), ("test_acc", "0.99"), ("train_loss", float("inf")),
                                         ("note", "<script>"), ("epoch", 7)])
def test_resume_refuses_a_history_that_would_reach_metrics_json(tmp_path, digits, field, value):
    """Issue 19 #7: a crafted history (NaN, a string, an unknown field, a wrong epoch) is refused field by field,
    in one line, and metrics.json is not rewritten."""
    from ssgd.report import CheckpointError, save_checkpoint

    run = tmp_path / "run"
    train(_tiny(), run, data=digits, progress=False, stop_after=1)
    path = run / CHECKPOINT
    ck = torch.load(path, weights_only=True)
    ck["history"][0][field] = value
    save_checkpoint(path, ck, format=ck["format"])
    before = (run / "metrics.json").read_bytes() if (run / "metrics.json").exists() else None
    with pytest.raises(CheckpointError, match=f"refusing checkpoint .*{'epochs 1..1' if field == 'epoch' else field}") as ei:
        train(_tiny(), run, data=digits, progress=False, resume=True)
    assert "\n" not in str(ei.value)
    assert ((run / "metrics.json").read_bytes() if (run / "metrics.json").exists() else None) == before


def test_resume_refuses_a_checkpoint_of_another_number_of_nodes(tmp_path, digits):
    from ssgd.experiments.ddp_train import check_resume
    from ssgd.report import CheckpointError

    cfg = _tiny(optimizer="ssgd", lr=0.1)
    train(cfg, tmp_path, data=digits, progress=False, stop_after=1)
    assert check_resume(cfg, tmp_path, 1) is True
    with pytest.raises(CheckpointError, match="written by a 1-node run.*--nodes 1"):
        check_resume(cfg, tmp_path, 2)


def test_invalid_settings_are_refused_before_any_file_is_written(tmp_path):
    for bad, needle in [(dict(lr=-1.0), "lr=-1.0"), (dict(lr=float("nan")), "lr=nan"), (dict(momentum=1.5), "momentum"),
                        (dict(weight_decay=-1.0), "weight_decay"), (dict(model="vgg"), "'vgg'"),
                        (dict(optimizer="rmsprop"), "'rmsprop'"), (dict(device="tpu"), "device='tpu'")]:
        with pytest.raises(ValueError, match=needle):
            train(_tiny(**bad), tmp_path / "run", progress=False)
        assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- leak audit, single process with shards


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_shard_audit_each_simulated_node_contributes_only_its_unit_vector(digits, scope):
    """SSGD(m) in one process: the update is the sum of the m shards' unit vectors and nothing else
    (docs/threat-model.md). Each u_j has norm 1 (per tensor in layer scope), and scaling a shard's
    gradient by any factor -- its modulus -- leaves the update unchanged."""
    from torch.nn import functional as F

    from ssgd import split_shards, unit
    from ssgd.experiments.train import compute_grads
    from ssgd.models import build_model

    cfg = TrainConfig(dataset="digits", model="mlp", optimizer="ssgd", scope=scope, shards=4, batch_size=32)
    model = build_model("mlp", digits.shape, 10, seed=0)
    params = list(model.parameters())
    xb, yb = digits.x_train[:32], digits.y_train[:32]
    compute_grads(model, xb, yb, cfg)
    released = [p.grad.clone() for p in params]
    units = []
    for sl in split_shards(32, 4):
        g = torch.autograd.grad(F.cross_entropy(model(xb[sl]), yb[sl]), params)
        u = unit(list(g), scope)
        norms = torch.stack([t.norm() for t in u])
        if scope == "global":
            assert float(norms.square().sum().sqrt()) == pytest.approx(1.0, abs=1e-5)
        else:
            assert norms.tolist() == pytest.approx([1.0] * len(u), abs=1e-5)
        units.append(u)
    for r, *us in zip(released, *units):
        torch.testing.assert_close(r, sum(us), atol=1e-6, rtol=1e-5)
    # the modulus does not leave: shard j's loss scaled by 10^j (its gradient norm with it) changes nothing
    for j, sl in enumerate(split_shards(32, 4)):
        g = torch.autograd.grad(F.cross_entropy(model(xb[sl]), yb[sl]) * 10.0 ** j, params)
        for a, b in zip(unit(list(g), scope), units[j]):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
