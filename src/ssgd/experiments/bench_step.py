"""Optimizer-step benchmark: :class:`ssgd.SSGD` against ``torch.optim.SGD(foreach=True)``.

Behind ``ssgd bench step`` and ``benchmarks/optimizer_step.py``. Each size is a list of
parameter shapes taken from a real model (no model is built, only its tensors):

* ``resnet18`` -- torchvision's ResNet-18 for ImageNet: 11,689,512 parameters in 62 tensors;
* ``gpt2`` -- GPT-2 small: 124,439,808 parameters in 148 tensors;
* ``tiny`` -- a few small tensors (smoke tests).

For each size and momentum (0 and 0.9) one parameter set and one set of random
gradients are shared by a ``torch.optim.SGD(foreach=True)`` baseline and
``SSGD(scope="global")``/``SSGD(scope="layer")`` (each optimizer keeps its own
momentum buffers). The optimizers are stepped in turn, round after round, so that
load on a shared machine hits all of them alike (the order rotates every round);
the medians of the per-step wall times are compared: ``ratio = SSGD median / SGD
median`` (same momentum), and ``paired_ratio`` is the median over rounds of the
per-round ratio (more robust on a loaded machine). On a small shared CPU pass
``threads=1`` (``--threads 1``): oversubscribed intra-op threads make timings noise.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..optim import SSGD

__all__ = ["SIZES", "StepBenchConfig", "config_dict", "format_table", "param_shapes", "run_step_bench"]


def _resnet18_shapes(num_classes: int = 1000) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            shapes += [(cout, cin, 3, 3), (cout,), (cout,), (cout, cout, 3, 3), (cout,), (cout,)]
            if s != 1 or cin != cout:
                shapes += [(cout, cin, 1, 1), (cout,), (cout,)]
            cin = cout
    shapes += [(num_classes, 512), (num_classes,)]
    return shapes


def _gpt2_small_shapes(vocab: int = 50257, ctx: int = 1024, d: int = 768, layers: int = 12) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    shapes += [(d,), (d,)]
    return shapes


SIZES = {
    "tiny": lambda: [(16, 8), (16,), (4, 16), (4,)],
    "resnet18": _resnet18_shapes,
    "gpt2": _gpt2_small_shapes,
}


def param_shapes(size: str) -> list[tuple[int, ...]]:
    """The parameter shapes of a named size (see the module docstring)."""
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r}; known: {sorted(SIZES)}")
    return SIZES[size]()


@dataclass
class StepBenchConfig:
    sizes: tuple[str, ...] = ("resnet18", "gpt2")
    momenta: tuple[float, ...] = (0.0, 0.9)
    scopes: tuple[str, ...] = ("global", "layer")
    device: str = "cpu"
    repeats: int = 20
    warmup: int = 3
    lr: float = 1e-3
    seed: int = 0
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "StepBenchConfig":
        for s in self.sizes:
            param_shapes(s)
        if self.repeats < 1:
            raise ValueError(f"Invalid repeats={self.repeats}; must be >= 1")
        if self.warmup < 0:
            raise ValueError(f"Invalid warmup={self.warmup}; must be >= 0")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} requested but torch.cuda.is_available() is False; use --device cpu")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"Invalid device={self.device!r}; expected 'cpu' or 'cuda[:i]'")
        return self


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_step_bench(cfg: StepBenchConfig, *, progress: bool = True) -> list[dict[str, Any]]:
    """Time the steps; one row per (size, momentum, scope) with both medians and the ratio."""
    from tqdm.auto import tqdm

    cfg.validate()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    rows: list[dict[str, Any]] = []
    total = len(cfg.sizes) * len(cfg.momenta) * (cfg.warmup + cfg.repeats)
    bar = tqdm(total=total, desc="bench step", disable=not progress, leave=False)
    for size in cfg.sizes:
        shapes = param_shapes(size)
        params = [torch.randn(s, generator=gen).to(device).requires_grad_() for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(device)
        n_params = sum(p.numel() for p in params)
        for mom in cfg.momenta:
            opts: dict[str, torch.optim.Optimizer] = {"sgd": torch.optim.SGD(params, lr=cfg.lr, momentum=mom,
                                                                              foreach=True)}
            for scope in cfg.scopes:
                opts[scope] = SSGD(params, lr=cfg.lr, momentum=mom, scope=scope)
            times: dict[str, list[float]] = {k: [] for k in opts}
            keys = list(opts)
            for r in range(cfg.warmup + cfg.repeats):
                for k in keys[r % len(keys):] + keys[:r % len(keys)]:  # rotate the order each round
                    opt = opts[k]
                    _sync(device)
                    t0 = time.perf_counter()
                    opt.step()
                    _sync(device)
                    if r >= cfg.warmup:
                        times[k].append(time.perf_counter() - t0)
                bar.update(1)
            base = statistics.median(times["sgd"])
            for scope in cfg.scopes:
                med = statistics.median(times[scope])
                paired = statistics.median(a / b for a, b in zip(times[scope], times["sgd"]) if b > 0)
                rows.append(dict(size=size, n_params=n_params, n_tensors=len(params), device=str(device),
                                 momentum=mom, scope=scope, sgd_ms=1e3 * base, ssgd_ms=1e3 * med,
                                 ratio=med / base if base > 0 else math.nan, paired_ratio=paired,
                                 repeats=cfg.repeats, threads=torch.get_num_threads()))
            del opts
        del params
    bar.close()
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows."""
    head = ("| size | params | tensors | device | threads | momentum | scope | SGD ms | SSGD ms | SSGD/SGD "
            "| paired |\n|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['size']} | {r['n_params'] / 1e6:.1f}M | {r['n_tensors']} | {r['device']} | "
                     f"{r['threads']} | {r['momentum']:g} | {r['scope']} | {r['sgd_ms']:.2f} | {r['ssgd_ms']:.2f} | "
                     f"{r['ratio']:.2f}x | {r['paired_ratio']:.2f}x |")
    return "\n".join(lines)


def config_dict(cfg: StepBenchConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d.update(torch=torch.__version__, num_threads=torch.get_num_threads())
    return d
