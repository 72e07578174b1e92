"""``ssgd flower ...``: SSGD on a real Flower deployment (SuperLink + SuperNodes on 127.0.0.1),
or the same apps with in-process nodes.

Every option's default is :class:`ssgd.distributed.flower.FlowerRunConfig`'s (one source).
``up`` waits for half of the SuperNodes (rounded up) per round by default (``--min-nodes``), so
the run survives losing any one of them. Privacy settings belong to each node (its node
config: ``--node-set``), never to these run options; see docs/threat-model.md.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional, Sequence

import typer

from ._experiment_cli import open_run_dir

from ._options import Options, user_errors, with_options

__all__ = ["app", "up", "local"]

app = typer.Typer(help="SSGD on Flower: nodes send only unit vectors; bad updates are rejected.",
                  no_args_is_help=True)


def _defaults():
    from ..distributed.flower.config import FlowerRunConfig

    return FlowerRunConfig()


def _known_keys() -> tuple[str, ...]:
    from ..distributed.flower.config import FlowerRunConfig

    return FlowerRunConfig.run_config_keys()


def _key_value(item: str, option: str, example: str, known: Sequence[str], what: str,
               known_as: str) -> tuple[str, str]:
    """The key and value of ``option key=value``; the key must be one of ``known`` (a ``what``)."""
    if "=" not in item:
        raise typer.BadParameter(f"{option} {item!r}: expected key=value, e.g. {option} {example}")
    k, v = (p.strip() for p in item.split("=", 1))
    if k not in known:
        raise typer.BadParameter(f"{option} {item!r}: unknown {what} {k!r}; {known_as}: {', '.join(known)}")
    return k, v


def _run_config(run: Options, min_nodes, round_timeout, straggler_timeout, extra: list[str]) -> dict:
    cfg = {"num-rounds": run.rounds, "mode": run.mode, "scope": run.scope, "server-lr": run.server_lr,
           "local-steps": run.local_steps, "client-lr": run.client_lr, "batch-size": run.batch_size,
           "dataset": run.dataset, "model": run.model, "partition": run.partition, "alpha": run.alpha, "seed": run.seed,
           "strict": run.strict, "round-timeout": round_timeout, "straggler-timeout": straggler_timeout}
    if min_nodes is not None:
        cfg["min-nodes"] = min_nodes
    known = _known_keys()
    for item in extra:
        k, v = _key_value(item, "--set", "test-size=500", known, "run-config key", "known keys")
        if k in ("out-dir", "resume", "overwrite"):
            raise typer.BadParameter(f"--set {k}: use --out / --resume / --overwrite instead")
        cfg[k] = v
    from ..distributed.flower.config import FlowerRunConfig

    try:
        typed = FlowerRunConfig.from_mapping(cfg).to_run_config()
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return {k: typed[k] for k in cfg}  # every value with its field's type (--set test-size=500 is the int 500)


def _node_configs(fault_specs: list[str], node_sets: list[str], nodes: int, mode: str, dataset: str = "mnist",
                  data_dir: str = "", partition: str = "iid", alpha: float = 0.5, seed: int = 0) -> list[dict]:
    """Every node's own config: ``ssgd-mode`` is the run's ``--mode``, ``dataset`` and ``data-dir`` the
    run's, ``partition``, ``alpha`` and ``partition-seed`` the run's ``--partition``, ``--alpha`` and
    ``--seed`` (the nodes started here are yours: what they compute on is decided here, not by the server --
    a node reads none of these from the run config), then ``--node-set`` and ``--fault``."""
    from ..distributed.flower import FAULTS, NodePolicy

    data = {"dataset": dataset, **({"data-dir": data_dir} if data_dir else {}), "partition": partition,
            "alpha": float(alpha), "partition-seed": int(seed)}
    out: list[dict] = [{"ssgd-mode": mode, **data} for _ in range(nodes)]
    for spec in fault_specs:
        try:
            idx_s, fault = spec.split(":", 1)
            idx = int(idx_s)
        except ValueError:
            raise typer.BadParameter(f"--fault {spec!r}: expected NODE_INDEX:FAULT, e.g. 2:nan") from None
        if not 0 <= idx < nodes:
            raise typer.BadParameter(f"--fault {spec!r}: node index {idx} not in [0, {nodes})")
        if fault not in FAULTS:
            raise typer.BadParameter(f"--fault {spec!r}: unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
        out[idx]["fault"] = fault
    policy_keys = ("ssgd-scope", "ssgd-eps", "allowed-metrics", "min-batch-size", "min-noise-multiplier",
                   "allow-evaluate", "max-local-steps")
    for item in node_sets:
        k, v = _key_value(item, "--node-set", "allowed-metrics=train-loss", policy_keys, "node setting", "known")
        value = _typed(v)
        try:
            NodePolicy.from_node_config({k: value})
        except ValueError as e:
            raise typer.BadParameter(f"--node-set {item!r}: {e}") from None
        for c in out:
            c[k] = value
    return out


def _typed(v: str):
    """A node-config value as the SuperNode's TOML parser would type it."""
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    return v


def _opts():
    from ..distributed.flower.config import FlowerRunConfig

    d = _defaults()
    return dict(
        rounds=typer.Option(d.num_rounds, help="federated rounds"),
        mode=typer.Option(d.mode, help="fedsgd (unit gradients) | delta (unit model deltas of local steps)"),
        scope=typer.Option(d.scope, help="SSGD scope: global | layer (nodes refuse a scope other than their own)"),
        server_lr=typer.Option(d.server_lr, help="server-side learning rate (step length of a round)"),
        local_steps=typer.Option(d.local_steps, help="delta mode: local SGD steps per round"),
        client_lr=typer.Option(d.client_lr, help="delta mode: local learning rate"),
        batch_size=typer.Option(d.batch_size, help="batch size on each node"),
        dataset=typer.Option(d.dataset, help="dataset (mnist is embedded)"),
        model=typer.Option(d.model, help=FlowerRunConfig.help()["model"]),
        partition=typer.Option(d.partition, help="iid | dirichlet"),
        alpha=typer.Option(d.alpha, help="Dirichlet concentration"),
        seed=typer.Option(d.seed, help="seed"),
        strict=typer.Option(d.strict, help="reject updates whose norm is not 1 +- norm-tol"),
        round_timeout=typer.Option(d.round_timeout, help="seconds to wait for replies in a round"),
        straggler_timeout=typer.Option(d.straggler_timeout,
                                       help="after min-nodes replies, wait at most this long for the rest (0: off)"),
        fault=typer.Option([], help="make a node misbehave, NODE_INDEX:FAULT (nan|shape|norm1000|dtype|names); "
                                    "repeatable"),
        node_set=typer.Option([], "--node-set", help="a node-config privacy setting for every node, key=value "
                                                     "(ssgd-scope, ssgd-eps, allowed-metrics, min-batch-size, "
                                                     "min-noise-multiplier, allow-evaluate, max-local-steps); "
                                                     "repeatable; ssgd-mode is --mode"),
        set_=typer.Option([], "--set", help="any other run-config key=value; repeatable"),
        resume=typer.Option(False, "--resume", help="continue the run in --out from its checkpoint"),
        overwrite=typer.Option(False, "--overwrite", help="replace the results in an existing --out"),
    )


_OPTS = _opts()


def _run_options(
    rounds: int = _OPTS["rounds"], mode: str = _OPTS["mode"], scope: str = _OPTS["scope"],
    server_lr: float = _OPTS["server_lr"], local_steps: int = _OPTS["local_steps"], client_lr: float = _OPTS["client_lr"],
    batch_size: int = _OPTS["batch_size"], dataset: str = _OPTS["dataset"], model: str = _OPTS["model"],
    partition: str = _OPTS["partition"], alpha: float = _OPTS["alpha"], seed: int = _OPTS["seed"],
    strict: bool = _OPTS["strict"],
) -> None:
    """The run-config options of ``up`` and ``local`` (an option group: ``with_options``)."""


def _output_options(prefix: str):
    """The node, extra run-config and run-folder options of ``up`` and ``local`` (runs/<prefix>-<time>)."""

    def options(
        fault: list[str] = _OPTS["fault"], node_set: list[str] = _OPTS["node_set"], set_: list[str] = _OPTS["set_"],
        out: Optional[Path] = typer.Option(None, help=f"run folder (default: runs/{prefix}-<time>)"),
        resume: bool = _OPTS["resume"], overwrite: bool = _OPTS["overwrite"],
    ) -> None:
        """The options (an option group: ``with_options``)."""

    return options


def _run_dir(out: Optional[Path], prefix: str, resume: bool, overwrite: bool) -> Path:

    if resume and overwrite:
        raise typer.BadParameter("--resume and --overwrite contradict each other; pass one")
    if resume and out is None:
        raise typer.BadParameter("--resume needs --out naming the run folder to continue")
    with user_errors():
        return open_run_dir(out, prefix, resume=resume, overwrite=overwrite)


def _check_nodes(cfg: dict, nodes: int) -> None:
    from ..distributed.flower.config import FlowerRunConfig
    from ..distributed.flower.task import check_nodes

    try:
        check_nodes(FlowerRunConfig.from_mapping(cfg), nodes)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def _prepare(nodes: int, noun: str, run: Options, output: Options, prefix: str, *, min_nodes: Optional[int],
             round_timeout: float, straggler_timeout: float) -> tuple[dict, list[dict], Path]:
    """Check the options (nothing starts on a bad one), make the run folder: the run config, node configs, folder."""
    if nodes < 1:
        raise typer.BadParameter(f"--nodes {nodes}: need at least 1 {noun}")
    cfg = _run_config(run, min_nodes, round_timeout, straggler_timeout, output.set_)
    node_configs = _node_configs(output.fault, output.node_set, nodes, cfg["mode"], str(cfg["dataset"]),
                                 str(cfg.get("data-dir", "")), str(cfg["partition"]), float(cfg["alpha"]),
                                 int(cfg["seed"]))
    _check_nodes(cfg, nodes)
    run_dir = _run_dir(output.out, prefix, output.resume, output.overwrite)
    cfg.update({"out-dir": str(run_dir.absolute()), "resume": output.resume, "overwrite": output.overwrite})
    return cfg, node_configs, run_dir


@contextlib.contextmanager
def _exit_on(*errors: type[BaseException]) -> Iterator[None]:
    """``errors`` raised in the block become one line on stderr and exit status 1."""
    try:
        yield
    except errors as e:
        typer.echo(f"Error: {e}", err=True)
        raise typer.Exit(1) from None


@contextlib.contextmanager
def _round_bar(run_dir: Path, rounds: int, enabled: bool, poll: float = 1.0) -> Iterator[None]:
    """While the SuperLink runs the app: a bar of the rounds finished, read from the run's metrics.json."""
    if not enabled:
        yield
        return
    import json
    import threading

    from tqdm import tqdm

    stop = threading.Event()
    bar = tqdm(total=rounds, desc="flower rounds", leave=False)

    def follow() -> None:
        while not stop.wait(poll):
            try:
                last = json.loads((run_dir / "metrics.json").read_text())["history"][-1]["round"]
            except (OSError, ValueError, KeyError, IndexError, TypeError):
                continue
            if isinstance(last, int) and bar.n < last <= rounds:
                bar.update(last - bar.n)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


def _print_result(run_dir: Path, summary: dict) -> None:
    typer.echo((run_dir / "report.md").read_text())
    typer.echo(f"final test accuracy {summary['final_test_acc']:.4f}; run folder: {run_dir}")


@app.command("up")
@with_options(run=_run_options, output=_output_options("flower"))
def up(
    nodes: int = typer.Option(3, "--nodes", "-n", help="number of SuperNodes"),
    run: Options = None,  # --rounds ... --strict: _run_options
    round_timeout: float = _OPTS["round_timeout"], straggler_timeout: float = _OPTS["straggler_timeout"],
    min_nodes: Optional[int] = typer.Option(None, help="nodes needed per round (default: half of --nodes, rounded "
                                                       "up, so the run survives losing a node)"),
    output: Options = None,  # --fault ... --overwrite: _output_options
    timeout: float = typer.Option(1800.0, help="give up (and shut everything down) after this many seconds"),
    progress: bool = typer.Option(True, help="show a progress bar of the rounds"),
) -> None:
    """Start a SuperLink and N SuperNodes on 127.0.0.1 (free ports), run the SSGD app, shut everything down."""
    from ..distributed.flower import CheckpointMismatchError, Deployment, DeploymentError

    cfg, node_configs, run_dir = _prepare(nodes, "SuperNode", run, output, "flower", min_nodes=min_nodes,
                                          round_timeout=round_timeout, straggler_timeout=straggler_timeout)
    typer.echo(f"starting a SuperLink and {nodes} SuperNode(s) on 127.0.0.1; logs in {run_dir / 'deployment' / 'logs'}")
    with _exit_on(DeploymentError, CheckpointMismatchError, ValueError):
        with Deployment(nodes, run_dir / "deployment", node_configs=node_configs, dataset=cfg["dataset"],
                        data_dir=str(cfg.get("data-dir", ""))) as dep:
            typer.echo(f"SuperLink on 127.0.0.1:{dep.port}; SuperNode ids {dep.node_ids}")
            with _round_bar(run_dir, cfg["num-rounds"], progress):
                summary = dep.run(cfg, timeout=timeout)
    _print_result(run_dir, summary)


@app.command("local")
@with_options(run=_run_options, output=_output_options("flower-local"))
def local(
    nodes: int = typer.Option(10, "--nodes", "-n", help="number of in-process nodes"),
    run: Options = None,  # --rounds ... --strict: _run_options
    output: Options = None,  # --fault ... --overwrite: _output_options
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """The same ClientApp (mods included) and server logic with N nodes in this process (no SuperLink)."""
    from ..distributed.flower import CheckpointMismatchError, run_in_process

    d = _defaults()
    cfg, node_configs, run_dir = _prepare(nodes, "node", run, output, "flower-local", min_nodes=None,
                                          round_timeout=d.round_timeout, straggler_timeout=d.straggler_timeout)
    with _exit_on(CheckpointMismatchError, ValueError):
        summary = run_in_process(nodes, cfg, node_configs=node_configs, progress=progress)
    _print_result(run_dir, summary)
