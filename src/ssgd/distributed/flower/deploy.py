"""A real Flower deployment on 127.0.0.1: one SuperLink, N SuperNodes, the SSGD app submitted with ``flwr run``.

:class:`Deployment` is what ``ssgd flower up`` and the deployment tests use::

    with Deployment(num_nodes=3, workdir="runs/flower-demo") as dep:
        summary = dep.run({"num-rounds": 5})

Every process gets ``FLWR_TELEMETRY_ENABLED=0``, ``FLWR_DISABLE_UPDATE_CHECK=1``,
``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` and a private ``FLWR_HOME`` (under
``workdir``); ports are chosen free at run time; everything listens on 127.0.0.1 only.
Each waiting step has a deadline. On exit -- also after an error or Ctrl-C -- every
process started here and every descendant (Flower's SuperExec detaches into its own
session) is terminated, then killed if it does not stop within a few seconds. Logs of
every process stay in ``workdir/logs``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Deployment", "DeploymentError", "free_port", "flower_env", "write_app_dir", "APP_PYPROJECT",
           "run_in_process"]

HOST = "127.0.0.1"
CONNECTION = "ssgd-local"

APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "ssgd-flower"
version = "0.1.0"
description = "SSGD on Flower: nodes share only unit vectors of their updates"
license = "Apache-2.0"
dependencies = ["ssgd[flower]"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "ssgd"

[tool.flwr.app.components]
serverapp = "ssgd.distributed.flower.server_app:app"
clientapp = "ssgd.distributed.flower.client_app:app"

[tool.flwr.app.config]
{config}
"""


class DeploymentError(RuntimeError):
    """A Flower process failed to start, died, or the run did not finish in time; names the log to read."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def flower_env(flwr_home: str | Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for every Flower process: no telemetry, no update check, no runtime installs."""
    env = dict(os.environ if base is None else base)
    env.update({
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_HOME": str(flwr_home),
        "PYTHONUNBUFFERED": "1",
    })
    env.setdefault("OMP_NUM_THREADS", "1")
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a TOML basic string


def write_app_dir(path: str | Path, run_config: Mapping[str, Any] | None = None) -> Path:
    """Write a Flower app directory (a pyproject.toml naming the packaged apps) with ``run_config`` defaults."""
    from .config import FlowerRunConfig

    values = FlowerRunConfig().to_run_config()
    values.update({k: v for k, v in (run_config or {}).items()})
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"{k} = {_toml_value(v)}" for k, v in values.items())
    (path / "pyproject.toml").write_text(APP_PYPROJECT.format(config=body), encoding="utf-8")
    return path


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d.name))
    return kids


def _descendants(pid: int) -> list[int]:
    if not Path("/proc").is_dir():  # pragma: no cover - non-Linux: process groups only
        return []
    kids, out, todo = _children(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): tells a process from a later one reusing its pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class _Proc:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        self.tree: set[int] = set()
        self._started: dict[int, int | None] = {self.popen.pid: _start_time(self.popen.pid)}

    def snapshot(self) -> None:
        for p in _descendants(self.popen.pid):
            if p not in self.tree:
                self.tree.add(p)
                self._started[p] = _start_time(p)

    def _ours(self, pid: int) -> bool:
        """Still the process we started (not a newcomer that reused the pid)?"""
        return _alive(pid) and _start_time(pid) == self._started.get(pid)

    def running(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def send(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to this process's group and to the groups of all its descendants."""
        self.snapshot()
        groups = {self.popen.pid} if self._ours(self.popen.pid) else set()
        for p in self.tree:
            if not self._ours(p):
                continue
            try:
                groups.add(os.getpgid(p))
            except ProcessLookupError:
                pass
        for g in groups:
            try:
                os.killpg(g, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def alive(self) -> bool:
        self.popen.poll()
        return any(self._ours(p) for p in [self.popen.pid, *self.tree])

    def stop(self, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
        """``sig`` to the whole tree, SIGKILL what is left after ``grace`` seconds, reap."""
        self.send(sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.1)
        self.kill_rest()

    def kill_rest(self) -> None:
        pids = [self.popen.pid] + sorted(self.tree)
        for p in pids:
            if self._ours(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        self._log.close()


class Deployment:
    """One SuperLink and ``num_nodes`` SuperNodes on 127.0.0.1, as a context manager.

    ``node_configs[i]`` adds to node ``i``'s ``--node-config`` (which always holds
    ``partition-id`` and ``num-partitions``), e.g. ``{"fault": "nan"}``. ``dataset`` is decoded
    once at start-up into the cache every Flower process reads (``None``: skip).
    """

    def __init__(self, num_nodes: int, workdir: str | Path, *, node_configs: Sequence[Mapping[str, Any]] | None = None,
                 start_timeout: float = 90.0, dataset: str | None = "mnist", data_dir: str = "") -> None:
        if num_nodes < 1:
            raise ValueError(f"Invalid num_nodes={num_nodes}; must be >= 1")
        if node_configs is not None and len(node_configs) != num_nodes:
            raise ValueError(f"node_configs has {len(node_configs)} entries for num_nodes={num_nodes}")
        for exe in ("flower-superlink", "flower-supernode", "flwr"):
            if shutil.which(exe, path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")) is None:
                raise DeploymentError(f"{exe} not found; install Flower: pip install 'ssgd[flower]'")
        self.num_nodes = num_nodes
        self.node_configs = [dict(c) for c in node_configs] if node_configs else [{} for _ in range(num_nodes)]
        self.workdir = Path(workdir).absolute()
        self.start_timeout = start_timeout
        self.dataset, self.data_dir = dataset, data_dir
        self.home = self.workdir / "flwr-home"
        self.logs = self.workdir / "logs"
        self.env = flower_env(self.home)
        from .task import CACHE_ENV

        self._own_cache = CACHE_ENV not in self.env
        self.env.setdefault(CACHE_ENV, str(self.workdir / "data-cache"))
        self.superlink: _Proc | None = None
        self.supernodes: list[_Proc] = []
        self.port: int | None = None
        self.run_ids: list[int] = []
        self.node_ids: list[int | None] = []

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Deployment":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def prepare_data(self, dataset: str = "mnist", data_dir: str = "") -> None:
        """Decode ``dataset`` once, here, into the cache every Flower process reads."""
        from .task import CACHE_ENV, _load_full

        old = os.environ.get(CACHE_ENV)
        os.environ[CACHE_ENV] = self.env[CACHE_ENV]
        try:
            _load_full(dataset, data_dir)
        finally:
            if old is None:
                os.environ.pop(CACHE_ENV, None)
            else:
                os.environ[CACHE_ENV] = old

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.superlink = _Proc("superlink", [
            "flower-superlink", "--insecure", "--host", HOST, "--port", str(self.port),
            "--isolation", "subprocess", "--disable-runtime-dependency-installation",
        ], self.env, self.logs / "superlink.log")
        self._wait_port(self.port, self.superlink)
        for i in range(self.num_nodes):
            self.supernodes.append(self._start_node(i))
        if self.dataset:  # decode the data while the SuperNodes boot
            self.prepare_data(self.dataset, self.data_dir)
        self._wait_nodes()
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{HOST}:{self.port}"\ninsecure = true\n', encoding="utf-8")

    def _start_node(self, i: int) -> _Proc:
        cfg = {"partition-id": i, "num-partitions": self.num_nodes, **self.node_configs[i]}
        node_cfg = " ".join(f"{k}={_toml_value(v)}" for k, v in cfg.items())
        return _Proc(f"supernode-{i}", [
            "flower-supernode", "--insecure", "--superlink", f"{HOST}:{self.port}", "--port", str(free_port()),
            "--host", HOST, "--isolation", "subprocess", "--node-config", node_cfg,
        ], self.env, self.logs / f"supernode-{i}.log")

    def _wait_nodes(self) -> None:
        """Wait until every SuperNode registered with the SuperLink; record their Flower node ids."""
        deadline = time.monotonic() + self.start_timeout
        self.node_ids = [None] * self.num_nodes
        while time.monotonic() < deadline:
            for i, p in enumerate(self.supernodes):
                if not p.running():
                    raise DeploymentError(f"{p.name} exited with code {p.popen.returncode}; log {p.log_path}:\n"
                                          f"{p.tail()}")
                if self.node_ids[i] is None:
                    m = re.search(r"SuperNode ID: (\d+)", p.log_path.read_text(errors="replace"))
                    if m:
                        self.node_ids[i] = int(m.group(1))
            if all(n is not None for n in self.node_ids):
                activated = self.superlink.log_path.read_text(errors="replace") if self.superlink else ""
                if all(f"Activated node_id={n}" in activated for n in self.node_ids):
                    return
            time.sleep(0.2)
        raise DeploymentError(f"not all {self.num_nodes} SuperNodes registered within {self.start_timeout:.0f} s "
                              f"(ids seen: {self.node_ids}); logs in {self.logs}")

    def _wait_port(self, port: int, proc: _Proc) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not proc.running():
                raise DeploymentError(f"{proc.name} exited with code {proc.popen.returncode}; log {proc.log_path}:\n"
                                      f"{proc.tail()}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                if s.connect_ex((HOST, port)) == 0:
                    return
            time.sleep(0.2)
        raise DeploymentError(f"{proc.name} did not listen on {HOST}:{port} within {self.start_timeout:.0f} s; "
                              f"log {proc.log_path}:\n{proc.tail()}")

    def stop(self) -> None:
        """Terminate every process started here and their descendants (idempotent)."""
        procs = self.supernodes + ([self.superlink] if self.superlink else [])
        for p in procs:
            p.snapshot()
        for p in procs:  # all at once, then one shared grace period
            p.send(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(p.alive() for p in procs):
            time.sleep(0.1)
        for p in procs:
            p.kill_rest()
        if self._own_cache:  # the decoded-data cache is a speed-up, not a result
            from .task import CACHE_ENV

            shutil.rmtree(self.env[CACHE_ENV], ignore_errors=True)

    def kill_node(self, i: int) -> None:
        """SIGKILL SuperNode ``i`` and its children: a node that vanishes without saying goodbye."""
        self.supernodes[i].stop(grace=0.0, sig=signal.SIGKILL)

    # ------------------------------------------------------------------ runs
    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(["flwr", *args], env=self.env, cwd=self.workdir, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def submit(self, run_config: Mapping[str, Any], app_dir: str | Path | None = None) -> int:
        """``flwr run`` the SSGD app with ``run_config`` overrides; return the run id."""
        app_dir = Path(app_dir) if app_dir is not None else write_app_dir(self.workdir / "app")
        overrides = " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())
        args = ["run", str(app_dir), CONNECTION, "--format", "json"]
        if overrides:
            args += ["--run-config", overrides]
        res = self.flwr(*args)
        try:
            payload = json.loads(res.stdout[res.stdout.index("{"):])
        except ValueError:
            payload = {}
        if res.returncode != 0 or not payload.get("success"):
            raise DeploymentError(f"flwr run failed (exit {res.returncode}): {res.stdout.strip()} {res.stderr.strip()}")
        run_id = int(payload["run-id"])
        self.run_ids.append(run_id)
        return run_id

    def run_status(self, run_id: int) -> str:
        """The run's status as ``flwr ls`` reports it (e.g. 'running', 'finished:completed'); '' if unknown."""
        try:
            res = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json", timeout=30)
            payload = json.loads(res.stdout[res.stdout.index("{"):])
            for run in payload.get("runs", []):
                if str(run.get("run-id")) == str(run_id):
                    return str(run.get("status", ""))
        except (ValueError, subprocess.TimeoutExpired, KeyError):
            pass
        return ""

    def save_run_log(self, run_id: int) -> Path | None:
        """Fetch the run's log (the ServerApp's output) with ``flwr log`` into ``logs/run-<id>.log``."""
        try:
            res = self.flwr("log", str(run_id), CONNECTION, "--show", timeout=60)
        except subprocess.TimeoutExpired:
            return None
        path = self.logs / f"run-{run_id}.log"
        path.write_text(res.stdout + res.stderr, encoding="utf-8")
        return path

    def wait(self, run_id: int, out_dir: str | Path, timeout: float, poll: float = 1.0,
             status_every: float = 15.0) -> dict[str, Any]:
        """Wait until the ServerApp wrote ``out_dir/result.json`` (or the run failed, or ``timeout``)."""
        result = Path(out_dir) / "result.json"
        deadline = time.monotonic() + timeout
        next_status = time.monotonic() + status_every
        while time.monotonic() < deadline:
            if result.is_file():
                self.save_run_log(run_id)
                return json.loads(result.read_text())
            if self.superlink is not None and not self.superlink.running():
                raise DeploymentError(f"the SuperLink died (exit {self.superlink.popen.returncode}); "
                                      f"log {self.superlink.log_path}:\n{self.superlink.tail()}")
            if time.monotonic() > next_status:
                next_status = time.monotonic() + status_every
                status = self.run_status(run_id)
                if status.startswith("finished") and not result.is_file():
                    time.sleep(1.0)
                    if not result.is_file():
                        log_path = self.save_run_log(run_id)
                        tail = ""
                        if log_path is not None:
                            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
                        raise DeploymentError(f"run {run_id} ended with status {status!r} before writing "
                                              f"{result}; run log {log_path}:\n{tail}")
            time.sleep(poll)
        raise DeploymentError(f"run {run_id} did not finish within {timeout:.0f} s; logs in {self.logs}")

    def run(self, run_config: Mapping[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        """Submit and wait; ``run_config['out-dir']`` defaults to ``workdir/run``."""
        cfg = dict(run_config)
        cfg.setdefault("out-dir", str(self.workdir / "run"))
        cfg.setdefault("min-nodes", self.num_nodes)
        if (str(cfg.get("dataset", "mnist")), str(cfg.get("data-dir", ""))) != (self.dataset, self.data_dir):
            self.prepare_data(str(cfg.get("dataset", "mnist")), str(cfg.get("data-dir", "")))
        run_id = self.submit(cfg)
        return self.wait(run_id, cfg["out-dir"], timeout)


def run_in_process(num_nodes: int, run_config: Mapping[str, Any], *, node_configs=None, kill: Mapping[int, int] | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """The same ServerApp logic and ClientApp (mods included) with ``num_nodes`` in-process nodes.

    ``kill={round: node_index}`` makes a node vanish before that round."""
    from .client_app import app as client_app
    from .local import InProcessGrid
    from .server_app import run_server

    grid = InProcessGrid(client_app, num_nodes, run_config, node_configs=node_configs)
    if kill:
        ids = list(grid.contexts)
        original = grid.send_and_receive

        def send_and_receive(messages, *, timeout=None):
            messages = list(messages)
            for m in messages[:1]:
                rnd = int(m.content["config"].get("server-round", 0)) if "config" in m.content.config_records else 0
                if rnd in kill:
                    grid.kill(ids[kill[rnd]])
            return original(messages, timeout=timeout)

        grid.send_and_receive = send_and_receive  # type: ignore[method-assign]
    return run_server(grid, run_config, progress=progress)
