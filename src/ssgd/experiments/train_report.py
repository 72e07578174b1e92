"""``report.md`` and ``curves.png`` of a ``ssgd train`` run folder (one process or ``--nodes N``),
written from the folder's own result files, after training.

The files are read back as hostile input (:mod:`ssgd.report.validate`): ``config.json``'s values are
printed through :func:`ssgd.report.md_text`, the per-epoch history of ``metrics.json`` is checked field
by field (only the fields the report shows are read), ``privacy.json`` number by number. A file this run
did not write, or one another program changed, is a one-line :class:`ssgd.report.ResultFileError`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..report import ResultFileError, atomic_write_text, bounded_text, check_history, md_text
from ..report.curves import plot_curves

__all__ = ["REPORT", "FIGURE", "write_train_report"]

REPORT = "report.md"
FIGURE = "curves.png"

# the per-epoch fields the report shows (metrics.json's history may hold more; they are not read)
_FIELDS = {"epoch": "int", "lr": "number", "train_loss": "number?", "test_loss": "number", "test_acc": "number",
           "val_acc": "number", "val_loss": "number", "epsilon": "number?", "seconds": "number"}
_REQUIRED = ("epoch", "lr", "test_loss", "test_acc")
_MAX_BYTES = 64 << 20


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise ResultFileError(f"refusing {path}: larger than {_MAX_BYTES >> 20} MiB; it was not written by "
                                  "ssgd train")
        return json.loads(path.read_text(), parse_constant=lambda c: None)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultFileError(f"refusing {path}: not a JSON file this run wrote ({type(e).__name__}); "
                              "rerun the training into a new --out") from None


def _object(doc: Any, path: Path) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ResultFileError(f"refusing {path}: a {type(doc).__name__}, not an object; rerun the training "
                              "into a new --out")
    return doc


def _number(v: Any) -> float | None:
    """A finite number, ``inf`` (JSON's ``"inf"``), or None for anything else."""
    if isinstance(v, str) and v in ("inf", "Infinity"):
        return math.inf
    if isinstance(v, (int, float)) and not isinstance(v, bool) and (math.isfinite(v) or v == math.inf):
        return float(v)
    return None


def _history(metrics: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    rows = metrics.get("history")
    if not isinstance(rows, list) or not rows:
        raise ResultFileError(f"refusing {path}: no per-epoch history; rerun the training into a new --out")
    plain, inf = [], []
    for r in rows:
        if not isinstance(r, dict):
            plain.append(r)  # check_history names the bad row
            inf.append(False)
            continue
        kept = {k: v for k, v in r.items() if k in _FIELDS}
        eps_inf = kept.get("epsilon") in ("inf", "Infinity")
        if eps_inf:
            kept["epsilon"] = None
        plain.append(kept)
        inf.append(eps_inf)
    out = check_history(plain, _FIELDS, source=path, required=_REQUIRED)
    for r, f in zip(out, inf):
        if f:
            r["epsilon"] = math.inf
    return out


def _fmt(v: Any, spec: str = ".4f") -> str:
    if v is None:
        return "—"
    if v == math.inf:
        return "∞"
    return format(v, spec)


def _plot(history: list[dict[str, Any]], path: Path, title: str) -> None:
    def series(key: str) -> tuple[list[int], list[float]]:
        rows = [r for r in history if r.get(key) is not None and r["epoch"] > 0]
        return [r["epoch"] for r in rows], [r[key] for r in rows]

    plot_curves(path, [("epoch", "accuracy", {"test": series("test_acc"), "validation": series("val_acc")}),
                       ("epoch", "loss", {"train": series("train_loss"), "test": series("test_loss"),
                                          "validation": series("val_loss")})], title)


def write_train_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` and ``curves.png`` (accuracy and loss per epoch) into the run folder of a finished
    ``ssgd train`` from its ``config.json``, ``metrics.json`` and (with DP) ``privacy.json``; returns the
    report's path. Also for a ``--nodes N`` run (``config.json`` then names the nodes and backend)."""
    run_dir = Path(run_dir)
    cfg = _object(_read_json(run_dir / "config.json"), run_dir / "config.json")
    metrics = _object(_read_json(run_dir / "metrics.json"), run_dir / "metrics.json")
    history = _history(metrics, run_dir / "metrics.json")
    privacy = None
    if (run_dir / "privacy.json").is_file():
        privacy = _object(_read_json(run_dir / "privacy.json"), run_dir / "privacy.json")

    def val(key: str, default: str = "?") -> str:
        v = cfg.get(key)
        return default if v is None else md_text(v, 60)

    nodes = cfg.get("nodes") if isinstance(cfg.get("nodes"), int) and not isinstance(cfg.get("nodes"), bool) else 1
    opt = val("optimizer")
    if cfg.get("optimizer") == "ssgd":
        opt += (f" (scope {val('scope')}, one unit vector per node: SSGD(m = {nodes}))" if nodes > 1 else
                f" (scope {val('scope')}, m = {val('shards', '1')})")
    lr_cfg = _number(cfg.get("lr"))
    lr_text = _fmt(lr_cfg, "g") if lr_cfg is not None else "the optimizer's default (each epoch's lr is in the table)"
    for key, name in (("momentum", "momentum"), ("weight_decay", "weight decay")):
        v = _number(cfg.get(key))
        if v:  # recorded and not 0
            lr_text += f", {name} {_fmt(v, 'g')}"
    where = (f"{nodes} processes ({val('backend')}, {val('reduction')})" if nodes > 1 else "one process")
    title = f"{cfg.get('dataset', '?')}, {cfg.get('model', '?')}, {cfg.get('optimizer', '?')}"
    title = bounded_text(title, 80)
    test_acc = _number(metrics.get("test_acc"))
    seconds = _number(metrics.get("seconds"))
    last = history[-1]
    lines = [f"# ssgd train{f' --nodes {nodes}' if nodes > 1 else ''}: {val('dataset')}, model {val('model')}", "",
             f"Optimizer {opt}, lr {lr_text}, schedule {val('schedule', 'default')}, batch {val('batch_size')}, "
             f"{val('epochs')} epoch(s), seed {val('seed')}, device `{val('device')}`, {where}.", "",
             f"- final test accuracy: **{_fmt(test_acc)}** after epoch {last['epoch']}"
             + (f" (validation {_fmt(last['val_acc'])})" if "val_acc" in last else ""),
             f"- best test accuracy: {_fmt(max(r['test_acc'] for r in history))} "
             "(for reading only: choose settings by the validation accuracy, `--val-fraction`)",
             f"- wall time: {_fmt(seconds, '.1f')} s"]
    if nodes > 1:
        same = metrics.get("replicas_identical")
        lines.append(f"- replicas bit-identical at the end: {same if isinstance(same, bool) else '?'}; "
                     "`train_loss` is the loss on rank 0's own examples (no rank sends its loss)")
    if privacy is not None:
        eps, delta = _number(privacy.get("epsilon")), _number(privacy.get("delta"))
        sigma, q = _number(privacy.get("noise_multiplier")), _number(privacy.get("sample_rate"))
        lines.append(f"- privacy: ε = {_fmt(eps, '.4g')} at δ = {_fmt(delta, 'g')} per "
                     f"{md_text(privacy.get('level', '?'), 20)} (σ = {_fmt(sigma, '.4g')}, q = {_fmt(q, '.4g')}, "
                     f"{md_text(str(privacy.get('accountant', '?')).upper(), 10)} accountant): "
                     "[privacy.json](privacy.json)")
    has_val = any("val_acc" in r for r in history)
    has_eps = any(r.get("epsilon") is not None for r in history)
    head = (["epoch", "lr", "train loss", "test loss", "test acc"] + (["val acc"] if has_val else [])
            + (["ε"] if has_eps else []) + ["seconds"])
    lines += ["", f"![accuracy and loss per epoch]({FIGURE})", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in history:
        cells = [str(r["epoch"]), _fmt(r["lr"], ".4g"), _fmt(r.get("train_loss")), _fmt(r["test_loss"]),
                 _fmt(r["test_acc"])]
        if has_val:
            cells.append(_fmt(r.get("val_acc")))
        if has_eps:
            cells.append(_fmt(r.get("epsilon"), ".3g"))
        cells.append(_fmt(r.get("seconds"), ".1f"))
        lines.append("| " + " | ".join(cells) + " |")
    files = ["config.json", "metrics.json", "metrics.csv"] + (["privacy.json"] if privacy is not None else [])
    files += [f for f in ("checkpoint.pt",) if (run_dir / f).is_file()]
    lines += ["", "Files: " + ", ".join(f"[{f}]({f})" for f in files) + ".", ""]
    _plot(history, run_dir / FIGURE, title + f" ({nodes} nodes)" if nodes > 1 else title)
    return atomic_write_text(run_dir / REPORT, "\n".join(lines))
