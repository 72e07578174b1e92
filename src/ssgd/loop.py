"""The project's one training loop: epochs of steps, with a hook for each thing that really differs.

::

    for epoch in start_epoch .. epochs:              (stop_after: end this call early -- an interruption)
        model.train(); before_epoch(epoch)
        for x, y in batches(epoch):                  batch source
            optimizer.zero_grad(set_to_none=True)
            loss = grad(model, x, y)                 gradient path: fills .grad
            optimizer.step(); scheduler.step()       (no optimizer: the gradient is the result)
            after_step()                             engine bookkeeping (a DP round, a progress bar)
        row = end_epoch(epoch, stats)                evaluation
        history.append(row); on_epoch(row)
        checkpoint(epoch, history)                   checkpoints

What plugs in where (the callers own the machinery; this module knows none of it):

* **batch source** ``batches(epoch)``: any iterable of ``(x, y)``, drawn lazily step by step --
  a seeded permutation in batches (``ssgd train``), Poisson masks (DP), Opacus's Poisson loader,
  a node's random batches (the Flower node), this rank's shard of each batch (DDP);
* **gradient path** ``grad(model, x, y) -> loss``: plain backward (:func:`backward`, the default),
  SSGD(m)'s shard unit vectors (:func:`ssgd.shard_unit_grad_`), per-example unit vectors + noise
  (:class:`ssgd.privacy.DPTraining`), Opacus's per-sample clipping (its wrapped model and optimizer);
* **engine**: the ``model`` trained through (a module or its ``DistributedDataParallel`` wrapper),
  with ``after_step`` for what an engine counts per step;
* **evaluation** ``end_epoch(epoch, stats) -> row`` and **checkpoints** ``checkpoint(epoch, history)``.

The loop draws no random numbers of its own, so a run's randomness is exactly its hooks'
(bit-identical resume is the caller's: restore the hooks' generators, pass ``start_epoch`` and
``history``). The per-step losses stay tensors until the epoch ends (no host sync per step);
:attr:`EpochStats.train_loss` is their example-weighted mean, summed on the host in step order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["EpochStats", "GradPath", "backward", "train_loop"]

#: ``grad(model, x, y)`` fills ``.grad`` for one batch and returns its mean loss (a tensor), or ``None``
GradPath = Callable[[nn.Module, Tensor, Tensor], "Tensor | None"]


def backward(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
             ) -> Tensor:
    """The plain gradient path: ``loss_fn(model(x), y).backward()``; returns the loss (detached)."""
    loss = loss_fn(model(x), y)
    loss.backward()
    return loss.detach()


@dataclass
class EpochStats:
    """What one epoch of :func:`train_loop` did: steps, examples, training seconds, the steps' losses."""

    epoch: int
    steps: int = 0
    examples: int = 0
    seconds: float = 0.0  # the steps only (device synchronised), evaluation excluded
    losses: list[tuple[Tensor, int]] = field(default_factory=list)

    @property
    def train_loss(self) -> float:
        """The mean loss over the epoch's examples (0.0 without any)."""
        tot, seen = 0.0, 0
        for loss, k in self.losses:
            tot += float(loss) * k
            seen += k
        return tot / max(seen, 1)

    def row(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "train_loss": self.train_loss, "steps": self.steps, "examples": self.examples,
                "seconds": self.seconds}


def _sync(model: nn.Module) -> None:
    p = next(iter(model.parameters()), None)
    if p is not None and p.device.type == "cuda":
        torch.cuda.synchronize(p.device)


def train_loop(model: nn.Module, optimizer: torch.optim.Optimizer | None,
               batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]], *, epochs: int = 1,
               grad: GradPath = backward, scheduler: Any = None, start_epoch: int = 1,
               history: list[Any] | None = None, stop_after: int | None = None,
               before_epoch: Callable[[int], None] | None = None, after_step: Callable[[], None] | None = None,
               end_epoch: Callable[[int, EpochStats], Any] | None = None,
               on_epoch: Callable[[Any], None] | None = None,
               checkpoint: Callable[[int, list[Any]], None] | None = None) -> list[Any]:
    """Train ``model`` for epochs ``start_epoch..epochs`` (see the module doc); returns the history.

    ``history`` (rows of earlier epochs, on resume) is extended in place with one row per epoch:
    ``end_epoch(epoch, stats)``'s, or ``stats.row()`` without that hook. ``optimizer=None``: no
    step is taken (the caller reads ``.grad``). ``stop_after`` ends this call after that many epochs.
    """
    history = history if history is not None else []
    done = 0
    for epoch in range(start_epoch, epochs + 1):
        if stop_after is not None and done >= stop_after:
            break
        model.train()
        if before_epoch is not None:
            before_epoch(epoch)
        stats = EpochStats(epoch)
        t0 = time.perf_counter()
        for x, y in batches(epoch):
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            else:
                model.zero_grad(set_to_none=True)
            loss = grad(model, x, y)
            if optimizer is not None:
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if after_step is not None:
                after_step()
            k = int(x.shape[0])
            if loss is not None:  # detached: a hook's loss must not keep its graph alive for the epoch
                stats.losses.append((loss.detach(), k))
            stats.steps += 1
            stats.examples += k
        _sync(model)
        stats.seconds = time.perf_counter() - t0
        row = end_epoch(epoch, stats) if end_epoch is not None else stats.row()
        history.append(row)
        done += 1
        if on_epoch is not None:
            on_epoch(row)
        if checkpoint is not None:
            checkpoint(epoch, history)
    return history
