r"""One call from your own PyTorch loop to example-level DP with unit vectors: :func:`make_private`.

The counterpart of Opacus's ``PrivacyEngine().make_private_with_epsilon`` (and ``make_private``)::

    # Opacus                                            # ssgd
    engine = PrivacyEngine()                            from ssgd.privacy import make_private
    model, opt, loader = engine.make_private_with_epsilon(
        module=model, optimizer=opt, data_loader=loader,  opt, loader, accountant = make_private(
        target_epsilon=3, target_delta=1e-5, epochs=5,        model, opt, loader, target_epsilon=3, delta=1e-5,
        max_grad_norm=1.0)                                    epochs=5)
    for x, y in loader:                                 for x, y in loader:
        opt.zero_grad()                                     opt.zero_grad()
        loss_fn(model(x), y).backward()                     loss = opt.backward(x, y)
        opt.step()                                          opt.step()
    engine.get_epsilon(1e-5)                            accountant.get_epsilon(1e-5)

No clipping threshold: every example's gradient is normalised (``g/(||g|| + gamma)``, norm < 1),
so the sensitivity is known by construction. The pieces are the ones ``ssgd train --dp example``
uses -- :class:`ssgd.privacy.DPTraining` (Poisson sampler, calibrated :class:`GaussianNoise`,
Opacus's accountant, per-example unit vectors from ``torch.func``) -- built from the same
arguments, so for equal settings and seed σ, the batches, the noise and ε are the CLI's.
The one line that changes in the loop is the backward: per-example gradients need the
inputs and targets (``opt.backward(x, y)``), not a loss already reduced over the batch.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .accountant import PrivacyAccountant
from .training import DPConfig, DPTraining

__all__ = ["PrivateOptimizer", "PoissonLoader", "DPAccountant", "Private", "make_private"]


class PoissonLoader:
    """Poisson-sampled batches of ``dataset``: ``ceil(n/B)`` batches an epoch, each record in a batch
    with probability ``q = 1/ceil(n/B)`` (what the accountant assumes; a batch may be empty).

    The indices come from ``sampler`` (the :class:`~ssgd.privacy.PoissonSampler` of the run), so the
    batches are those ``ssgd train --dp example`` draws for the same seed."""

    def __init__(self, dataset, sampler, steps_per_epoch: int, collate_fn: Callable | None = None):
        self.dataset = dataset
        self.sampler = sampler
        self.steps_per_epoch = int(steps_per_epoch)
        self.collate_fn = collate_fn or torch.utils.data.default_collate
        self._tensors = getattr(dataset, "tensors", None)  # TensorDataset: index the tensors at once

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _batch(self, idx: Tensor):
        if self._tensors is not None:
            return [t[idx] for t in self._tensors]
        if idx.numel() == 0:  # an empty batch keeps the shapes (the step is pure noise)
            return _empty_like(self.collate_fn([self.dataset[0]]))
        return self.collate_fn([self.dataset[int(i)] for i in idx])

    def __iter__(self) -> Iterator:
        for _ in range(self.steps_per_epoch):
            yield self._batch(self.sampler.sample())


def _empty_like(batch):
    if isinstance(batch, Tensor):
        return batch[:0]
    if isinstance(batch, (list, tuple)):
        return type(batch)(_empty_like(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _empty_like(v) for k, v in batch.items()}
    return batch


class DPAccountant:
    """ε spent so far, Opacus-style: :meth:`get_epsilon` ``(delta)``; counts one release per optimizer step."""

    def __init__(self, accountant: PrivacyAccountant):
        self.accountant = accountant

    def get_epsilon(self, delta: float | None = None) -> float:
        """ε after the steps taken so far at ``delta`` (default: the δ given to :func:`make_private`)."""
        return self.accountant.epsilon(delta)

    @property
    def steps(self) -> int:
        return self.accountant.steps

    @property
    def noise_multiplier(self) -> float:
        return self.accountant.noise_multiplier

    @property
    def sample_rate(self) -> float:
        return self.accountant.sample_rate

    def describe(self) -> str:
        return self.accountant.describe()

    def state_dict(self) -> dict:
        return self.accountant.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.accountant.load_state_dict(state)


class PrivateOptimizer:
    """Your optimizer, fed the noisy sum of per-example unit vectors.

    :meth:`backward` ``(inputs, targets)`` writes ``(sum_i u_i + noise) / (q n)`` into ``.grad`` and
    returns the batch's mean loss; :meth:`step` applies your optimizer and counts one release in the
    accountant. Everything else (``param_groups``, ``zero_grad``, schedulers) is your optimizer's."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, dp: DPTraining):
        self.optimizer = optimizer
        self.model = model
        self.dp = dp
        self._pending = False

    def backward(self, inputs: Tensor, targets: Tensor) -> Tensor:
        loss = self.dp.backward(self.model, inputs, targets, torch.arange(inputs.shape[0]))
        self._pending = True
        return loss

    def step(self, closure: Callable | None = None):
        if not self._pending:
            raise RuntimeError("PrivateOptimizer.step() without backward(): call opt.backward(inputs, targets) "
                               "(per-example unit vectors + noise) before every step, not loss.backward()")
        self._pending = False
        return self.optimizer.step(closure) if closure is not None else self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def noise_multiplier(self) -> float:
        return self.dp.noise_multiplier

    @property
    def expected_batch_size(self) -> float:
        return self.dp.expected_batch_size

    def state_dict(self) -> dict[str, Any]:
        """Your optimizer's state plus the sampler, noise and accountant streams (bit-identical resume)."""
        return {"optimizer": self.optimizer.state_dict(), "dp": self.dp.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.dp.load_state_dict(state["dp"])

    def __repr__(self) -> str:
        return f"PrivateOptimizer({type(self.optimizer).__name__}, {self.dp.describe()})"


class Private(NamedTuple):
    """What :func:`make_private` returns (unpacks as ``optimizer, data_loader, accountant``)."""

    optimizer: PrivateOptimizer
    data_loader: PoissonLoader
    accountant: DPAccountant


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, data_loader, *, delta: float, epochs: int,
                 target_epsilon: float | None = None, noise_multiplier: float | None = None,
                 scope: str = "global", accountant: str = "rdp", seed: int | None = 0,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> Private:
    """Example-level (ε, δ)-DP around an existing model, optimizer and ``DataLoader``.

    Give ``target_epsilon`` (σ is solved by Opacus for ``epochs`` epochs, like
    ``make_private_with_epsilon``) or ``noise_multiplier`` (like ``make_private``), not both.
    The loader's ``batch_size`` is the expected batch size: ``q = 1/ceil(n/B)``.
    ``scope="layer"`` normalises every tensor on its own (sensitivity √L, σ unchanged).
    ``seed`` seeds the sampler and the noise (separate streams, your RNG untouched); ``None``:
    OS entropy. ``loss_fn(outputs, targets)`` is applied one example at a time.
    Returns ``(optimizer, data_loader, accountant)``.
    """
    batch_size = getattr(data_loader, "batch_size", None)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"make_private needs a DataLoader with an integer batch_size (got {batch_size!r}); "
                         "its batch size becomes the expected size of the Poisson batches")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Invalid epochs={epochs!r}; must be an integer >= 1 (the planned epochs, to solve sigma)")
    dataset = data_loader.dataset
    n = len(dataset)
    config = DPConfig(level="example", noise_multiplier=noise_multiplier, target_epsilon=target_epsilon,
                      delta=delta, accountant=accountant)
    dp = DPTraining(config, model, n, batch_size, epochs, scope=scope, seed=seed, loss_fn=loss_fn)
    loader = PoissonLoader(dataset, dp.sampler, dp.steps_per_epoch, getattr(data_loader, "collate_fn", None))
    return Private(PrivateOptimizer(optimizer, model, dp), loader, DPAccountant(dp.accountant))
