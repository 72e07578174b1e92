import csv
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from ssgd.attacks import list_attacks
from ssgd.cli import app
from ssgd.defenses import list_defenses
from ssgd.experiments.leakage import DEFAULT_ATTACKS, DEFAULT_DEFENSES, LeakageConfig, adapt_attack, run_leakage

runner = CliRunner()

DEFENSE_SPECS = {"ssgd-shards": "ssgd-shards:m=2", "noise": "noise:sigma=0.01", "prune": "prune:p=50",
                 "dp": "dp:clip=1,sigma=0.5", "ssgd-noise": "ssgd-noise:sigma=0.01"}


def test_defaults_cover_every_registered_attack_and_defence():
    assert {a.split(":")[0] for a in DEFAULT_ATTACKS} == set(list_attacks())
    assert {d.split(":")[0] for d in DEFAULT_DEFENSES} == set(list_defenses())


def test_adaptive_attacker_knows_the_defence():
    from ssgd.defenses import get_defense

    assert adapt_attack("dlg-unit", get_defense("ssgd-layer"), 1).scope == "layer"
    a = adapt_attack("dlg-unit", get_defense("ssgd-shards:m=4"), 8)
    assert (a.shards, a.scope) == (4, "global")
    assert adapt_attack("dlg-unit:scope=global", get_defense("ssgd-layer"), 1).scope == "global"  # explicit wins
    assert adapt_attack("analytic", get_defense("ssgd-layer"), 1).rescale is True
    assert adapt_attack("dlg", get_defense("none"), 1, iters=7).iters == 7


@pytest.mark.parametrize("attack", sorted(set(DEFAULT_ATTACKS)))
def test_cli_every_attack_by_name(tmp_path, attack):
    out = tmp_path / attack
    res = runner.invoke(app, ["attack", "--attack", attack, "--defense", "ssgd-global", "--dataset", "digits",
                              "--batch-size", "2", "--iters", "2", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "result.json").read_text())
    for key in ("psnr", "ssim", "mse", "label_acc", "attack", "defense", "seconds"):
        assert key in r
    assert r["attack"].startswith(attack) and r["defense"] == "ssgd-global"
    assert all(isinstance(r[k], float) and math.isfinite(r[k]) for k in ("psnr", "ssim", "mse", "seconds"))
    assert (out / "reconstruction.png").stat().st_size > 0 and (out / "report.md").exists()


@pytest.mark.parametrize("defense", sorted(list_defenses()))
def test_cli_every_defence_by_name(tmp_path, defense):
    out = tmp_path / defense
    spec = DEFENSE_SPECS.get(defense, defense)
    res = runner.invoke(app, ["attack", "--attack", "idlg", "--defense", spec, "--dataset", "digits",
                              "--batch-size", "2", "--index", "5", "--iters", "2", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "result.json").read_text())
    assert r["defense"].startswith(defense)
    assert r["true_labels"] == r["true_labels"] and len(r["per_image"]) == 2


def test_cli_rejects_bad_names_and_values(tmp_path):
    res = runner.invoke(app, ["attack", "--attack", "dlgx", "--dataset", "digits", "--out", str(tmp_path / "a")])
    assert res.exit_code != 0 and "known attacks" in res.output
    res = runner.invoke(app, ["attack", "--defense", "ssgd-globl", "--dataset", "digits", "--out", str(tmp_path / "b")])
    assert res.exit_code != 0 and "known defences" in res.output
    res = runner.invoke(app, ["attack", "--index", "100000", "--dataset", "digits", "--out", str(tmp_path / "c")])
    assert res.exit_code != 0 and "--index" in res.output
    assert not (tmp_path / "a").exists()  # nothing half-written


def test_grid_writes_consistent_tables(tmp_path):
    cfg = LeakageConfig(datasets=["digits"], states=["untrained"], batch_sizes=[1, 2], images=2, dlg_iters=2,
                        inverting_iters=2, train_epochs=1, train_images=100, accuracy_epochs=1)
    report = run_leakage(cfg, tmp_path, progress=False)
    text = report.read_text()
    cells = list(csv.DictReader((tmp_path / "leakage.csv").open()))
    assert len(cells) == 2 * len(DEFAULT_ATTACKS) * len(DEFAULT_DEFENSES)
    for c in cells:
        assert int(c["images"]) == 2
        assert math.isfinite(float(c["psnr_mean"])) and float(c["psnr_std"]) >= 0
    per_image = list(csv.DictReader((tmp_path / "images.csv").open()))
    assert len(per_image) == 2 * len(cells)
    acc = list(csv.DictReader((tmp_path / "accuracy.csv").open()))
    assert len(acc) == len(DEFAULT_DEFENSES) and all(0 <= float(a["test_acc"]) <= 1 for a in acc)
    for f in ("grid_digits_untrained_b1.png", "grid_digits_untrained_b2.png", "privacy_vs_accuracy.png",
              "config.json", "leakage.md", "summary.json"):
        assert (tmp_path / f).exists(), f
        assert f in text or f in ("config.json", "leakage.md", "summary.json")
    assert "| ssgd-global |" in text and "Worst case per defence" in text


def test_grid_budget_stops_cleanly(tmp_path):
    cfg = LeakageConfig(datasets=["digits"], states=["untrained"], batch_sizes=[1], images=1,
                        attacks=["idlg"], defenses=["none"], dlg_iters=1, accuracy_epochs=1, train_images=50,
                        budget_minutes=1e-9)
    text = run_leakage(cfg, tmp_path, progress=False).read_text()
    assert "time budget ran out" in text


def test_config_errors():
    with pytest.raises(ValueError, match="divide images"):
        LeakageConfig(batch_sizes=[3], images=16).validate()
    with pytest.raises(ValueError, match="known defences"):
        LeakageConfig(defenses=["nope"]).validate()
    with pytest.raises(ValueError, match="model state"):
        LeakageConfig(states=["half"]).validate()


@pytest.mark.slow
def test_reproduce_leakage_quick_cli(tmp_path):
    res = runner.invoke(app, ["reproduce", "leakage", "--quick", "--datasets", "digits", "--images", "2",
                              "--batch-sizes", "1,2", "--dlg-iters", "3", "--inverting-iters", "3",
                              "--defenses", "none;ssgd-shards:m=2;dp:clip=1,sigma=1", "--out", str(tmp_path),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report.md").exists()
    cells = list(csv.DictReader((tmp_path / "leakage.csv").open()))
    assert {c["defense"] for c in cells} == {"none", "ssgd-shards:m=2", "dp:clip=1,sigma=1"}
    assert {c["batch"] for c in cells} == {"1", "2"}


@pytest.mark.slow
def test_label_recovery_on_fashion_mnist():
    from ssgd.attacks import recover_labels
    from ssgd.data import load_dataset
    from ssgd.defenses import get_defense
    from ssgd.models import build_model

    try:
        data = load_dataset("fashion-mnist")
    except Exception as e:  # noqa: BLE001 - the loader may be missing on a bare machine
        pytest.skip(f"Fashion-MNIST not available: {e}")
    model = build_model("lenet", data.shape, 10, seed=0)
    for defense in ("none", "ssgd-global", "ssgd-layer", "sign"):
        d = get_defense(defense)
        for i in range(10):
            x, y = data.x_train[i:i + 1], data.y_train[i:i + 1]
            assert recover_labels(d.shared_update(model, x, y), 10, 1).tolist() == y.tolist()
    assert torch.unique(data.y_train[:10]).numel() > 3
