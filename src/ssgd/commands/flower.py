"""``ssgd flower ...``: SSGD on a real Flower deployment (SuperLink + SuperNodes on 127.0.0.1),
or the same apps with in-process nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["app", "up", "local"]

app = typer.Typer(help="SSGD on Flower: nodes send only unit vectors; bad updates are rejected.",
                  no_args_is_help=True)


def _run_config(rounds, mode, scope, server_lr, local_steps, client_lr, batch_size, dataset, model, partition,
                alpha, seed, strict, min_nodes, round_timeout, straggler_timeout, extra: list[str]) -> dict:
    cfg = {"num-rounds": rounds, "mode": mode, "scope": scope, "server-lr": server_lr, "local-steps": local_steps,
           "client-lr": client_lr, "batch-size": batch_size, "dataset": dataset, "model": model,
           "partition": partition, "alpha": alpha, "seed": seed, "strict": strict, "round-timeout": round_timeout,
           "straggler-timeout": straggler_timeout}
    if min_nodes is not None:
        cfg["min-nodes"] = min_nodes
    for item in extra:
        if "=" not in item:
            raise typer.BadParameter(f"--set {item!r}: expected key=value, e.g. --set test-size=500")
        k, v = item.split("=", 1)
        cfg[k.strip()] = v.strip()
    from ..distributed.flower import FlowerRunConfig

    try:
        FlowerRunConfig.from_mapping(cfg)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    return cfg


def _faults(specs: list[str], nodes: int) -> list[dict]:
    from ..distributed.flower import FAULTS

    out: list[dict] = [{} for _ in range(nodes)]
    for spec in specs:
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
    return out


_OPTS = dict(
    rounds=typer.Option(10, help="federated rounds"),
    mode=typer.Option("fedsgd", help="fedsgd (unit gradients) | delta (unit model deltas of local steps)"),
    scope=typer.Option("global", help="SSGD scope: global | layer"),
    server_lr=typer.Option(0.5, help="server-side learning rate (step length of a round)"),
    local_steps=typer.Option(5, help="delta mode: local SGD steps per round"),
    client_lr=typer.Option(0.05, help="delta mode: local learning rate"),
    batch_size=typer.Option(64, help="batch size on each node"),
    dataset=typer.Option("mnist", help="dataset (mnist is embedded)"),
    model=typer.Option("mlp", help="lenet | mlp | convnet (models without BatchNorm)"),
    partition=typer.Option("iid", help="iid | dirichlet"),
    alpha=typer.Option(0.5, help="Dirichlet concentration"),
    seed=typer.Option(0, help="seed"),
    strict=typer.Option(True, help="reject updates whose norm is not 1 +- norm-tol"),
    round_timeout=typer.Option(120.0, help="seconds to wait for replies in a round"),
    straggler_timeout=typer.Option(0.0, help="after min-nodes replies, wait at most this long for the rest (0: off)"),
)


@app.command("up")
def up(
    nodes: int = typer.Option(3, "--nodes", "-n", help="number of SuperNodes"),
    rounds: int = _OPTS["rounds"], mode: str = _OPTS["mode"], scope: str = _OPTS["scope"],
    server_lr: float = _OPTS["server_lr"], local_steps: int = _OPTS["local_steps"], client_lr: float = _OPTS["client_lr"],
    batch_size: int = _OPTS["batch_size"], dataset: str = _OPTS["dataset"], model: str = _OPTS["model"],
    partition: str = _OPTS["partition"], alpha: float = _OPTS["alpha"], seed: int = _OPTS["seed"],
    strict: bool = _OPTS["strict"], round_timeout: float = _OPTS["round_timeout"],
    straggler_timeout: float = _OPTS["straggler_timeout"],
    min_nodes: Optional[int] = typer.Option(None, help="nodes needed per round (default: all)"),
    fault: list[str] = typer.Option([], help="make a node misbehave, NODE_INDEX:FAULT (nan|shape|norm1000|dtype|names); "
                                            "repeatable"),
    set_: list[str] = typer.Option([], "--set", help="any other run-config key=value; repeatable"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/flower-<time>)"),
    timeout: float = typer.Option(1800.0, help="give up (and shut everything down) after this many seconds"),
) -> None:
    """Start a SuperLink and N SuperNodes on 127.0.0.1 (free ports), run the SSGD app, shut everything down."""
    from ..distributed.flower import Deployment, DeploymentError
    from ..report.io import make_run_dir

    if nodes < 1:
        raise typer.BadParameter(f"--nodes {nodes}: need at least 1 SuperNode")
    cfg = _run_config(rounds, mode, scope, server_lr, local_steps, client_lr, batch_size, dataset, model, partition,
                      alpha, seed, strict, min_nodes, round_timeout, straggler_timeout, set_)
    node_configs = _faults(fault, nodes)
    run_dir = make_run_dir(out, "flower")
    cfg["out-dir"] = str(run_dir.absolute())
    typer.echo(f"starting a SuperLink and {nodes} SuperNode(s) on 127.0.0.1; logs in {run_dir / 'deployment' / 'logs'}")
    try:
        with Deployment(nodes, run_dir / "deployment", node_configs=node_configs, dataset=cfg["dataset"],
                        data_dir=str(cfg.get("data-dir", ""))) as dep:
            typer.echo(f"SuperLink on 127.0.0.1:{dep.port}; SuperNode ids {dep.node_ids}")
            summary = dep.run(cfg, timeout=timeout)
    except DeploymentError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo((run_dir / "report.md").read_text())
    typer.echo(f"final test accuracy {summary['final_test_acc']:.4f}; run folder: {run_dir}")


@app.command("local")
def local(
    nodes: int = typer.Option(10, "--nodes", "-n", help="number of in-process nodes"),
    rounds: int = _OPTS["rounds"], mode: str = _OPTS["mode"], scope: str = _OPTS["scope"],
    server_lr: float = _OPTS["server_lr"], local_steps: int = _OPTS["local_steps"], client_lr: float = _OPTS["client_lr"],
    batch_size: int = _OPTS["batch_size"], dataset: str = _OPTS["dataset"], model: str = _OPTS["model"],
    partition: str = _OPTS["partition"], alpha: float = _OPTS["alpha"], seed: int = _OPTS["seed"],
    strict: bool = _OPTS["strict"],
    fault: list[str] = typer.Option([], help="NODE_INDEX:FAULT, repeatable"),
    set_: list[str] = typer.Option([], "--set", help="any other run-config key=value; repeatable"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/flower-local-<time>)"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """The same ClientApp (mods included) and server logic with N nodes in this process (no SuperLink)."""
    from ..distributed.flower import run_in_process
    from ..report.io import make_run_dir

    if nodes < 1:
        raise typer.BadParameter(f"--nodes {nodes}: need at least 1 node")
    cfg = _run_config(rounds, mode, scope, server_lr, local_steps, client_lr, batch_size, dataset, model, partition,
                      alpha, seed, strict, None, 60.0, 0.0, set_)
    node_configs = _faults(fault, nodes)
    run_dir = make_run_dir(out, "flower-local")
    cfg["out-dir"] = str(run_dir.absolute())
    summary = run_in_process(nodes, cfg, node_configs=node_configs, progress=progress)
    typer.echo((run_dir / "report.md").read_text())
    typer.echo(f"final test accuracy {summary['final_test_acc']:.4f}; run folder: {run_dir}")
