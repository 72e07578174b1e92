"""Start N local processes through ``torchrun`` (``python -m torch.distributed.run``).

:func:`launch` runs any module or script on N processes of this machine:
``torchrun --standalone`` picks a free rendezvous port on the loopback itself, the gloo
backend is kept on the loopback interface (``GLOO_SOCKET_IFNAME=lo`` unless you set it),
workers default to ``OMP_NUM_THREADS=1``, and ``torchrun --max-restarts 0`` stops every
worker as soon as one fails. If a rank fails, :class:`NodeFailureError` is raised with
torchrun's root-cause summary (the failing rank, its exit code and its traceback, which
the workers record with ``torch.distributed.elastic``'s ``@record``). Ctrl-C or a
``timeout`` stop the whole process tree (SIGTERM, then SIGKILL after a grace period).

:func:`launch_training` starts a training worker module, named by its caller (``ssgd train
--nodes N`` passes its own per-rank entry point, after checking the config and the checkpoint;
this layer knows no module above it), with the training config as one JSON object, and returns
rank 0's ``metrics.json``. The backend follows the device: gloo for ``cpu``, NCCL for ``cuda``
(one GPU per node).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["NodeFailureError", "torchrun_command", "launch", "launch_training"]


class NodeFailureError(RuntimeError):
    """A rank of a launched run failed (or the run timed out); the message holds the root cause."""

    def __init__(self, message: str, returncode: int | None = None):
        super().__init__(message)
        self.returncode = returncode


def torchrun_command(nproc: int, target: str, args: Sequence[str] = (), *, module: bool = True,
                     python: str | None = None) -> list[str]:
    """The ``torchrun`` command line that starts ``nproc`` local processes of ``target``."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"Invalid number of processes {nproc!r}; must be an integer >= 1")
    cmd = [python or sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", str(nproc), "--max-restarts", "0", "--monitor-interval", "0.5"]
    cmd += (["-m", target] if module else [str(target)])
    return cmd + [str(a) for a in args]


def _root_cause(tail: str) -> str:
    i = tail.rfind("Root Cause")
    if i >= 0:
        start = tail.rfind("\n", 0, tail.rfind("\n", 0, i)) + 1
        return tail[start:].strip()
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    return "\n".join(lines[-25:])


def _pump(src, dst, keep: collections.deque) -> None:
    fd = src.fileno()
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        keep.append(chunk)
        if dst is not None:
            try:
                dst.write(chunk.decode("utf-8", "replace"))
                dst.flush()
            except (ValueError, OSError):  # closed stream: keep collecting
                pass


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def launch(nproc: int, target: str, args: Sequence[str] = (), *, module: bool = True,
           env: dict[str, str] | None = None, timeout: float | None = None, cwd: str | os.PathLike | None = None,
           echo: bool = True) -> str:
    """Run ``target`` (a module, or a script with ``module=False``) on ``nproc`` local processes.

    Returns the run's stderr (also echoed live with ``echo=True``). Raises
    :class:`NodeFailureError` if any rank fails or the run exceeds ``timeout`` seconds."""
    cmd = torchrun_command(nproc, target, args, module=module)
    full_env = dict(os.environ)
    full_env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    # the workers must import the same ssgd as this process, installed or not
    src = str(Path(__file__).resolve().parents[2])
    full_env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in full_env.get("PYTHONPATH", "").split(os.pathsep) if p])
    full_env.update(env or {})
    proc = subprocess.Popen(cmd, env=full_env, cwd=cwd, stdout=None if echo else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    keep: collections.deque = collections.deque(maxlen=64)  # last ~256 KB of stderr
    pump = threading.Thread(target=_pump, args=(proc.stderr, sys.stderr if echo else None, keep), daemon=True)
    pump.start()
    t_end = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            try:
                rc = proc.wait(0.2 if t_end is None else max(0.0, min(0.2, t_end - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if t_end is not None and time.monotonic() >= t_end:
                    _stop(proc)
                    pump.join(5)
                    raise NodeFailureError(f"{nproc}-process run of {target} timed out after {timeout:.0f} s "
                                           "and was stopped (all ranks)", None) from None
    except KeyboardInterrupt:
        _stop(proc)
        raise
    pump.join(10)
    err = b"".join(keep).decode("utf-8", "replace")
    if rc != 0:
        raise NodeFailureError(f"{nproc}-process run of {target} failed (torchrun exit code {rc}); every rank "
                               f"was stopped. Root cause reported by torchrun:\n{_root_cause(err)}", rc)
    return err


def launch_training(config: Mapping[str, Any], run_dir: str | os.PathLike, nodes: int, *, module: str,
                    resume: bool = False, progress: bool = True, timeout: float | None = None,
                    echo: bool = True) -> dict:
    """Run the training worker ``module`` (the caller's entry point, e.g. ``"pkg.worker"``) on ``nodes``
    processes; return the ``metrics.json`` rank 0 wrote.

    ``config`` is the training config as a plain mapping (``TrainConfig.to_dict()``); the worker
    validates it again on every rank. ``run_dir`` must exist (the caller creates it with
    :func:`ssgd.report.make_run_dir`)."""
    if hasattr(config, "to_dict"):  # a TrainConfig given directly
        config = config.to_dict()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} does not exist; create it first (ssgd.report.make_run_dir)")
    args = ["--config-json", json.dumps(dict(config)), "--run-dir", str(run_dir.resolve())]
    if resume:
        args.append("--resume")
    if not progress:
        args.append("--no-progress")
    launch(nodes, module, args, timeout=timeout, echo=echo)
    return json.loads((run_dir / "metrics.json").read_text())
