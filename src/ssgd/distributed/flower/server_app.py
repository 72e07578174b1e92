"""The ready SSGD ``ServerApp``: :class:`SSGDStrategy` with central evaluation, a checkpoint
after every round, resume from the last checkpoint, and a run folder.

Loaded by the SuperLink as ``ssgd.distributed.flower.server_app:app``; :func:`run_server`
is the same logic for any ``Grid`` (the in-process one included).

Run folder (``out-dir``): ``config.json``, ``checkpoint.pt`` (every round), ``metrics.json`` /
``metrics.csv`` (per round: test accuracy, accepted update norms with node ids, rejected and
failed nodes with reasons), ``result.json`` (written last: its presence means the run
finished), ``report.md`` and ``accuracy.png`` (test accuracy per round). A folder that already holds these files is continued only from a
matching checkpoint (``resume=true``, the default; another experiment's checkpoint is refused
with :class:`~.checkpoint.CheckpointMismatchError` before anything is written) or replaced with
``overwrite=true``; otherwise the run is refused and the folder left as it was.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import ServerApp

from ...report.curves import plot_curves
from ...report.io import RunDirError, atomic_write_text, make_run_dir, write_csv, write_json
from ...report.validate import LIST_LIMIT, md_text
from .checkpoint import load_checkpoint, save_checkpoint
from .config import FlowerRunConfig
from .strategy import SSGDStrategy
from .task import dataset, evaluate_arrays, make_model, param_arrays
from .validation import arrays_from_record, record_from_arrays

__all__ = ["app", "run_server", "RUN_FILES"]

log = logging.getLogger(__name__)

app = ServerApp()

#: the files a run writes into its folder (an existing one is replaced only on resume or with overwrite=true)
RUN_FILES = ("config.json", "checkpoint.pt", "metrics.json", "metrics.csv", "result.json", "report.md")


def run_server(grid, run_config: Mapping[str, Any], *, progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the SSGD federation on ``grid``; return the summary written to result.json."""
    cfg = FlowerRunConfig.from_mapping(run_config)
    out = make_run_dir(cfg.out_dir or None, "flower", overwrite=True)  # RUN_FILES are checked below
    model = make_model(cfg)
    arrays = param_arrays(model)
    ckpt_path = out / "checkpoint.pt"
    history: list[dict[str, Any]] = []
    start_round = 1
    # decide before writing anything: a refused resume leaves the folder as it was
    # a checkpoint is hostile data: checked field by field against this run and its model
    ckpt = load_checkpoint(ckpt_path, cfg.to_dict(), reference=arrays) if cfg.resume else None
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if ckpt is None and existing and not cfg.overwrite:
        why = "resume=false" if ckpt_path.exists() else "there is no checkpoint to resume from"
        raise RunDirError(f"out-dir {out} already holds results ({', '.join(existing)}) and {why}; "
                          "set overwrite=true to replace them, or choose another out-dir")
    if ckpt is not None:
        arrays, history, start_round = ckpt["arrays"], ckpt["history"], ckpt["round"] + 1
        log.info("resuming from %s after round %d", ckpt_path, ckpt["round"])
    write_json(out / "config.json", cfg.to_dict())
    (out / "result.json").unlink(missing_ok=True)
    data = dataset(cfg.dataset, cfg.data_dir, cfg.test_size, cfg.seed)
    eval_model = make_model(cfg)

    def evaluate_fn(rnd: int, record: ArrayRecord) -> MetricRecord:
        acc, loss = evaluate_arrays(eval_model, arrays_from_record(record), data.x_test, data.y_test)
        return MetricRecord({"test-acc": acc, "test-loss": loss})

    strategy = SSGDStrategy(
        mode=cfg.mode, server_lr=cfg.server_lr, scope=cfg.scope, strict=cfg.strict, norm_tol=cfg.norm_tol,
        update_keys=list(arrays), fraction_train=cfg.fraction_train, min_train_nodes=cfg.min_nodes,
        node_wait_timeout=cfg.node_wait_timeout, straggler_timeout=cfg.straggler_timeout, seed=cfg.seed + start_round,
        client_config={"local-steps": cfg.local_steps, "client-lr": cfg.client_lr, "batch-size": cfg.batch_size,
                       "seed": cfg.seed})
    t0 = time.perf_counter()

    def write_metrics() -> None:
        write_json(out / "metrics.json", {"history": history})
        write_csv(out / "metrics.csv", [{k: v for k, v in r.items() if not isinstance(v, list)} for r in history])

    if start_round == 1:
        m = evaluate_fn(0, record_from_arrays(arrays))
        history.append({"round": 0, "test_acc": m["test-acc"], "test_loss": m["test-loss"], "accepted": 0,
                        "rejected": 0, "failed": 0, "norms": [], "rejections": [], "failures": []})
        write_metrics()

    def on_round_end(rnd: int, record: ArrayRecord, info: dict[str, Any]) -> None:
        book = strategy.rounds.get(rnd, {"accepted": [], "rejected": [], "failed": []})
        ev = info.get("eval", {})
        history.append({
            "round": rnd, "test_acc": ev.get("test-acc"), "test_loss": ev.get("test-loss"),
            "train_loss": info["train"].get("train-loss"), "accepted": len(book["accepted"]),
            "rejected": len(book["rejected"]), "failed": len(book["failed"]),
            # the counts are exact; the per-node lists keep their first LIST_LIMIT entries (what a resume accepts)
            "norms": [[n, v] for n, v in book["accepted"][:LIST_LIMIT]],
            "rejections": [[n, r] for n, r in book["rejected"][:LIST_LIMIT]],
            "failures": [[n, r] for n, r in book["failed"][:LIST_LIMIT]], "seconds": time.perf_counter() - t0})
        save_checkpoint(ckpt_path, rnd, arrays_from_record(record), history, cfg.to_dict())
        write_metrics()

    if start_round <= cfg.num_rounds:
        strategy.start(grid, record_from_arrays(arrays), num_rounds=cfg.num_rounds,
                       timeout=cfg.round_timeout, evaluate_fn=evaluate_fn, start_round=start_round,
                       on_round_end=on_round_end, progress=progress)
    summary = {
        "status": "finished", "rounds": cfg.num_rounds, "resumed_after_round": start_round - 1,
        "initial_test_acc": history[0]["test_acc"] if history and history[0]["round"] == 0 else None,
        "final_test_acc": history[-1]["test_acc"] if history else None,
        "rejected_updates": sum(r["rejected"] for r in history), "failed_replies": sum(r["failed"] for r in history),
        "max_norm_deviation": max((abs(v - 1.0) for r in history for _, v in r["norms"]), default=None),
        "run_dir": str(out),
    }
    _write_report(out, cfg, history, summary)
    write_json(out / "result.json", summary)
    return summary


def _write_report(out: Path, cfg: FlowerRunConfig, history: list[dict], summary: dict) -> None:
    resumed = summary["resumed_after_round"]
    plot_curves(out / "accuracy.png", [("round", "test accuracy", {
        "test": ([r["round"] for r in history if r["test_acc"] is not None],
                 [r["test_acc"] for r in history if r["test_acc"] is not None])})],
        f"SSGD on Flower: {cfg.mode}, {cfg.model} on {cfg.dataset}")
    lines = [f"# SSGD on Flower: {cfg.mode}, {cfg.model} on {cfg.dataset}", "",
             f"Rounds: {cfg.num_rounds}{f' (resumed after round {resumed})' if resumed > 0 else ''}; server lr "
             f"{cfg.server_lr}; scope {cfg.scope}; strict validation {cfg.strict}.", "",
             "![test accuracy per round](accuracy.png)", "",
             "| round | test acc | accepted | rejected | failed |", "|---:|---:|---:|---:|---:|"]
    for r in history:
        acc = "" if r["test_acc"] is None else f"{r['test_acc']:.4f}"
        lines.append(f"| {r['round']} | {acc} | {r['accepted']} | {r['rejected']} | {r['failed']} |")
    rej = [(r["round"], n, why) for r in history for n, why in r["rejections"] + r["failures"]]
    if rej:
        # a node's reason is foreign text: escaped and bounded (a node could inject Markdown or HTML)
        lines += ["", "Rejected or failed replies:", ""] + [f"- round {a}, node {n}: {md_text(w)}"
                                                            for a, n, w in rej[:50]]
    lines += ["", "Files: [config.json](config.json), [metrics.json](metrics.json), [metrics.csv](metrics.csv), "
              "[result.json](result.json), checkpoint.pt"]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


@app.main()
def main(grid, context) -> None:
    run_server(grid, context.run_config)
