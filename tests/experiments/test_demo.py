import json

from ssgd.data import ImageDataset, load_dataset
from ssgd.experiments.demo import run_demo


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
    assert all(isinstance(r["psnr"], float) for r in rows)
