"""``ssgd reproduce privacy``: both methods get the same (sigma, q, steps) and report the same epsilon."""

import csv
import math

import pytest
import torch

from ssgd.data import ImageDataset
from ssgd.experiments.dp_benchmark import fit_private
from ssgd.experiments.privacy import BENCHMARK_METHOD, PrivacyReproConfig
from ssgd.privacy import compute_epsilon


def _data():
    """Four classes, each a bright quadrant plus noise: learnable in a few private steps."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (240,), generator=g)
    t = torch.zeros(4, 1, 8, 8)
    t[0, 0, :4, :4] = t[1, 0, :4, 4:] = t[2, 0, 4:, :4] = t[3, 0, 4:, 4:] = 1.0
    x = (t[y] + 0.3 * torch.randn(240, 1, 8, 8, generator=g)).clamp(0, 1)
    return ImageDataset("synthetic", x[:200], y[:200], x[200:], y[200:], 4)


def test_ssgd_noise_and_opacus_spend_the_same_epsilon():
    cfg = PrivacyReproConfig(model="mlp", model_kwargs={"hidden": 16, "depth": 1}, batch_size=50, epochs=2,
                             lr=0.5, lr_grid=())
    data = _data()
    a, b = (fit_private(BENCHMARK_METHOD[m], data, cfg.run_config(), lr=cfg.lr, epochs=cfg.epochs, sigma=1.2,
                        seed=cfg.seed) for m in ("ssgd+noise", "opacus"))
    assert [r["steps"] for r in a] == [r["steps"] for r in b] == [4, 8]  # q = 50/200 = 1/4: 4 steps an epoch
    ref = compute_epsilon(1.2, 0.25, 8, cfg.delta)
    # ours (ssgd.privacy.PrivacyAccountant) and Opacus's PrivacyEngine, for the same mechanism
    assert a[-1]["epsilon"] == pytest.approx(ref) and b[-1]["epsilon_opacus"] == pytest.approx(ref)
    assert a[-1]["epsilon_opacus"] == pytest.approx(ref)
    assert [h["epsilon"] for h in a] == pytest.approx([h["epsilon"] for h in b])
    for r in (a[-1], b[-1]):  # both learn (chance is 0.25): a broken update, sampler or noise scale fails this
        assert r["test_acc"] >= 0.6, r


def test_config_and_cli_errors():
    import typer

    from ssgd.commands.reproduce_privacy import parse_epsilons

    assert parse_epsilons("1, 2,inf") == (1.0, 2.0, math.inf)
    with pytest.raises(typer.BadParameter, match="--epsilons .*'1,x'"):
        parse_epsilons("1,x")
    with pytest.raises(typer.BadParameter, match="must be > 0"):
        parse_epsilons("-1")
    with pytest.raises(ValueError, match="Unknown method 'dpsgd'"):
        PrivacyReproConfig(methods=("dpsgd",)).validate()
    with pytest.raises(ValueError, match="epsilon 0"):
        PrivacyReproConfig(epsilons=(0,)).validate()


@pytest.mark.slow
def test_reproduce_privacy_quick_writes_the_run_folder(tmp_path):
    from typer.testing import CliRunner

    from ssgd.cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["reproduce", "privacy", "--quick", "--no-progress", "--out", str(out),
                                   "--attack-sigmas", "0.5"])
    assert res.exit_code == 0, res.output
    for f in ("config.json", "report.md", "accuracy.csv", "accuracy.json", "attack.csv", "accuracy_vs_epsilon.png",
              "psnr_vs_epsilon.png"):
        assert (out / f).is_file(), f
    rows = list(csv.DictReader((out / "accuracy.csv").open()))
    assert {(r["method"], r["target_epsilon"]) for r in rows} == {
        (m, e) for m in ("ssgd+noise", "opacus") for e in ("4.0", "inf")}
    for r in rows:
        if r["target_epsilon"] != "inf":
            eps, eps_op = float(r["epsilon"]), float(r["epsilon_opacus"])
            assert eps == pytest.approx(eps_op) and 4.0 - 0.01 <= eps <= 4.0
    arows = [r for r in csv.DictReader((out / "attack.csv").open()) if r["defence"].startswith("ssgd-noise")]
    psnr = {float(r["sigma"]): float(r["psnr"]) for r in arows}
    sigma4 = next(float(r["sigma"]) for r in rows if r["target_epsilon"] == "4.0")
    assert set(psnr) == {0.0, sigma4, 0.5}
    # noise calibrated for epsilon = 4 leaves the attack less than the bare unit vector (sigma = 0) does
    assert psnr[sigma4] < psnr[0.0]
    # the extra sigma point is shown with the epsilon a training run with it would spend (the runs' q and steps)
    extra = next(r for r in arows if float(r["sigma"]) == 0.5)
    q, steps = float(rows[0]["sample_rate"]), int(rows[0]["steps"])
    assert float(extra["target_epsilon"]) == pytest.approx(compute_epsilon(0.5, q, steps, 1e-5))
    assert "| mnist | 4 |" in (out / "report.md").read_text()
    # --resume keeps the finished accuracy runs (and refuses a folder made with other settings)
    again = CliRunner().invoke(app, ["reproduce", "privacy", "--quick", "--no-progress", "--out", str(out),
                                     "--resume", "--attacks", "none"])
    assert again.exit_code == 0, again.output
    assert again.output.count("already in accuracy.csv") == 4
    assert list(csv.DictReader((out / "accuracy.csv").open())) == rows
    bad = CliRunner().invoke(app, ["reproduce", "privacy", "--quick", "--no-progress", "--out", str(out),
                                   "--resume", "--epochs", "3"])
    assert bad.exit_code == 2 and "epochs: saved 2, now 3" in bad.output
