"""Optimizer-step benchmarks: :class:`ssgd.SSGD` against ``torch.optim.SGD(foreach=True)``.

Behind ``ssgd bench step`` and ``benchmarks/optimizer_step.py``. Each size is a list of
parameter shapes taken from a real model (no model is built, only its tensors):

* ``resnet18`` -- torchvision's ResNet-18 for ImageNet: 11,689,512 parameters in 62 tensors;
* ``gpt2`` -- GPT-2 small: 124,439,808 parameters in 148 tensors;
* ``gpt1b`` -- a GPT-2-style model at d=2048 with 18 layers: 1,013,981,184 parameters in 220 tensors;
* ``tiny`` -- a few small tensors (smoke tests).

For each size and momentum (0 and 0.9) one parameter set and one set of random
gradients are shared by a ``torch.optim.SGD(foreach=True)`` baseline and
``SSGD(scope="global")``/``SSGD(scope="layer")`` (each optimizer keeps its own
momentum buffers). The optimizers are stepped in turn, round after round, so that
load on a shared machine hits all of them alike (the order rotates every round);
the medians of the per-step wall times are compared: ``ratio = SSGD median / SGD
median`` (same momentum), and ``paired_ratio`` is the median over rounds of the
per-round ratio (more robust on a loaded machine), and ``fastest_ratio`` the ratio of the
fastest samples (what the machine can do when load leaves it alone). On a small shared CPU
pass ``threads=1`` (``--threads 1``): oversubscribed intra-op threads make timings noise.
Rows also count, for one steady-state step, the *host reads* (``syncs``: on CUDA the
synchronisations that ``torch.cuda.set_sync_debug_mode`` reports, on CPU the calls of
``Tensor.item``/``tolist``/``__bool__``/``__float__``/``__int__``, each of which would be a
synchronisation on a GPU) and the *ops* (``ops``: aten ops that compute, counted with a
``TorchDispatchMode``; on a GPU each is at least one kernel launch).

:func:`run_train_bench` times the *whole* training step (forward, backward, step) of real models
(``mlp``, ``convnet``, ``resnet18`` from :mod:`ssgd.models`) the same way, for SGD and SSGD, at
each model's own batch size or at ``batch``.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
import warnings
from dataclasses import KW_ONLY, asdict, dataclass, field
from functools import partial
from typing import Any, Callable

import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ..optim import SSGD

__all__ = ["SIZES", "TRAIN_MODELS", "StepBenchConfig", "TrainBenchConfig", "config_dict", "count_host_reads",
           "count_ops", "format_table", "format_train_table", "gpu_launches", "param_shapes", "run_step_bench",
           "run_train_bench"]


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
    "gpt1b": lambda: _gpt2_small_shapes(d=2048, layers=18),
}
# the sizes by parameter count (the common 11.7M, 124M and 1B model sizes)
SIZES["11.7M"], SIZES["124M"], SIZES["1B"] = SIZES["resnet18"], SIZES["gpt2"], SIZES["gpt1b"]


_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
# aten ops whose result depends on tensor values on the host (each a synchronisation on a GPU); item(), bool(),
# float() reach aten._local_scalar_dense through the methods above and are counted there
_DATA_DEPENDENT = ("aten.nonzero.", "aten.masked_select.", "aten.unique", "aten._unique", "aten.equal.",
                   "aten.repeat_interleave.Tensor", "aten.bincount.", "aten.histc.", "aten.allclose.")


class _DataDependentOps(TorchDispatchMode):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name.startswith(_DATA_DEPENDENT) and not (name.startswith("aten.repeat_interleave")
                                                      and (kwargs or {}).get("output_size") is not None):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_host_reads(device: torch.device):
    """Count the host synchronisations inside the block; yields a list that gets one entry per sync.

    CUDA: the synchronising operations reported by ``torch.cuda.set_sync_debug_mode("warn")``.
    CPU: what would be one on a GPU: the calls of ``Tensor.item/tolist/__bool__/__float__/__int__/__index__``
    (a host read of a tensor value) and the aten ops whose output depends on the values (``nonzero``,
    ``masked_select``, ``unique``, ``repeat_interleave`` without ``output_size``, ...). Reading host memory
    through ``.numpy()`` is not counted: that is how a pinned copy is read once its CUDA event has completed."""
    calls: list[str] = []
    if device.type == "cuda":
        old = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield calls
            finally:
                torch.cuda.set_sync_debug_mode(old)
        calls.extend(f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))
        return
    orig = {n: getattr(torch.Tensor, n) for n in _READS}

    def wrap(name, fn):
        def inner(t, *a, **k):
            calls.append(name)
            return fn(t, *a, **k)
        return inner

    try:
        for n, fn in orig.items():
            setattr(torch.Tensor, n, wrap(n, fn))
        with _DataDependentOps(calls):
            yield calls
    finally:
        for n, fn in orig.items():
            setattr(torch.Tensor, n, fn)


def gpu_launches(func, args) -> int:
    """Kernels an aten op launches on a GPU, as far as the op and its arguments tell: 1, except a foreach op
    that torch's CUDA fast path refuses, which runs one kernel per tensor. The rule is ATen's
    ``check_fast_path_restrictions`` (``ATen/native/ForeachUtils.h``): every tensor on one device, strided and
    dense, one dtype; corresponding tensors of the lists of the same sizes and strides (a list of 0-dim
    scale tensors next to the gradients fails it)."""
    if not str(func).startswith("aten._foreach_"):
        return 1
    lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
    if not lists:
        return 1
    first = lists[0]
    dev, dtype = first[0].device, first[0].dtype
    for ts in lists:
        for t in ts:
            if t.device != dev or t.dtype != dtype or t.layout != torch.strided or not t.is_contiguous():
                return len(first)
    for ts in lists[1:]:
        for a, b in zip(first, ts):
            if a.shape != b.shape or any(n != 1 and s != r for n, s, r in zip(a.shape, a.stride(), b.stride())):
                return len(first)
    return 1


class count_ops(TorchDispatchMode):
    """Context manager: the aten ops dispatched inside it that compute (``.ops``); views,
    allocations and profiler markers launch no kernel and are not counted. ``.launches``: the kernels
    they would launch on a GPU (:func:`gpu_launches`; a foreach op off torch's fast path is one per tensor)."""

    FREE = ("aten.detach.", "aten.slice.", "aten.unbind.", "aten.view.", "aten.alias.", "aten.empty.", "profiler.")

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self.launches = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not str(func).startswith(self.FREE):
            self.ops.append(str(func))
            self.launches += gpu_launches(func, args)
        return func(*args, **(kwargs or {}))


def param_shapes(size: str) -> list[tuple[int, ...]]:
    """The parameter shapes of a named size (see the module docstring)."""
    if size not in SIZES:
        raise ValueError(f"Unknown size {size!r}; known: {sorted(SIZES)}")
    return SIZES[size]()


@dataclass(kw_only=True)
class _TimingConfig:
    """What both benchmarks take: where and how long to time, the seed, the threads."""
    device: str = "cpu"
    repeats: int = 20
    warmup: int = 3
    seed: int = 0
    threads: int | None = None

    def validate(self) -> "_TimingConfig":
        if self.repeats < 1:
            raise ValueError(f"Invalid repeats={self.repeats}; must be >= 1")
        if self.warmup < 0:
            raise ValueError(f"Invalid warmup={self.warmup}; must be >= 0")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} requested but torch.cuda.is_available() is False; use --device cpu")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"Invalid device={self.device!r}; expected 'cpu' or 'cuda[:i]'")
        return self

    def _start(self) -> tuple[torch.device, torch.Generator]:
        """Validate, set the threads; the device and the data generator of a run."""
        self.validate()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        device = torch.device(self.device)  # data drawn on the device: a 1B-parameter set in seconds
        return device, torch.Generator(device=device).manual_seed(self.seed)


@dataclass
class StepBenchConfig(_TimingConfig):
    sizes: tuple[str, ...] = ("resnet18", "gpt2")
    momenta: tuple[float, ...] = (0.0, 0.9)
    scopes: tuple[str, ...] = ("global", "layer")
    _: KW_ONLY
    lr: float = 1e-3
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "StepBenchConfig":
        for s in self.sizes:
            param_shapes(s)
        super().validate()
        return self


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count_step_syncs(opt: torch.optim.Optimizer, device: torch.device) -> int:
    """Host syncs of one ``opt.step()`` (gradients already in place)."""
    with count_host_reads(device) as reads:
        opt.step()
        _sync_quiet(device)
    return len(reads)


def _count_step_ops(opt: torch.optim.Optimizer) -> tuple[int, int]:
    """Ops of one ``opt.step()`` (gradients already in place), and the kernels they would launch on a GPU."""
    with count_ops() as counter:
        opt.step()
    return len(counter.ops), counter.launches


def _alternate(fns: dict[str, Callable[[], None]], rounds: int, warmup: int, device: torch.device, bar,
               before: dict[str, Callable[[], None]] | None = None) -> dict[str, list[float]]:
    """Wall times of ``fns``, called in turn round after round (the order rotates every round so that
    load hits all alike); ``before[k]`` runs untimed before ``fns[k]``. The first ``warmup`` rounds are dropped."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(warmup + rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            if before and k in before:
                before[k]()
            _sync(device)
            t0 = time.perf_counter()
            fns[k]()
            _sync(device)
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
        bar.update(1)
    return times


def _sync_quiet(device: torch.device) -> None:
    """Wait for the device outside the sync count (the count is of the step, not of the timer)."""
    if device.type == "cuda":
        old = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode(old)


def run_step_bench(cfg: StepBenchConfig, *, progress: bool = True) -> list[dict[str, Any]]:
    """Time the steps; one row per (size, momentum, scope) with both medians and the ratio."""
    from tqdm.auto import tqdm

    device, gen = cfg._start()
    rows: list[dict[str, Any]] = []
    total = len(cfg.sizes) * len(cfg.momenta) * (cfg.warmup + cfg.repeats)
    bar = tqdm(total=total, desc="bench step", disable=not progress, leave=False)
    for size in cfg.sizes:
        shapes = param_shapes(size)
        params = [torch.randn(s, generator=gen, device=device).requires_grad_() for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, device=device)
        n_params = sum(p.numel() for p in params)
        for mom in cfg.momenta:
            opts: dict[str, torch.optim.Optimizer] = {"sgd": torch.optim.SGD(params, lr=cfg.lr, momentum=mom,
                                                                              foreach=True)}
            for scope in cfg.scopes:
                opts[scope] = SSGD(params, lr=cfg.lr, momentum=mom, scope=scope)
            syncs, ops, launches = {}, {}, {}
            for k, opt in opts.items():
                opt.step()  # the first step creates the momentum buffers: count a steady one
                syncs[k] = _count_step_syncs(opt, device)
                ops[k], launches[k] = _count_step_ops(opt)
            times = _alternate({k: o.step for k, o in opts.items()}, cfg.repeats, cfg.warmup, device, bar)
            base = statistics.median(times["sgd"])
            fast_base = min(times["sgd"])
            for scope in [k for k in opts if k != "sgd"]:
                med = statistics.median(times[scope])
                paired = statistics.median(a / b for a, b in zip(times[scope], times["sgd"]) if b > 0)
                rows.append(dict(size=size, n_params=n_params, n_tensors=len(params), device=str(device),
                                 momentum=mom, scope=scope, sgd_ms=1e3 * base, ssgd_ms=1e3 * med,
                                 ratio=med / base if base > 0 else math.nan, paired_ratio=paired,
                                 sgd_fastest_ms=1e3 * fast_base, ssgd_fastest_ms=1e3 * min(times[scope]),
                                 fastest_ratio=min(times[scope]) / fast_base if fast_base > 0 else math.nan,
                                 syncs=syncs[scope], sgd_syncs=syncs["sgd"], ops=ops[scope], sgd_ops=ops["sgd"],
                                 launches=launches[scope], sgd_launches=launches["sgd"],
                                 repeats=cfg.repeats, threads=torch.get_num_threads()))
            del opts
        del params
    bar.close()
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows."""
    head = ("| size | params | tensors | device | threads | momentum | scope | SGD ms | SSGD ms | SSGD/SGD "
            "| paired | fastest | syncs/step (SSGD, SGD) | ops/step (SSGD, SGD) | GPU launches/step (SSGD, SGD) |\n"
            "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['size']} | {r['n_params'] / 1e6:.1f}M | {r['n_tensors']} | {r['device']} | "
                     f"{r['threads']} | {r['momentum']:g} | {r['scope']} | {r['sgd_ms']:.2f} | {r['ssgd_ms']:.2f} | "
                     f"{r['ratio']:.2f}x | {r['paired_ratio']:.2f}x | {r['fastest_ratio']:.2f}x | "
                     f"{r['syncs']}, {r['sgd_syncs']} | {r['ops']}, {r['sgd_ops']} | "
                     f"{r['launches']}, {r['sgd_launches']} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the whole training step
TRAIN_MODELS = {  # model -> (input shape, default batch size)
    "mlp": ((1, 28, 28), 256),
    "convnet": ((1, 28, 28), 64),
    "resnet18": ((3, 32, 32), 32),
}


@dataclass
class TrainBenchConfig(_TimingConfig):
    models: tuple[str, ...] = ("mlp", "convnet", "resnet18")
    momentum: float = 0.9
    _: KW_ONLY
    lr: float = 1e-2
    batch: int | None = None  # None: each model's own batch size (TRAIN_MODELS)

    def validate(self) -> "TrainBenchConfig":
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"Invalid batch={self.batch}; must be >= 1 (or None for each model's default)")
        for m in self.models:
            if m not in TRAIN_MODELS:
                raise ValueError(f"Unknown model {m!r} for the whole-step benchmark; known: {sorted(TRAIN_MODELS)}")
        super().validate()
        return self


def run_train_bench(cfg: TrainBenchConfig, *, progress: bool = True) -> list[dict[str, Any]]:
    """Whole training steps (forward, backward, step): SGD vs SSGD.

    Each optimizer trains its own copy of the same model on the same batch; the steps
    alternate (order rotating every round). One row per (model, variant) with the fastest and
    median step times, their ratios to SGD and the host syncs of one step."""
    from tqdm.auto import tqdm

    from ..models import build_model

    device, gen = cfg._start()
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(cfg.models) * (cfg.warmup + cfg.repeats), desc="bench train step", disable=not progress,
               leave=False)
    for name in cfg.models:
        shape, batch = TRAIN_MODELS[name]
        batch = cfg.batch or batch
        x = torch.randn(batch, *shape, generator=gen, device=device)
        y = torch.randint(0, 10, (batch,), generator=gen, device=device)
        variants: dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]] = {}
        for key in ("sgd", "ssgd"):
            model = build_model(name, shape, 10, seed=cfg.seed).to(device)
            if key == "sgd":
                opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                                             foreach=True)
            else:
                opt = SSGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
            variants[key] = (model, opt)

        def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()

        syncs = {}
        for key, (model, opt) in variants.items():
            train_step(model, opt)  # first step: buffers, allocator
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            syncs[key] = _count_step_syncs(opt, device)
        times = _alternate({k: partial(train_step, *mo) for k, mo in variants.items()}, cfg.repeats, cfg.warmup,
                           device, bar)
        keys = list(variants)
        n_params = sum(p.numel() for p in variants["sgd"][0].parameters())
        base_min, base_med = min(times["sgd"]), statistics.median(times["sgd"])
        for k in keys[1:]:
            rows.append(dict(model=name, n_params=n_params, batch=batch, device=str(device), momentum=cfg.momentum,
                             variant=k, sgd_fastest_ms=1e3 * base_min, fastest_ms=1e3 * min(times[k]),
                             fastest_ratio=min(times[k]) / base_min, sgd_median_ms=1e3 * base_med,
                             median_ms=1e3 * statistics.median(times[k]),
                             median_ratio=statistics.median(times[k]) / base_med,
                             syncs=syncs[k], sgd_syncs=syncs["sgd"], repeats=cfg.repeats,
                             threads=torch.get_num_threads()))
        del variants
    bar.close()
    return rows


def format_train_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`run_train_bench` rows."""
    lines = ["| model | params | batch | device | threads | variant | SGD ms (fastest) | SSGD ms (fastest) "
             "| fastest ratio | median ratio | syncs/step (SSGD, SGD) |",
             "|---|---:|---:|---|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['n_params'] / 1e6:.2f}M | {r['batch']} | {r['device']} | {r['threads']} | "
                     f"{r['variant']} | {r['sgd_fastest_ms']:.2f} | {r['fastest_ms']:.2f} | "
                     f"{r['fastest_ratio']:.3f}x | {r['median_ratio']:.3f}x | {r['syncs']}, {r['sgd_syncs']} |")
    return "\n".join(lines)


def config_dict(cfg: StepBenchConfig | TrainBenchConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d.update(torch=torch.__version__, num_threads=torch.get_num_threads())
    return d
