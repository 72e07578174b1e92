"""benchmarks/gpu.sh on a CPU machine: the plan, the refusals, and a full run against a stand-in interpreter
that plays the GPU (it records every command and writes what each real step writes), so the script's own logic
-- step order, limits, the DP step's command line, the files it copies, the wheels -- is exercised for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.sh"
CHECKS = SCRIPT.with_name("gpu_checks.py")
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and timeout")

# The stand-in for `python3` on a GPU machine: logs its arguments, answers the CUDA probe, writes the files the
# real steps write, and runs `gpu_checks.py summary` with the real interpreter (that code is tested here too).
SHIM = r'''
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["SHIM_LOG"], "a") as f:
    f.write(json.dumps({"args": args, "pythonpath": os.environ.get("PYTHONPATH", "")}) + "\n")
def out(flag):
    return args[args.index(flag) + 1]
if args[:1] == ["-c"]:
    if "get_device_name" in args[1]:
        print("torch fake | Stand-in GPU")
    sys.exit(0)
if args[:2] == ["-m", "ssgd"] and args[2:4] == ["bench", "step"]:
    os.makedirs(out("--out"), exist_ok=True)
    row = dict(size="11.7M", n_params=11.7e6, n_tensors=62, momentum=0.0, scope="global", sgd_ms=0.15, ssgd_ms=0.2,
               ratio=1.33, fastest_ratio=1.3, syncs=0, ops=9, sgd_ops=1, launches=9, sgd_launches=1)
    json.dump({"rows": [row], "train_rows": []}, open(os.path.join(out("--out"), "results.json"), "w"))
elif args[:2] == ["-m", "ssgd"] and args[2:4] == ["reproduce", "privacy"]:
    os.makedirs(out("--out"), exist_ok=True)
    json.dump({"cells": []}, open(os.path.join(out("--out"), "dp_benchmark.json"), "w"))
    open(os.path.join(out("--out"), "report.md"), "w").write("# DP benchmark\n")
    open(os.path.join(out("--out"), "extra.csv"), "w").write("not copied\n")
elif args[:1] == ["benchmarks/gpu_checks.py"] and args[1] == "summary":
    sys.exit(subprocess.call([os.environ["REAL_PY"], *args]))
elif args[:1] == ["benchmarks/gpu_checks.py"]:
    path = out("--json")
    res = json.load(open(path)) if os.path.exists(path) else {}
    if args[1] == "whole-step":
        res["whole-step"] = {m: dict(batch=b, sgd_ms=10.0, ssgd_ms=10.05, ssgd_ratio=1.005, ssgd_step_syncs=0)
                             for m, b in (("resnet18", 256), ("mlp", 1024))}
        res["whole-step"]["resnet18"].update(  # a sync in the model's backward: SGD's too, not the optimizer's
            ssgd_step_syncs=1, sgd_step_syncs=1,
            ssgd_syncs=dict(forward_backward=1, step=0, sites=["forward_backward: x.py:7"]))
    else:
        res["ddp"] = {"nccl": {"ok": True, "fastest_step_ms": 2.0, "replicas_identical": True}}
    json.dump(res, open(path, "w"))
'''


def _run(*args: str, env: dict | None = None, python: str | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("OUT", "DP_ARGS", "BENCH_STEP_ARGS")}
    e["PYTHON"] = python or sys.executable
    e.update(env or {})
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=e, timeout=120)


def _shim(tmp_path: Path) -> tuple[str, Path, dict]:
    (tmp_path / "shim.py").write_text(SHIM)
    fake = tmp_path / "python3"
    fake.write_text(f'#!/bin/bash\nexec "{sys.executable}" "{tmp_path / "shim.py"}" "$@"\n')
    fake.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    data = tmp_path / "fmnist"
    data.mkdir()
    (data / "train-images-idx3-ubyte.gz").write_bytes(b"")
    env = {"SHIM_LOG": str(log), "REAL_PY": sys.executable, "SSGD_FMNIST_DIR": str(data)}
    return str(fake), log, env


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_full_run_with_a_stand_in_gpu(tmp_path):
    fake, log, env = _shim(tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "opacus-1.5-py3-none-any.whl").write_bytes(b"")
    res = tmp_path / "res"
    r = _run(str(res), "--dp-budget", "40", python=fake,
             env={**env, "WHEELS_DIR": str(wheels), "DP_ARGS": "--epochs 1"})
    assert r.returncode == 0, r.stderr
    calls = [c["args"] for c in _calls(log)]
    # the wheels first, without an index, into a folder that the later steps see on PYTHONPATH
    pip = next(c for c in calls if c[:3] == ["-m", "pip", "install"])
    assert "--no-deps" in pip and "--no-index" in pip and pip[-1].endswith("opacus-1.5-py3-none-any.whl")
    target = pip[pip.index("--target") + 1]
    privacy = next(c for c in _calls(log) if c["args"][2:4] == ["reproduce", "privacy"])
    assert target in privacy["pythonpath"] and str(REPO / "src") in privacy["pythonpath"]
    # the DP step's command line, as wired
    assert privacy["args"] == ["-m", "ssgd", "reproduce", "privacy", "--benchmark", "--device", "cuda", "--data-dir",
                               env["SSGD_FMNIST_DIR"], "--out", privacy["args"][10], "--no-progress", "--workers", "8",
                               "--epochs", "1"]
    # steps in order; Table 2 only on request
    order = [" ".join(c[:4]) for c in calls if c[:1] != ["-c"] and c[:2] != ["-m", "pip"]]
    assert [o.split()[1] if o.startswith("-m") else o.split()[1] for o in order] == [
        "pytest", "ssgd", "whole-step", "ddp", "ssgd", "summary"]
    assert not any("table2" in c for c in calls)
    bench = next(c for c in calls if c[2:4] == ["bench", "step"])
    assert bench[bench.index("--sizes") + 1] == "11.7M,124M,1B" and bench[bench.index("--device") + 1] == "cuda"
    # at most 8 flat files, with the names the lead collects
    files = sorted(p.name for p in res.iterdir())
    assert files == ["bench_step.json", "dp_benchmark.json", "dp_report.md", "gpu_checks.json", "run.log", "summary.md"]
    assert all(p.is_file() for p in res.iterdir())
    summary = (res / "summary.md").read_text()
    for step in ("tests", "bench", "whole", "ddp", "dp"):
        assert f"| {step} | ok |" in summary
    assert "Stand-in GPU" in summary and "| 11.7M (11.7M) | 62 |" in summary and "| resnet18 | 256 |" in summary
    assert "DDP hook over nccl: ok" in summary
    assert "| 1.33x | 1.30x | <= 1.5 | yes | 0 | 9, 1 | 9, 1 |" in summary
    # the whole step's syncs, SSGD's and SGD's, and those in opt.step(): the row is not met while any is left
    assert "| 1.005x | <= 1.01 | **no** | 1 (0) | 1 | forward_backward: x.py:7 |" in summary
    assert "| mlp | 1024 | 10.00 | 10.05 | 1.005x | <= 1.1 | yes | 0 (0) | None | - |" in summary


def test_a_failing_or_slow_step_is_recorded_and_the_run_goes_on(tmp_path):
    fake, log, env = _shim(tmp_path)
    slow = tmp_path / "slow.py"
    slow.write_text(SHIM.replace("elif args[:2] == [\"-m\", \"ssgd\"] and args[2:4] == [\"reproduce\", \"privacy\"]:",
                                 "elif args[2:4] == ['reproduce', 'privacy'] and __import__('time').sleep(60):"))
    Path(fake).write_text(f'#!/bin/bash\nexec "{sys.executable}" "{slow}" "$@"\n')
    res = tmp_path / "res"
    r = _run(str(res), "--dp-budget", "5", "--table2", "--table2-budget", "30", python=fake, env=env)
    assert r.returncode == 0, r.stderr
    summary = (res / "summary.md").read_text()
    assert "| dp | timed out after 5s |" in summary and "| table2 | ok |" in summary
    assert not (res / "dp_benchmark.json").exists()
    table2 = next(c["args"] for c in _calls(log) if c["args"][2:4] == ["reproduce", "table2"])
    assert table2[table2.index("--device") + 1] == "cuda"


def test_dry_run_plan_fits_the_budgets(tmp_path):
    r = _run("--dry-run", str(tmp_path / "res"), env={"SSGD_FMNIST_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "res").exists()  # a dry run writes nothing
    lines = [line for line in r.stdout.splitlines() if line.strip()[:2] in {f"{k}." for k in range(1, 7)}]
    assert [line.split()[1] for line in lines] == ["tests", "bench", "whole", "ddp", "dp", "table2"]
    limits = [int(line.split("(")[1].split("s)")[0]) for line in lines[:4]]
    assert sum(limits) <= 240  # the optimizer's steps: 4 minutes at most
    assert "at most 570s in all" in r.stdout  # default total 9.5 minutes: Table 2 is off by default
    assert "table2  off" in lines[-1]
    on = _run("--dry-run", "--table2", "--dp-budget", "100", "x", env={"SSGD_FMNIST_DIR": str(tmp_path)})
    assert "(100s)  ssgd reproduce privacy --benchmark --device cuda" in on.stdout and "batch-sizes 1024" in on.stdout
    assert "results in x" in _run("--dry-run", env={"OUT": "x"}).stdout  # $OUT is the default folder


@pytest.mark.parametrize("args, message", [
    ((), "give a results folder"),
    (("--dp-budget", "abc", "x"), "--dp-budget must be a whole number"),
    (("--dp-budget", "2", "x"), "too short"),
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
    c = subprocess.run([sys.executable, str(CHECKS), "whole-step"], capture_output=True, text=True, timeout=120)
    assert c.returncode == 3 and "no CUDA GPU" in c.stderr


def test_gpu_checks_code_path_runs_on_cpu(tmp_path):
    out = tmp_path / "checks.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run([sys.executable, str(CHECKS), "whole-step", "--cpu-smoke", "--samples", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())["whole-step"]
    assert res["resnet18"]["ssgd_ratio"] > 0 and res["mlp"]["batch"] == 8
    assert res["mlp"]["ssgd_step_syncs"] is None  # counted on CUDA only
    kern = res["kernels"]["tiny"]  # the kernels a step is made of, timed alone
    assert kern["tensors"] == 4 and all(kern[k] > 0 for k in ("sgd_foreach_add", "foreach_norm", "fused_tensor_lr"))
    s = subprocess.run([sys.executable, str(CHECKS), "summary", "--json", str(out)], capture_output=True, text=True,
                       timeout=120, env=env, cwd=REPO)
    assert s.returncode == 0 and "| mlp | 8 |" in s.stdout and "no bench_step.json" in s.stdout
    assert "| tiny | 4 | " in s.stdout and "foreach_div_0dim_list" in s.stdout
