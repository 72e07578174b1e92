"""Wall time of a quick reproduction with the CLI's default thread choice against torch's own default
(every core), on idle cores and with one busy neighbour process (issue 23, Threads).

    python benchmarks/threads.py                          # 3 repeats, writes docs/results/threads.json
    python benchmarks/threads.py --repeats 5 --out /tmp/threads.json
    python benchmarks/threads.py --args "reproduce table2 --quick"   # the full quick table (slower)

Each run is a fresh ``python -m ssgd ...`` process with ``OMP_NUM_THREADS``/``SSGD_THREADS`` unset:
"default" adds nothing (ssgd.cli.choose_threads decides), "all cores" adds ``--threads <cores>`` (what torch
does by itself). The busy neighbour is a pure-Python loop on one core, started before and stopped after the
runs of that condition. Modes alternate order between repeats; medians are reported. Other processes on the
machine are not controlled: the 1-minute load average before each run is recorded beside its time. The README's
Threads paragraph is generated from the JSON (``python scripts/update_tables.py``)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARGS = "reproduce table2 --quick --methods sgd,ssgd --no-progress"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SSGD_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _default_threads() -> int:
    """What ssgd.cli.choose_threads picks right now for a process without OMP_NUM_THREADS."""
    sys.path.insert(0, str(ROOT / "src"))
    saved = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        from ssgd.cli import choose_threads

        return choose_threads()
    finally:
        if saved is not None:
            os.environ["OMP_NUM_THREADS"] = saved


def _one(args: list[str], threads: int | None, tmp: Path, tag: str) -> dict:
    cmd = [sys.executable, "-m", "ssgd"] + ([] if threads is None else ["--threads", str(threads)]) + args
    cmd += ["--out", str(tmp / tag)]
    load = os.getloadavg()[0]
    chosen = _default_threads() if threads is None else threads
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return {"seconds": round(seconds, 2), "threads": chosen, "load_before": round(load, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--args", default=DEFAULT_ARGS, help="the ssgd command line timed (without --out)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/threads.json")
    opts = ap.parse_args()
    args = shlex.split(opts.args)
    cores = len(os.sched_getaffinity(0))
    modes = {"default": None, "all cores": cores}
    runs: dict[str, dict[str, list[dict]]] = {c: {m: [] for m in modes} for c in ("idle", "busy neighbour")}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for rep in range(opts.repeats):
            order = list(modes) if rep % 2 == 0 else list(reversed(modes))
            for cond in runs:
                hog = None
                if cond == "busy neighbour":
                    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    time.sleep(1.0)
                try:
                    for mode in order:
                        r = _one(args, modes[mode], tmp, f"{rep}-{cond}-{mode}".replace(" ", "_"))
                        runs[cond][mode].append(r)
                        print(f"repeat {rep + 1}/{opts.repeats} {cond:14s} {mode:9s} {r['seconds']:7.1f} s "
                              f"(threads {r['threads']}, load before {r['load_before']})", flush=True)
                finally:
                    if hog is not None:
                        hog.kill()
                        hog.wait()
    probe = "import torch; print(torch.__version__, torch.get_num_threads())"
    tv, tn = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True,
                            check=True).stdout.split()
    medians = {c: {m: statistics.median(r["seconds"] for r in rs) for m, rs in ms.items()} for c, ms in runs.items()}
    doc = {"command": "ssgd " + shlex.join(args), "cores": cores, "repeats": opts.repeats,
           "torch": tv, "torch_default_threads": int(tn),
           "date": time.strftime("%Y-%m-%d", time.gmtime()),
           "modes": {"default": "no --threads, OMP_NUM_THREADS unset (ssgd.cli.choose_threads)",
                     "all cores": f"--threads {cores} (torch's own default)"},
           "median_seconds": medians, "runs": runs}
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(medians, indent=1))
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
