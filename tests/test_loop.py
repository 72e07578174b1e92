"""ssgd.loop.train_loop: the one training loop, checked against a hand-written loop and by its hooks' contract."""

from __future__ import annotations

import ast
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ssgd.loop import EpochStats, backward, train_loop


def _setup(seed=0):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(50, 6, generator=g), torch.randint(0, 3, (50,), generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    return x, y, model


def _batches(x, y, gen, size=16):
    def batches(epoch):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], size):
            idx = perm[i:i + size]
            yield x[idx], y[idx]
    return batches


def test_matches_a_hand_written_loop_and_reports_the_epochs():
    x, y, model = _setup()
    _, _, ref = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
    hist = train_loop(model, opt, _batches(x, y, torch.Generator().manual_seed(4)), epochs=3, scheduler=sched)
    ropt = torch.optim.SGD(ref.parameters(), lr=0.3, momentum=0.9)
    rsched = torch.optim.lr_scheduler.StepLR(ropt, 2, 0.5)
    gen, losses = torch.Generator().manual_seed(4), []
    for _ in range(3):
        perm, tot = torch.randperm(50, generator=gen), 0.0
        for i in range(0, 50, 16):
            idx = perm[i:i + 16]
            ropt.zero_grad()
            loss = F.cross_entropy(ref(x[idx]), y[idx])
            loss.backward()
            ropt.step()
            rsched.step()
            tot += float(loss.detach()) * idx.numel()
        losses.append(tot / 50)
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    assert [r["epoch"] for r in hist] == [1, 2, 3]
    assert [r["steps"] for r in hist] == [4, 4, 4] and [r["examples"] for r in hist] == [50, 50, 50]
    assert [r["train_loss"] for r in hist] == losses  # example-weighted, summed in step order
    assert losses[-1] < losses[0]


def test_interrupted_and_resumed_equals_uninterrupted():
    x, y, full = _setup()
    opt = torch.optim.SGD(full.parameters(), lr=0.2)
    train_loop(full, opt, _batches(x, y, torch.Generator().manual_seed(2)), epochs=4)
    _, _, cut = _setup()
    gen, opt2 = torch.Generator().manual_seed(2), torch.optim.SGD(cut.parameters(), lr=0.2)
    saved = {}
    hist = train_loop(cut, opt2, _batches(x, y, gen), epochs=4, stop_after=2,
                      checkpoint=lambda e, h: saved.update(epoch=e, gen=gen.get_state(),
                                                           model={k: v.clone() for k, v in cut.state_dict().items()}))
    assert [r["epoch"] for r in hist] == [1, 2] and saved["epoch"] == 2
    _, _, resumed = _setup(seed=9)  # a different init: everything must come from the saved state
    resumed.load_state_dict(saved["model"])
    gen3 = torch.Generator()
    gen3.set_state(saved["gen"])
    hist = train_loop(resumed, torch.optim.SGD(resumed.parameters(), lr=0.2), _batches(x, y, gen3), epochs=4,
                      start_epoch=3, history=hist)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4]
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_hooks_run_in_order_and_the_loop_draws_no_random_numbers():
    x, y, model = _setup()
    calls = []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def batches(epoch):
        calls.append(("batches", epoch))
        yield x[:10], y[:10]
        yield x[10:13], y[10:13]

    def grad(m, xb, yb):
        assert m.training
        calls.append(("grad", xb.shape[0]))
        return backward(m, xb, yb)

    def end_epoch(epoch, stats):
        assert isinstance(stats, EpochStats) and stats.steps == 2 and stats.examples == 13
        calls.append(("end", epoch))
        return {"epoch": epoch, "mine": True}

    model.eval()
    state = torch.get_rng_state()
    hist = train_loop(model, opt, batches, epochs=2, grad=grad, before_epoch=lambda e: calls.append(("before", e)),
                      after_step=lambda: calls.append("step"), end_epoch=end_epoch,
                      on_epoch=lambda r: calls.append(("on", r["epoch"])),
                      checkpoint=lambda e, h: calls.append(("ck", e, len(h))))
    assert torch.equal(torch.get_rng_state(), state)
    one = lambda e: [("before", e), ("batches", e), ("grad", 10), "step", ("grad", 3), "step", ("end", e),  # noqa
                     ("on", e), ("ck", e, e)]
    assert calls == one(1) + one(2)
    assert hist == [{"epoch": 1, "mine": True}, {"epoch": 2, "mine": True}]


def test_without_an_optimizer_the_gradient_is_the_result():
    x, y, model = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)  # stale gradients must not leak into the result
    hist = train_loop(model, None, lambda e: iter([(x[:5], y[:5])]))
    _, _, ref = _setup()
    F.cross_entropy(ref(x[:5]), y[:5]).backward()
    for p, r, b in zip(model.parameters(), ref.parameters(), before):
        assert torch.equal(p, b) and torch.equal(p.grad, r.grad)
    assert hist[0]["steps"] == 1 and hist[0]["examples"] == 5


# ------------------------------------------------------------------ one loop in the package

SRC = Path(__file__).resolve().parents[1] / "src" / "ssgd"
# loops that step on purpose and are not training runs: an attack optimising its dummy images, and the
# benchmarks that time one step
NOT_TRAINING = {("attacks/engine.py", "signed_adam"), ("experiments/bench_step.py", "run_step_bench"),
                ("experiments/bench_step.py", "run_train_bench")}


def _steps(node: ast.AST):
    """Calls in ``node`` (not inside a nested def) of ``<x>.backward(...)`` or ``<opt-like>.step(...)``."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            base = n.func.value
            name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else ""
            if n.func.attr == "backward" or (n.func.attr == "step" and "opt" in name.lower()):
                yield n
        stack.extend(ast.iter_child_nodes(n))


def training_loops(src: Path) -> list[tuple[str, str, int]]:
    """``(file, function, line)`` of every for/while loop whose body steps an optimizer or calls backward()."""
    found = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            todo = [(c, False) for c in ast.iter_child_nodes(fn)]
            while todo:
                node, inside = todo.pop()
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                    continue
                hit = isinstance(node, (ast.For, ast.While)) and not inside and any(True for _ in _steps(node))
                if hit:
                    found.append((rel, fn.name, node.lineno))
                todo += [(c, inside or hit) for c in ast.iter_child_nodes(node)]
    return found


def test_the_package_has_one_training_loop():
    loops = [(f, fn) for f, fn, _ in training_loops(SRC) if (f, fn) not in NOT_TRAINING]
    assert loops == [("loop.py", "train_loop")], (
        f"training loops outside ssgd.loop: {loops}; give ssgd.loop.train_loop hooks instead (docs/architecture.md)")


def test_the_loop_counter_sees_a_planted_loop(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "mine.py").write_text(
        "def fit(model, opt, data):\n    for x, y in data:\n        def f():\n            pass\n"
        "        opt.zero_grad()\n        model(x).sum().backward()\n        opt.step()\n"
        "def ok(sched, data):\n    for _ in data:\n        sched.step()\n")
    assert [(f, fn) for f, fn, _ in training_loops(tmp_path)] == [("experiments/mine.py", "fit")]
