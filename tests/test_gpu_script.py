"""benchmarks/gpu.sh on a CPU machine: syntax, help, the printed plan, and clear refusals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.sh"
CHECKS = SCRIPT.with_name("gpu_checks.py")
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "OUT"}
    e["PYTHON"] = sys.executable
    e.update(env or {})
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=e, timeout=120)


def test_syntax_and_help():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    r = _run("--help")
    assert r.returncode == 0
    for word in ("--dry-run", "--budget", "--data-dir", "pytest -k cuda", "bench step", "NCCL", "table2"):
        assert word in r.stdout, word


def test_dry_run_prints_the_plan_within_the_budget(tmp_path):
    r = _run("--dry-run", str(tmp_path / "res"))
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "res").exists()  # a dry run writes nothing
    lines = [line for line in r.stdout.splitlines() if line.strip()[:2] in {f"{k}." for k in range(1, 7)}]
    assert [line.split()[1] for line in lines] == ["tests", "bench", "step-1b", "whole", "ddp", "table2"]
    assert "--device cuda --batch-sizes 1024,4096,8192" in lines[-1] or "skipped" in lines[-1]
    # the step limits add up to the budget: nothing is planned past it
    short = _run("--dry-run", "--budget", "300", str(tmp_path / "res"))
    assert short.returncode == 0 and "table2  skipped" in short.stdout
    assert "results in " + str(tmp_path / "res") in r.stdout
    assert "results in x" in _run("--dry-run", env={"OUT": "x"}).stdout  # $OUT is the default folder


@pytest.mark.parametrize("args, message", [
    ((), "give a results folder"),
    (("--budget", "abc", "x"), "--budget must be a whole number"),
    (("--budget", "60", "x"), "too short"),
    (("--frobnicate", "x"), "unknown option --frobnicate"),
    (("a", "b"), "one results folder only"),
    (("--data-dir",), "--data-dir needs a folder"),
])
def test_bad_arguments_are_refused_in_one_line(args, message):
    r = _run(*args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_to_run_without_cuda(tmp_path):
    r = _run(str(tmp_path / "res"))
    assert r.returncode == 3 and "no CUDA GPU is visible" in r.stderr and "--dry-run" in r.stderr
    assert not (tmp_path / "res").exists()
    c = subprocess.run([sys.executable, str(CHECKS), "step-1b"], capture_output=True, text=True, timeout=120)
    assert c.returncode == 3 and "no CUDA GPU" in c.stderr
    bad = subprocess.run([sys.executable, str(CHECKS), "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_gpu_checks_code_path_runs_on_cpu(tmp_path):
    out = tmp_path / "checks.json"
    r = subprocess.run([sys.executable, str(CHECKS), "step-1b", "--cpu-smoke", "--samples", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    import json

    res = json.loads(out.read_text())["step-1b"]
    assert res["device"] == "cpu" and res["sgd_ms"] > 0 and res["ssgd_ratio"] > 0 and res["tensors"] == 28
    assert res["ssgd_syncs_per_step"] is None  # counted on CUDA only
    d = subprocess.run([sys.executable, str(CHECKS), "ddp", "--cpu-smoke"], capture_output=True, text=True, timeout=120)
    assert d.returncode == 2 and "does not apply" in d.stderr
