"""The Fashion-MNIST epsilon = 3 benchmark: same sigma/q/steps/accountant for both methods, resumable runs,
the JSON schema of docs/results/dp_benchmark.json."""

import json
import math

import pytest
import torch

from ssgd.data import ImageDataset
from ssgd.experiments.dp_benchmark import DPBenchmarkConfig, fit_private
from ssgd.privacy import compute_epsilon


def _data():
    """Four classes, each a bright quadrant plus noise (16x16 so the tanh CNN applies)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (300,), generator=g)
    t = torch.zeros(4, 1, 16, 16)
    t[0, 0, :8, :8] = t[1, 0, :8, 8:] = t[2, 0, 8:, :8] = t[3, 0, 8:, 8:] = 1.0
    x = (t[y] + 0.3 * torch.randn(300, 1, 16, 16, generator=g)).clamp(0, 1)
    return ImageDataset("synthetic", x[:240], y[:240], x[240:], y[240:], 4)


def _cfg(**kw):
    base = dict(batch_size=60, epochs=3, ssgd_lrs=(0.4,), opacus_lrs=(4.0,))
    base.update(kw)
    return DPBenchmarkConfig(**base).validate()


@pytest.mark.parametrize("method", ["ssgd", "opacus"])
def test_both_methods_learn_and_spend_the_same_epsilon(method):
    cfg, data = _cfg(), _data()
    hist = fit_private(method, data, cfg, lr=0.4 if method == "ssgd" else 4.0, epochs=3, sigma=0.8)
    assert [r["steps"] for r in hist] == [4, 8, 12]  # q = 1/ceil(240/60)
    for r in hist:  # one accountant for both; Opacus's engine agrees
        assert r["epsilon"] == pytest.approx(compute_epsilon(0.8, 0.25, r["steps"], 1e-5))
        assert r["epsilon_opacus"] == pytest.approx(r["epsilon"], rel=1e-6)
    assert hist[-1]["test_acc"] >= 0.6  # chance is 0.25: a broken update or noise scale fails this


@pytest.mark.parametrize("method", ["ssgd", "opacus"])
def test_resume_continues_bit_identically(method, tmp_path):
    cfg, data = _cfg(), _data()
    lr = 0.4 if method == "ssgd" else 4.0
    full = fit_private(method, data, cfg, lr=lr, epochs=3, sigma=0.8, checkpoint=tmp_path / "a.ckpt")
    part = fit_private(method, data, cfg, lr=lr, epochs=3, sigma=0.8, checkpoint=tmp_path / "b.ckpt", stop_after=1)
    assert len(part) == 1
    rest = fit_private(method, data, cfg, lr=lr, epochs=3, sigma=0.8, checkpoint=tmp_path / "b.ckpt", resume=True)
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in full]
    assert [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in rest] == strip
    # a checkpoint of another run is refused, not half-read
    from ssgd.report import ConfigMismatchError

    with pytest.raises(ConfigMismatchError, match="belongs to the run"):
        fit_private(method, data, cfg, lr=lr * 2, epochs=3, sigma=0.8, checkpoint=tmp_path / "b.ckpt", resume=True)


def _rewind_ssgd(ck):  # the DP accountant of SSGD + noise forgets the epoch it spent
    ck["state"]["dp"]["accountant"] = {"accountant": {"history": []}, "steps": 0, "epochs": []}


def _rewind_opacus(ck):  # Opacus's accountant: one step instead of an epoch's four
    ck["state"]["opacus_accountant"]["history"] = [(0.8, 0.25, 1)]


@pytest.mark.parametrize("method, rewind", [("ssgd", _rewind_ssgd), ("opacus", _rewind_opacus)])
def test_a_rewound_accountant_in_the_checkpoint_changes_no_published_epsilon(method, rewind, tmp_path):
    """Red team (2026-12-04): a resume took the accountants from the file, so a rewound one published a smaller
    epsilon_opacus. Now they are rebuilt from the run's settings and its epochs: the resumed rows equal an
    uninterrupted run's; a saved row claiming other steps or epsilon is refused."""
    from ssgd.report import CheckpointError

    cfg, data = _cfg(), _data()
    lr = 0.4 if method == "ssgd" else 4.0
    full = fit_private(method, data, cfg, lr=lr, epochs=3, sigma=0.8)
    ck = tmp_path / "r.ckpt"
    fit_private(method, data, cfg, lr=lr, epochs=3, sigma=0.8, checkpoint=ck, stop_after=1)
    state = torch.load(ck, weights_only=True)
    try:
        rewind(state)
    except (KeyError, TypeError):
        pass  # a state of another layout: the replay below must still hold
    torch.save(state, ck)
    try:
        rest = fit_private(method, data, cfg, lr=lr, epochs=3, sigma=0.8, checkpoint=ck, resume=True)
    except CheckpointError:
        rest = None  # refusing the forged accountant is also sound
    if rest is not None:
        assert [r["epsilon_opacus"] for r in rest] == [r["epsilon_opacus"] for r in full]
        assert [r["epsilon"] for r in rest] == [r["epsilon"] for r in full]
    state = torch.load(ck, weights_only=True)
    state["history"][0]["epsilon"] = state["history"][0]["epsilon"] / 2
    torch.save(state, ck)
    with pytest.raises(CheckpointError, match="did not spend"):
        fit_private(method, data, cfg, lr=lr, epochs=3, sigma=0.8, checkpoint=ck, resume=True)


@pytest.mark.parametrize("damage, needle", [
    (lambda ck: ck["history"][0].update(test_acc=float("nan")), "bad or unknown field 'test_acc'"),
    (lambda ck: ck["history"][0].update(note="x"), "unknown field 'note'"),
    (lambda ck: ck.update(epoch=7), "epoch 7 does not fit a 3-epoch run"),
    (lambda ck: ck.update(history=[]), "does not hold epochs 1..1"),
    (lambda ck: ck.update(seconds="soon"), "seconds='soon'"),
    (lambda ck: ck["model"].update({k: v[:1] for k, v in ck["model"].items()}), "RuntimeError"),
])
def test_resume_refuses_a_damaged_checkpoint_in_one_line(tmp_path, damage, needle):
    """A checkpoint is hostile input: a NaN, a foreign field or a state that does not fit is refused before any
    epoch runs, in one line (it used to flow into the results or end in a traceback)."""
    from ssgd.report import CheckpointError

    cfg, data, ck = _cfg(), _data(), tmp_path / "c.ckpt"
    fit_private("ssgd", data, cfg, lr=0.4, epochs=3, sigma=0.8, checkpoint=ck, stop_after=1)
    state = torch.load(ck, weights_only=True)
    damage(state)
    torch.save(state, ck)
    with pytest.raises(CheckpointError, match="refusing checkpoint") as e:
        fit_private("ssgd", data, cfg, lr=0.4, epochs=3, sigma=0.8, checkpoint=ck, resume=True)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_config_errors_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match="anchor's lr 0.4 must lie inside"):
        DPBenchmarkConfig(ssgd_lrs=(0.8, 1.6)).validate()
    with pytest.raises(ValueError, match="anchor's lr 4 must lie inside"):
        DPBenchmarkConfig(opacus_lrs=(1.0, 2.0)).validate()
    with pytest.raises(ValueError, match="seeds="):
        DPBenchmarkConfig(seeds=(0, 0)).validate()
    with pytest.raises(ValueError, match="Unknown normalisation 'clip'"):
        DPBenchmarkConfig(normalisation="clip").validate()
    with pytest.raises(ValueError, match="gamma=-1"):
        DPBenchmarkConfig(gamma=-1).validate()
    with pytest.raises(ValueError, match="finite target"):
        DPBenchmarkConfig(epsilon=math.inf).validate()
    with pytest.raises(ValueError, match="features='sift'"):
        DPBenchmarkConfig(features="sift").validate()
    q = DPBenchmarkConfig.quick().validate()
    assert q.dataset == "fashion-mnist" and q.model == "tanh-cnn"
    d = DPBenchmarkConfig().validate()
    assert d.epochs == 40 and d.seeds == (0, 1, 2)  # the anchor's length, three paired seeds
    sc = DPBenchmarkConfig.for_features("scatternet").validate()
    assert (sc.dataset, sc.model, sc.anchor["test_acc"]) == ("fashion-mnist-scatternet", "scatter-linear", 0.897)


def test_paired_seeds_share_initialisation_and_poisson_masks():
    """Seed s gives SSGD and Opacus the same batches: the same number of examples seen, step by step."""
    cfg, data = _cfg(epochs=1), _data()
    a = fit_private("ssgd", data, cfg, lr=0.4, epochs=2, sigma=0.8, seed=3)
    b = fit_private("opacus", data, cfg, lr=4.0, epochs=2, sigma=0.8, seed=3)
    c = fit_private("ssgd", data, cfg, lr=0.4, epochs=2, sigma=0.8, seed=4)
    assert [r["examples"] for r in a] == [r["examples"] for r in b]
    assert [r["examples"] for r in a] != [r["examples"] for r in c]  # another seed, other masks


def test_a_winner_at_a_grid_edge_widens_the_grid():
    from ssgd.experiments.dp_benchmark import widen

    assert widen([1.0, 2.0, 4.0], {1.0: 0.5, 2.0: 0.7, 4.0: 0.6}) is None
    assert widen([1.0, 2.0, 4.0], {1.0: 0.5, 2.0: 0.6, 4.0: 0.7}) == 8.0
    assert widen([1.0, 2.0, 4.0], {1.0: 0.8, 2.0: 0.6, 4.0: 0.7}) == 0.5
    assert widen([3.0], {3.0: 0.1}) == 6.0


def test_protocol_tunes_on_validation_then_runs_paired_seeds_and_resumes(tmp_path, monkeypatch):
    from ssgd.experiments import dp_benchmark as mod

    monkeypatch.setattr(mod, "load_dataset", lambda name, data_dir=None: _data())
    monkeypatch.setattr(mod, "_DATA", {})
    cfg = _cfg(epochs=2, ssgd_lrs=(0.2, 0.4), opacus_lrs=(4.0, 8.0), seeds=(0, 1), max_widen=1)
    logs: list[str] = []
    res = mod.run_dp_benchmark(tmp_path, cfg, progress=False, log=logs.append)
    doc = json.loads((tmp_path / "dp_benchmark.json").read_text())
    assert doc["partial"] is False and doc["epochs"] == 2 and doc["seeds"] == [0, 1]
    tuned = doc["tuning"]["rows"]
    for m, grid in (("ssgd", [0.2, 0.4]), ("opacus", [4.0, 8.0])):
        r = doc["runs"][m]
        assert r["seeds"] == [0, 1] and len(r["test_accs"]) == 2
        assert r["test_acc"] == r["test_acc_mean"] == pytest.approx(sum(r["test_accs"]) / 2)
        assert r["throughput"] > 0 and r["throughput_in_runs"] > 0 and 2.9 < r["epsilon"] <= 3.0
        rows = [t for t in tuned if t["method"] == m]
        assert set(grid) <= {t["lr"] for t in rows}  # the whole grid, plus any widening
        assert r["lr"] == max(rows, key=lambda t: (t["acc"], -t["lr"]))["lr"]  # best validation accuracy
        if len(rows) == len(grid):  # no widening: the winner was inside... or widening was allowed once
            assert mod.widen(grid, {t["lr"]: t["acc"] for t in rows}) is None
    assert doc["runs"]["ssgd"]["noise_multiplier"] == doc["runs"]["opacus"]["noise_multiplier"]
    assert doc["welch_p"] is None or 0.0 <= doc["welch_p"] <= 1.0
    assert doc["throughput_ratio"] == pytest.approx(doc["runs"]["ssgd"]["throughput"] / doc["runs"]["opacus"]["throughput"])
    assert "examples/s" in res.text and "Welch" in res.text
    # resume: nothing reruns; a broken run record is rerun, not trusted
    bad = next((tmp_path / "runs").glob("test-ssgd-*seed1.json"))
    bad.write_text(bad.read_text().replace('"acc": ', '"acc": "x", "_": ', 1))
    logs.clear()
    mod.run_dp_benchmark(tmp_path, cfg, progress=False, log=logs.append, resume=True)
    reran = [line for line in logs if " seed " in line and "examples/s)" in line]
    assert len(reran) == 1 and "ssgd" in reran[0] and "seed 1" in reran[0]


@pytest.mark.slow
def test_benchmark_quick_cli_writes_the_result_json(tmp_path):
    from typer.testing import CliRunner

    from ssgd.cli import app
    from ssgd.data import DatasetError, load_dataset

    try:
        load_dataset("fashion-mnist")
    except DatasetError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")
    import shutil

    from ssgd.data.datasets import FASHION_MNIST_DIR

    data = tmp_path / "fm"  # a folder of the user's, not the default location
    shutil.copytree(FASHION_MNIST_DIR, data)
    out, pub = tmp_path / "run", tmp_path / "pub"
    res = CliRunner().invoke(app, ["reproduce", "privacy", "--benchmark", "--quick", "--no-progress", "--workers",
                                   "2", "--out", str(out), "--publish", str(pub), "--data-dir", str(data)])
    assert res.exit_code == 0, res.output
    doc = json.loads((pub / "dp_benchmark.json").read_text())
    assert doc == json.loads((out / "dp_benchmark.json").read_text())
    assert {"dataset", "epsilon", "delta", "epochs", "batch_size", "runs"} <= set(doc)
    assert doc["dataset"] == "fashion-mnist" and doc["epsilon"] == 3.0 and doc["delta"] == 1e-5
    for m in ("ssgd", "opacus"):
        r = doc["runs"][m]
        assert {"test_acc", "lr", "noise_multiplier", "epsilon"} <= set(r)
        assert 3.0 - 0.02 <= r["epsilon"] <= 3.0  # sigma solved for the epochs actually run
        assert r["test_acc"] > 0.2  # 10 classes: above chance after 2 private epochs on 600 images
        assert len(r["per_epoch"]) == doc["epochs"]
    assert doc["runs"]["ssgd"]["noise_multiplier"] == doc["runs"]["opacus"]["noise_multiplier"]
    assert doc["partial"] is False and len(doc["runs"]["ssgd"]["test_accs"]) == len(doc["seeds"])
    for f in ("config.json", "report.md", "ssgd_seeds.csv", "opacus_seeds.csv", "dp_benchmark.png"):
        assert (out / f).is_file(), f
    assert (pub / "dp_benchmark.png").is_file()
    # resume: everything is done, nothing reruns; other settings are refused with the fix
    again = CliRunner().invoke(app, ["reproduce", "privacy", "--benchmark", "--quick", "--no-progress",
                                     "--out", str(out), "--resume", "--data-dir", str(data)])
    assert again.exit_code == 0, again.output
    assert "examples/s)" not in again.output  # no run line: every run was kept
    bad = CliRunner().invoke(app, ["reproduce", "privacy", "--benchmark", "--quick", "--no-progress",
                                   "--out", str(out), "--resume", "--epochs", "3", "--data-dir", str(data)])
    assert bad.exit_code == 2 and "epochs: saved 2, now 3" in bad.output


def test_published_json_renders_and_hostile_fields_are_refused(tmp_path):
    """The README's DP tables come from the published JSON; a crafted file is refused in one line."""
    import json
    from pathlib import Path

    from ssgd.experiments import dp_benchmark

    src = Path(__file__).resolve().parents[2] / "docs" / "results" / "dp_benchmark.json"
    doc = dp_benchmark.load_published(src)
    md = dp_benchmark.results_markdown(doc)
    mean = doc["runs"]["ssgd"]["test_acc_mean"]
    assert f"{mean:.4f}" in md and "Welch" in md
    for path, value in ((("runs", "ssgd", "test_acc_mean"), float("nan")), (("runs", "opacus", "test_accs"), [1.5]),
                        (("dataset",), "x | <script>"), (("epochs",), True)):
        bad = json.loads(src.read_text())
        node = bad
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        f = tmp_path / "bad.json"
        f.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="bad.json"):
            dp_benchmark.load_published(f)


def test_benchmark_data_dir_must_be_a_folder(tmp_path):
    from typer.testing import CliRunner

    from ssgd.cli import app

    res = CliRunner().invoke(app, ["reproduce", "privacy", "--benchmark", "--no-progress", "--out",
                                   str(tmp_path / "run"), "--data-dir", str(tmp_path / "missing")],
                             env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert res.exit_code == 2 and "missing" in " ".join(res.output.split())
    assert not (tmp_path / "run").exists()
