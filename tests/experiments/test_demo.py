import json

from ssgd.data import ImageDataset, load_dataset
from ssgd.experiments.demo import leak_verdict, run_demo


def test_demo_attacks_one_shared_update_of_each_run(tmp_path):
    d = load_dataset("digits")
    small = ImageDataset("digits", d.x_train[:256], d.y_train[:256], d.x_test[:100], d.y_test[:100], 10)
    report = run_demo(tmp_path, epochs=1, progress=False, data=small, attack_iters=5, batch_size=64)
    text = report.read_text()
    assert "What the shared update leaks" in text and "![reconstructions](attacks.png)" in text
    assert (tmp_path / "attacks.png").stat().st_size > 0
    rows = json.loads((tmp_path / "summary.json").read_text())["attacks"]
    assert {(r["run"], r["model"], r["attack"]) for r in rows} == {
        (run, model, a) for run in ("SGD", "SSGD (global)") for model in ("LeNet, step 1", "convnet, trained")
        for a in ("dlg", "dlg-unit")}
    assert {r["shared"] for r in rows} == {"none", "ssgd-global"}
    # every measured PSNR is a real score and appears in the verdict written from it
    assert all(0 < r["psnr"] <= 100 and r["iterations"] == 5 for r in rows)
    assert leak_verdict(rows) in text
    for r in rows:
        assert f"`{r['attack']}` {r['psnr']:.1f} dB" in text


def _rows(dlg_ssgd, unit_ssgd):
    return [{"run": "SGD", "model": "m", "shared": "none", "attack": "dlg", "psnr": 35.0},
            {"run": "SSGD (global)", "model": "m", "shared": "ssgd-global", "attack": "dlg", "psnr": dlg_ssgd},
            {"run": "SSGD (global)", "model": "m", "shared": "ssgd-global", "attack": "dlg-unit", "psnr": unit_ssgd}]


def test_verdict_follows_the_numbers():
    """The old report printed one fixed verdict whatever was measured."""
    stops_dlg_only = leak_verdict(_rows(5.0, 31.0))
    assert "stops plain DLG (5.0 dB) but not" in stops_dlg_only and "31.0 dB" in stops_dlg_only
    neither = leak_verdict(_rows(6.0, 7.0))
    assert "neither attack recovered" in neither and "stops plain DLG" not in neither
    both = leak_verdict(_rows(25.0, 30.0))
    assert "leaks to both attacks" in both
    assert len({stops_dlg_only, neither, both}) == 3


def test_demo_refuses_zero_epochs_and_records_its_settings(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="epochs=0"):
        run_demo(tmp_path / "none", epochs=0, progress=False)
    assert not (tmp_path / "none").exists()


def test_readme_section_is_rendered_from_the_summary_and_hostile_input_refused(tmp_path):
    import pytest

    from ssgd.experiments.demo import export_summary, load_summary, summary_markdown

    d = load_dataset("digits")
    small = ImageDataset("digits", d.x_train[:128], d.y_train[:128], d.x_test[:50], d.y_test[:50], 10)
    run_demo(tmp_path, epochs=1, progress=False, data=small, attack_iters=0, batch_size=64, model="mlp")
    summary = export_summary(tmp_path, tmp_path / "demo.json")
    assert summary["settings"]["threads"] == 1 and summary["settings"]["attack_iters"] == 0
    md = summary_markdown(load_summary(tmp_path / "demo.json"))
    assert " / ".join(f"{r['test_acc']:.3f}" for r in summary["runs"]) in md and "1 torch thread" in md
    bad = json.loads((tmp_path / "demo.json").read_text())
    bad["runs"][0]["optimizer"] = "x | <script>"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="optimizer"):
        load_summary(tmp_path / "bad.json")
