import csv
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from ssgd.attacks import list_attacks
from ssgd.cli import app
from ssgd.defenses import list_defenses
from ssgd.data import load_dataset
from ssgd.experiments.leakage import DEFAULT_ATTACKS, DEFAULT_DEFENSES, LeakageConfig, adapt_attack, run_leakage
from ssgd.report import ConfigMismatchError

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
    # analytic-aware is told the defence: the sign, or the noise std of one release and the draws averaged
    assert adapt_attack("analytic-aware", get_defense("sign"), 1).sign is True
    a = adapt_attack("analytic-aware", get_defense("ssgd-noise:sigma=0.01"), 1)
    assert (a.noise, a.draws, a.sign) == (0.01, 16, False)
    assert adapt_attack("analytic-aware", get_defense("dp:clip=2,sigma=1"), 4).noise == 0.5  # sigma * clip / B
    assert adapt_attack("dlg", get_defense("none"), 1, iters=7).iters == 7


@pytest.mark.parametrize("attack", sorted(set(DEFAULT_ATTACKS)))
def test_cli_every_attack_by_name(tmp_path, attack):
    out = tmp_path / attack
    res = runner.invoke(app, ["attack", "--attack", attack, "--defense", "ssgd-global", "--dataset", "digits",
                              "--batch-size", "2", "--iters", "2", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "result.json").read_text())
    for key in ("psnr", "ssim", "mse", "label_acc", "attack", "defense", "seconds", "iterations", "restarts", "init"):
        assert key in r
    if not attack.startswith("analytic"):  # every result records its budget: iterations run, restarts, init
        assert r["iterations"] == 2 and r["restarts"] >= 1 and r["init"] in ("uniform", "mean")
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
    assert r["true_labels"] == load_dataset("digits").y_train[5:7].tolist() and len(r["per_image"]) == 2


def test_cli_rejects_bad_names_and_values(tmp_path):
    res = runner.invoke(app, ["attack", "--attack", "dlgx", "--dataset", "digits", "--out", str(tmp_path / "a")])
    assert res.exit_code != 0 and "known attacks" in res.output
    res = runner.invoke(app, ["attack", "--defense", "ssgd-globl", "--dataset", "digits", "--out", str(tmp_path / "b")])
    assert res.exit_code != 0 and "known defences" in res.output
    res = runner.invoke(app, ["attack", "--index", "100000", "--dataset", "digits", "--out", str(tmp_path / "c")])
    assert res.exit_code != 0 and "--index" in res.output
    assert not (tmp_path / "a").exists()  # nothing half-written


@pytest.mark.parametrize("args,needle", [(["--iters", "-3"], "--iters -3"), (["--iters", "0"], "--iters 0"),
                                         (["--defense", "ssgd-shards:m=4", "--batch-size", "2"], "m=4"),
                                         (["--defense", "ssgd-shards:m=4", "--batch-size", "6"], "multiple of 4")])
def test_cli_refuses_what_it_used_to_accept_silently(tmp_path, args, needle):
    """--iters -3 used to run; ssgd-shards:m=4 at batch 2 used to become m=2 without a word."""
    res = runner.invoke(app, ["attack", "--attack", "idlg", "--dataset", "digits", "--out", str(tmp_path / "x"),
                              "--no-progress", *args])
    assert res.exit_code == 2 and needle in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "x").exists()


def _tiny(**kw):
    base = dict(datasets=["digits"], states=["untrained"], batch_sizes=[1, 2], images=2, other_images=2, dlg_iters=2,
                inverting_iters=2, restarts=1, curve_budgets=[0.5, 1.0], curve_images=2, train_epochs=1,
                train_images=100, accuracy_epochs=1)
    base.update(kw)
    return LeakageConfig(**base)


def test_grid_writes_consistent_tables(tmp_path):
    cfg = _tiny()
    res = run_leakage(cfg, tmp_path, progress=False)
    text = res.report.read_text()
    assert res.text == text and res.tables["cells"]
    cells = list(csv.DictReader((tmp_path / "leakage.csv").open()))
    # ssgd-shards:m=4 cannot run at B = 1 or 2 (never silently lowered to m = B): n/a, not a number; nor does
    # dlg-aware against a defence whose aware attackers are others (the SSGD rows) or that has none to know
    from ssgd.defenses import get_defense
    from ssgd.experiments.leakage import not_applicable

    runs = [(b, a, d) for b in (1, 2) for a in DEFAULT_ATTACKS for d in DEFAULT_DEFENSES
            if not_applicable(a, get_defense(d), b) is None]
    # dlg-aware is n/a on none, ssgd-global/layer, fp16; analytic-aware also on prune (it targets sign and noise)
    assert len(runs) == 2 * len(DEFAULT_ATTACKS) * (len(DEFAULT_DEFENSES) - 1) - 2 * 4 - 2 * 5
    assert len(cells) == len(runs)
    assert not [c for c in cells if c["defense"].startswith("ssgd-shards")]
    assert "| ssgd-shards:m=4 | n/a |" in text
    for c in cells:
        assert int(c["images"]) == 2
        assert math.isfinite(float(c["psnr_mean"])) and float(c["psnr_std"]) >= 0
        if not c["attack"].startswith("analytic"):  # the budget is recorded per cell
            assert int(c["iterations"]) == 2 and int(c["restarts"]) == 1 and c["init"] in ("uniform", "mean")
    per_image = list(csv.DictReader((tmp_path / "images.csv").open()))
    assert len(per_image) == 2 * len(cells)
    acc = list(csv.DictReader((tmp_path / "accuracy.csv").open()))
    assert len(acc) == len(DEFAULT_DEFENSES) and all(0 <= float(a["test_acc"]) <= 1 for a in acc)
    for f in ("grid_digits_untrained_b1.png", "grid_digits_untrained_b2.png", "privacy_vs_accuracy.png",
              "budget_vs_psnr.png"):
        assert (tmp_path / f).stat().st_size > 0 and f"![{f}]({f})" in text, f
    for f in ("config.json", "leakage.md", "summary.json", "curve.csv", "leakage.json"):
        assert (tmp_path / f).exists(), f
    # leakage.json: the same cells as leakage.csv, complete, with the accuracies; export rebuilds it exactly
    results = json.loads((tmp_path / "leakage.json").read_text())
    assert len(results["cells"]) == len(cells) and not results["partial"]
    assert results["cells_done"] == results["cells_total"] == 2 * len(DEFAULT_ATTACKS) * len(DEFAULT_DEFENSES)
    assert len(results["na"]) == 2 * len(DEFAULT_ATTACKS) * len(DEFAULT_DEFENSES) - len(runs)
    assert set(results["accuracy"]) == set(DEFAULT_DEFENSES)
    from ssgd.experiments.leakage import export_results

    out = tmp_path / "published"
    out.mkdir()
    assert export_results(tmp_path, out / "leakage.json", figures_to=out) == results
    assert (out / "leakage_budget_vs_psnr.png").read_bytes() == (tmp_path / "budget_vs_psnr.png").read_bytes()
    assert (out / "leakage_grid_digits_untrained_b1.png").exists() and (out / "leakage_privacy_vs_accuracy.png").exists()
    curve = list(csv.DictReader((tmp_path / "curve.csv").open()))
    assert {c["defense"] for c in curve} == {"ssgd-global", "ssgd-layer"}  # shards: no batch fits m=4
    assert sorted({int(c["iterations"]) for c in curve}) == [1, 2]
    assert "| ssgd-global |" in text and "Worst case per defence" in text
    # ε of the DP rows comes from the privacy layer's accountant, not from the defence
    from ssgd.privacy import compute_epsilon

    assert f"`dp:clip=1,sigma=1`: noise multiplier 1, ε = {compute_epsilon(1.0, 1.0, 1, 1e-5):.3g}" in text


def test_low_cells_are_rerun_at_twice_the_budget(tmp_path):
    """A cell below the threshold counts as protection only if a rerun at twice the iterations stays below."""
    cfg = _tiny(batch_sizes=[1], attacks=["dlg", "analytic"], defenses=["none", "ssgd-global"], confirm_below=100.0,
                curve_budgets=[], accuracy_epochs=0, dlg_iters=3)
    run_leakage(cfg, tmp_path, progress=False)
    cells = {(c["attack"], c["defense"]): c for c in
             (json.loads(p.read_text()) for p in (tmp_path / "cells").glob("*.json"))}
    for d in ("none", "ssgd-global"):
        c = cells[("dlg", d)]
        assert c["iterations"] == 3 and c["confirm"]["iterations"] == 6
        assert c["protects"] == (c["psnr_mean"] < 100 and c["confirm"]["psnr_mean"] < 100)
        assert len(c["confirm"]["rows"]) == len(c["rows"]) == 2
    a = cells[("analytic", "none")]
    assert "confirm" not in a  # closed form: no budget to double, its one result decides
    assert a["iterations"] == 0 and a["protects"] == (a["psnr_mean"] < 100)
    rows = {(r["attack"], r["defense"]): r for r in csv.DictReader((tmp_path / "leakage.csv").open())}
    assert int(rows[("dlg", "none")]["iterations_2x"]) == 6


def test_grid_resumes_at_cell_granularity(tmp_path):
    cfg = _tiny(batch_sizes=[1], attacks=["idlg"], defenses=["none", "ssgd-global"], curve_budgets=[],
                accuracy_epochs=0)
    run_leakage(cfg, tmp_path, progress=False)
    files = sorted((tmp_path / "cells").glob("*.json"))
    assert len(files) == 2
    # mark one finished cell; drop the other: a resume keeps the first, recomputes only the second
    kept = json.loads(files[0].read_text())
    kept["rows"][0]["seconds"] = 12345.0  # a mark a run could have written (a forged number would be refused)
    files[0].write_text(json.dumps(kept))
    files[1].unlink()
    run_leakage(cfg, tmp_path, resume=True, progress=False)
    assert json.loads(files[0].read_text())["rows"][0]["seconds"] == 12345.0 and files[1].exists()
    with pytest.raises(ConfigMismatchError, match="dlg_iters"):
        run_leakage(_tiny(batch_sizes=[1], attacks=["idlg"], defenses=["none", "ssgd-global"], curve_budgets=[],
                          accuracy_epochs=0, dlg_iters=5), tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("text,expected", [("none;ssgd-global", ["none", "ssgd-global"]),
                                           ("none,sign", ["none", "sign"]),
                                           ("dp:clip=1,sigma=1", ["dp:clip=1,sigma=1"]),
                                           ("none;dp:clip=1,sigma=1;", ["none", "dp:clip=1,sigma=1"])])
def test_cli_spec_lists(text, expected):
    from ssgd.commands.reproduce_leakage import _specs

    assert _specs(text, "--defenses", "none") == expected


def test_cli_resume_needs_an_existing_folder_and_refuses_overwrite(tmp_path):
    args = ["reproduce", "leakage", "--datasets", "digits", "--images", "1", "--other-images", "1", "--batch-sizes",
            "1", "--states", "untrained", "--attacks", "idlg", "--defenses", "none", "--dlg-iters", "1",
            "--restarts", "1", "--accuracy-epochs", "0", "--no-progress", "--out", str(tmp_path / "g")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output  # never overwrites a finished grid
    res = runner.invoke(app, args + ["--resume"])
    assert res.exit_code == 0 and "idlg" in res.output


def test_grid_budget_stops_cleanly(tmp_path):
    cfg = LeakageConfig(datasets=["digits"], states=["untrained"], batch_sizes=[1], images=1, other_images=1,
                        attacks=["idlg"], defenses=["none"], dlg_iters=1, accuracy_epochs=1, train_images=50,
                        budget_minutes=1e-9)
    text = run_leakage(cfg, tmp_path, progress=False).report.read_text()
    assert "time budget ran out" in text


def test_config_errors():
    with pytest.raises(ValueError, match="divide images"):
        LeakageConfig(batch_sizes=[3], images=16).validate()
    with pytest.raises(ValueError, match="known defences"):
        LeakageConfig(defenses=["nope"]).validate()
    with pytest.raises(ValueError, match="model state"):
        LeakageConfig(states=["half"]).validate()
    with pytest.raises(ValueError, match="dlg_iters=-3"):
        LeakageConfig(dlg_iters=-3).validate()
    with pytest.raises(ValueError, match="init"):
        LeakageConfig(init="zeros").validate()


@pytest.mark.slow
def test_reproduce_leakage_quick_cli(tmp_path):
    res = runner.invoke(app, ["reproduce", "leakage", "--quick", "--datasets", "digits", "--images", "2",
                              "--other-images", "2", "--batch-sizes", "1,2", "--dlg-iters", "3", "--inverting-iters", "3",
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


def _result_row(batch, attack, defense, psnr, psnr_2x=None, protects=False, dataset="mnist", state="untrained"):
    return {"dataset": dataset, "state": state, "model": "lenet", "batch": batch, "attack": attack, "defense": defense,
            "psnr_mean": psnr, "psnr_std": 0.5, "ssim_mean": 0.1, "label_acc_mean": 1.0, "images": 8,
            "attack_spec": attack, "iterations": 300, "restarts": 2, "init": "mean", "psnr_2x_mean": psnr_2x,
            "iterations_2x": 600 if psnr_2x is not None else 0, "protects": protects}


def test_worst_case_marks_protection_only_when_every_attack_is_below_twice():
    from ssgd.experiments.leakage import cells_markdown, worst_case_markdown

    cells = [_result_row(1, "dlg", "ssgd-layer", 3.1, 3.1, True), _result_row(1, "idlg", "ssgd-layer", 3.2, 3.2, True),
             _result_row(1, "dlg", "none", 48.0), _result_row(1, "idlg", "none", 49.0),
             _result_row(4, "dlg", "ssgd-layer", 3.0, 3.0, True), _result_row(4, "idlg", "ssgd-layer", 8.0, 12.0),
             _result_row(8, "dlg", "ssgd-layer", 3.0, 3.0, True)]
    grid = {"datasets": ["mnist", "fashion-mnist"], "states": ["untrained", "trained"], "batch_sizes": [1, 4, 8]}
    results = {"config": {**grid, "attacks": ["dlg", "idlg"], "defenses": ["none", "ssgd-layer", "ssgd-shards:m=4"]},
               "cells": cells, "na": [["mnist", "untrained", 1, a, "ssgd-shards:m=4"] for a in ("dlg", "idlg")],
               "cells_done": 9, "cells_total": 18, "partial": True, "accuracy": {"none": 0.91},
               "accuracy_dataset": "mnist",
               "priors": {"mnist": 11.69, "fashion-mnist": 11.5}}
    md = worst_case_markdown(results)
    assert "| none | 49.0 (idlg) | – | – | 0.910 |" in md
    # B=1: both attacks protected; B=4: idlg's 2x rerun rose above 10 dB; B=8: idlg has not run yet
    assert "| ssgd-layer | 3.2 (idlg) ✓ | 8.0 (idlg) | 3.0 (dlg)⁺ | – |" in md
    assert "| ssgd-shards:m=4 | n/a | – | – | – |" in md and "9 of 18 cells finished" in md
    assert "scores 11.7 dB on mnist, 11.5 dB on fashion-mnist" in md
    assert "11.5 dB on fashion-mnist" not in worst_case_markdown(results, "mnist")
    full = cells_markdown(results)
    assert full.count("## mnist, untrained model, batch") == 3
    assert "| ssgd-layer | 3.1±0.5 / 0.10 (2×: 3.1, held) | 3.2±0.5 / 0.10 (2×: 3.2, held) | ✓ |" in full
    assert "| none | 48.0±0.5 / 0.10 | 49.0±0.5 / 0.10 | ✗ |" in full
    head = cells_markdown(results, only=("mnist", "untrained", 4), compact=True)
    assert "##" not in head and "| ssgd-layer | **3.0 (2×: 3.0)** | 8.0 (2×: 12.0) | ✗ |" in head
    assert "| ssgd-shards:m=4 | – | – | – |" in head
    # the accuracies were measured on MNIST: never printed beside another dataset's columns
    assert worst_case_markdown(results, "fashion-mnist").splitlines()[0] == "| defence |"
    assert md.splitlines()[0].endswith("| test acc. (mnist, trained with it) |")
    # a closed-form attack has no budget to double: below the threshold once is final
    results["cells"] = [_result_row(1, "dlg", "sign", 3.0, 3.1, True), _result_row(1, "analytic", "sign", 8.5,
                                                                                    protects=True)]
    results["config"] = {**grid, "attacks": ["dlg", "analytic"], "defenses": ["sign"]}
    assert "| sign | 8.5 (analytic) ✓ | 0.910 |" not in worst_case_markdown(results)  # no accuracy for sign
    assert "| sign | 8.5 (analytic) ✓ | – |" in worst_case_markdown(results)
    assert "| sign | **3.0 (2×: 3.1)** | **8.5** | ✓ |" in cells_markdown(results, only=("mnist", "untrained", 1),
                                                                          compact=True)
    # an attack that does not apply to a defence (n/a) does not block its verdict; the aware one counts
    results["config"] = {**grid, "attacks": ["dlg", "dlg-aware"], "defenses": ["sign", "ssgd-layer"]}
    results["cells"] = [_result_row(1, "dlg", "sign", 3.0, 3.1, True), _result_row(1, "dlg-aware", "sign", 12.5),
                        _result_row(1, "dlg", "ssgd-layer", 3.0, 3.1, True)]
    results["na"] = [["mnist", "untrained", 1, "dlg-aware", "ssgd-layer"]]
    md = worst_case_markdown(results)
    assert "| ssgd-layer | 3.0 (dlg) ✓ |" in md and "| sign | 12.5 (dlg-aware) |" in md
    head = cells_markdown(results, only=("mnist", "untrained", 1), compact=True)
    assert "| sign | **3.0 (2×: 3.1)** | 12.5 | ✗ |" in head and "| ssgd-layer | **3.0 (2×: 3.1)** | n/a | ✓ |" in head


def test_prior_psnr_is_what_a_reconstruction_that_learned_nothing_scores():
    """The reference line: the mean image scores far below a copy and above uninformed noise."""
    from ssgd.experiments.leakage import cell_images, prior_psnr
    from ssgd.metrics import psnr_per_image

    data = load_dataset("digits")
    prior = prior_psnr(data, 8, 0)
    x, _ = cell_images(data, 8, 0)
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    assert sum(psnr_per_image(noise, x)) / 8 + 3 < prior < 20
    assert prior_psnr(data, 8, 1) != prior  # the evaluation images follow the seed


def test_two_shards_split_the_grid_without_running_a_cell_twice(tmp_path):
    """--shard 0/2 and 1/2 into one folder: disjoint jobs whose union is the whole grid, same cells as one run."""
    kw = dict(batch_sizes=[1, 2], attacks=["idlg", "dlg-unit"], defenses=["none", "ssgd-global"], curve_budgets=[],
              accuracy_epochs=0)
    run_leakage(_tiny(**kw), tmp_path / "whole", progress=False)
    whole = {p.name: json.loads(p.read_text()) for p in (tmp_path / "whole/cells").glob("*.json")}
    shared = tmp_path / "shared"
    first = _tiny(**kw).run(shared, resume=True, progress=False, shard=(0, 2))
    names0 = {p.name for p in (shared / "cells").glob("*.json")}
    assert names0 and names0 < set(whole)  # shard 0 ran only its jobs
    res = _tiny(**kw).run(shared, resume=True, progress=False, shard=(1, 2))
    both = {p.name: json.loads(p.read_text()) for p in (shared / "cells").glob("*.json")}
    assert set(both) == set(whole)
    for name, cell in both.items():  # seeded per cell: the split changes nothing
        assert cell["psnr_mean"] == pytest.approx(whole[name]["psnr_mean"]), name
    assert len(res.tables["cells"]) == len(whole) > len(first.tables["cells"])
    results = json.loads((shared / "leakage.json").read_text())
    assert not results["partial"] and results["cells_done"] == results["cells_total"] == len(whole)
    with pytest.raises(ValueError, match="0 <= k < n"):
        _tiny(**kw).run(shared, shard=(2, 2))


@pytest.mark.parametrize("args, needle", [(["--shard", "2/2"], "K must be in 0..N-1"),
                                          (["--shard", "a/b"], "give K/N"), (["--shard", "0/2"], "needs --out")])
def test_cli_shard_is_validated(args, needle):
    r = runner.invoke(app, ["reproduce", "leakage", "--quick", *args])
    assert r.exit_code != 0 and needle in r.output


def test_first_orders_the_work_not_the_cells(tmp_path):
    """--first runs the named attacks' cells before the others; the cells are the same."""
    kw = dict(batch_sizes=[1], attacks=["idlg", "dlg-aware"], defenses=["none", "sign"], curve_budgets=[],
              accuracy_epochs=0)
    res = _tiny(**kw).run(tmp_path, progress=False, first=("dlg-aware",))
    cells = {p.name: json.loads(p.read_text()) for p in (tmp_path / "cells").glob("*.json")}
    assert len(cells) == 4 and len(res.tables["cells"]) == 3  # dlg-aware x none is n/a
    order = sorted(cells.values(), key=lambda c: (tmp_path / "cells").joinpath(
        next(n for n, v in cells.items() if v is c)).stat().st_mtime_ns)
    assert [c["attack"] for c in order[:2]] == ["dlg-aware", "dlg-aware"]
    with pytest.raises(ValueError, match="not attacks of this grid"):
        _tiny(**kw).run(tmp_path, resume=True, first=("inverting",))


def test_resume_keeps_the_attacked_models_accuracies(tmp_path):
    """A resumed call that builds no model (every cell finished) keeps the earlier calls' model accuracies in
    summary.json, which export_results publishes as model_acc (they were dropped before)."""
    kw = dict(batch_sizes=[1], attacks=["analytic"], defenses=["none"], curve_budgets=[], accuracy_epochs=0)
    _tiny(**kw).run(tmp_path, progress=False)
    first = json.loads((tmp_path / "summary.json").read_text())["model_acc"]
    assert set(first) == {"digits/untrained/mlp"}
    _tiny(**kw).run(tmp_path, resume=True, progress=False)
    assert json.loads((tmp_path / "summary.json").read_text())["model_acc"] == first
