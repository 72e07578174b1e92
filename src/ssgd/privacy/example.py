r"""Example-level privacy: DP-SGD with per-example *normalisation* in place of clipping.

For a Poisson-sampled batch :math:`B` (each example kept independently with
probability :math:`q`), every example's gradient :math:`g_i` is normalised and the
update direction is

.. math:: \tilde g = \frac{1}{qN}\Big(\sum_{i\in B} \frac{g_i}{\max(\lVert g_i\rVert, \epsilon) + \gamma}
          + \mathcal N(0, \sigma^2 \Delta^2 I)\Big)

Three normalisations, all with a known sensitivity :math:`\Delta` and no clipping threshold:

* ``gamma = 0``, global scope -- the pure unit vector :math:`g_i/\lVert g_i\rVert`: norm exactly 1, :math:`\Delta = 1`;
* ``gamma > 0`` -- the stability constant of Bu et al., *Automatic Clipping* (NeurIPS 2023):
  :math:`g_i/(\lVert g_i\rVert + \gamma)` has norm :math:`< 1`, so :math:`\Delta = 1` still. Large gradients
  still become (nearly) unit vectors, small ones are shrunk instead of blown up to norm 1: an example the
  model already fits no longer pulls as hard as one it gets wrong. This is the default of
  :func:`private_unit_grad_` (``--dp example``), :data:`DEFAULT_GAMMA` = 0.01, chosen by the measured
  comparison in docs/privacy.md;
* ``scope = "layer"`` -- every parameter tensor normalised on its own: :math:`L` tensors of norm
  :math:`\le 1`, :math:`\Delta = \sqrt L` (:func:`ssgd.privacy.sensitivity`).

Adding or removing one example changes the sum by one such vector, so the sensitivity
holds by construction -- this is Opacus's DP-SGD with ``max_grad_norm=1`` where every
gradient is scaled *onto* (or just inside) the sphere instead of into the ball. The
division by the expected batch size :math:`qN` (not the realised one, which would
leak the batch size) is Opacus's convention. Per-example gradients come from
``torch.func`` (``vmap(grad(...))``), in chunks to bound memory; the normalisation is
:func:`ssgd.batched_unit`, the library's one home of the unit-vector numerics.

The model must not mix examples in a batch: BatchNorm in training mode is refused
(use GroupNorm/LayerNorm, as Opacus requires).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..transform import DEFAULT_EPS, NonFiniteGradientError, batched_unit, check_eps, check_gamma, check_scope
from .noise import GaussianNoise

__all__ = ["DEFAULT_GAMMA", "NonFiniteExampleError", "PoissonSampler", "check_per_example_model",
           "per_example_unit_grads", "private_unit_grad_"]

DEFAULT_GAMMA = 0.01
"""Stability constant of ``--dp example``'s normalisation g/(||g|| + gamma) (Bu et al.'s default)."""

# per-example gradients held at once: chunk = this many floats / number of trainable entries
_CHUNK_FLOATS = 1 << 26


class NonFiniteExampleError(NonFiniteGradientError):
    """One example's gradient holds NaN/inf; ``index`` is its position in the batch given to the call."""

    def __init__(self, index: int, name: str | None = None, shape: tuple[int, ...] | None = None):
        self.index = index
        self.name = name
        FloatingPointError.__init__(
            self, f"non-finite gradient (NaN or inf) for example {index} of the batch; its gradient cannot be "
                  "normalised. Check that example's inputs and label for NaN/inf, or lower the learning rate "
                  "if the loss diverged.")


class PoissonSampler:
    """Poisson sampling of batch indices: each of ``n`` records is in a batch with probability ``q``.

    This is the sampling the subsampled-Gaussian accountants (RDP, PRV) assume. The
    realised batch size varies (and may be 0). Own seeded generator: reproducible.
    """

    def __init__(self, n: int, sample_rate: float, *, seed: int | None = 0):
        from .accountant import check_sample_rate
        from .noise import derive_seed

        if n < 1:
            raise ValueError(f"Invalid dataset size n={n}; must be >= 1")
        self.n = int(n)
        self.sample_rate = check_sample_rate(sample_rate)
        self._gen = torch.Generator()
        self._gen.manual_seed(derive_seed(seed, "poisson-sampler"))

    def sample(self) -> Tensor:
        """One batch: the sorted int64 indices of the records that were drawn."""
        keep = torch.rand(self.n, generator=self._gen) < self.sample_rate
        return torch.nonzero(keep).flatten()

    @property
    def expected_batch_size(self) -> float:
        return self.n * self.sample_rate

    def state_dict(self) -> dict:
        return {"generator": self._gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._gen.set_state(state["generator"])


def check_per_example_model(model: nn.Module) -> None:
    """Refuse models whose forward pass mixes the examples of a batch (training-mode BatchNorm)."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training:
            raise ValueError(
                f"module {name!r} is {type(mod).__name__} in training mode: it mixes the examples of a batch, so "
                "per-example gradients (and example-level DP) are undefined. Replace BatchNorm with GroupNorm or "
                "LayerNorm (e.g. a model without BatchNorm: lenet, mlp, convnet), or use --dp node."
            )


def per_example_unit_grads(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                           targets: Tensor, *, scope: str = "global", eps: float = DEFAULT_EPS,
                           gamma: float = 0.0) -> tuple[dict[str, Tensor], Tensor]:
    """Every example's normalised gradient, stacked: ``({name: (B, *p.shape)}, norms)``.

    ``gamma = 0`` (default here): unit vectors; ``gamma > 0``: ``g / (||g|| + gamma)``.
    ``loss_fn(outputs, targets)`` is applied to one example at a time (batch of 1).
    ``norms`` are the gradients' norms before normalisation: shape ``(B,)`` for global
    scope, ``(B, n_tensors)`` for layer scope. Raises :class:`NonFiniteExampleError`
    (a :class:`~ssgd.NonFiniteGradientError`) naming the example if its gradient holds NaN/inf.
    """
    check_eps(eps)
    check_gamma(gamma)
    u, norms, _ = _per_example(model, loss_fn, inputs, targets, scope, eps, gamma)
    return u, norms


def _per_example(model, loss_fn, inputs, targets, scope, eps, gamma, offset=0):
    check_scope(scope)
    check_per_example_model(model)
    from torch.func import functional_call, grad_and_value, vmap

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    params = {n: p.detach() for n, p in named}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def one_loss(pd, x, y):
        out = functional_call(model, (pd, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    g, losses = vmap(grad_and_value(one_loss), in_dims=(None, 0, 0), randomness="different")(params, inputs, targets)
    b = inputs.shape[0]
    units, norms = batched_unit([g[n] for n in names], scope=scope, eps=eps, batch_dims=1, gamma=gamma)
    finite = torch.isfinite(norms).reshape(b, -1).all(dim=1)
    if not bool(finite.all()):
        raise NonFiniteExampleError(offset + int(torch.nonzero(~finite)[0]))
    out = dict(zip(names, units))
    return out, norms, losses.detach()


def private_unit_grad_(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                       targets: Tensor, noise: GaussianNoise | None, *, expected_batch_size: float | None = None,
                       scope: str = "global", eps: float = DEFAULT_EPS, gamma: float = DEFAULT_GAMMA,
                       chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    r"""Write :math:`(\sum_i u_i + \text{noise}) / \text{expected\_batch\_size}` into ``.grad``.

    ``u_i`` is example i's normalised gradient :math:`g_i/(\max(\lVert g_i\rVert, \epsilon) + \gamma)`
    (``gamma=0``: the pure unit vector; norm <= 1 either way); noise comes from ``noise`` (``None``: no
    noise). ``chunk_size`` examples are differentiated at once (default: as many as fit in
    2**26 floats of per-example gradients, at most 4096). ``expected_batch_size`` defaults to
    the realised batch size (only correct without Poisson sampling). An empty batch still gets
    the noise (a step of pure noise is what the accountant assumes). Returns ``(losses, norms)``:
    per-example losses and gradient norms before normalisation (float32). Existing ``.grad``
    values are replaced; on an error nothing is written.
    """
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs and targets disagree on batch size: {inputs.shape[0]} vs {targets.shape[0]}")
    check_eps(eps)
    check_gamma(gamma)
    check_scope(scope)
    if chunk_size is None:
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        chunk_size = max(1, min(4096, _CHUNK_FLOATS // max(1, n_params)))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"Invalid chunk_size={chunk_size!r}; must be an integer >= 1 (or None: automatic)")
    denom = float(inputs.shape[0]) if expected_batch_size is None else float(expected_batch_size)
    if not denom > 0:
        raise ValueError(f"Invalid expected_batch_size={expected_batch_size!r}; must be > 0")
    check_per_example_model(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = {n: torch.zeros_like(p) for n, p in named}
    norms, losses = [], []
    for start in range(0, inputs.shape[0], chunk_size):
        u, nrm, lss = _per_example(model, loss_fn, inputs[start:start + chunk_size],
                                   targets[start:start + chunk_size], scope, eps, gamma, offset=start)
        for n in total:
            total[n].add_(u[n].sum(0))
        norms.append(nrm)
        losses.append(lss)
    with torch.no_grad():
        ts = [total[n] for n, _ in named]
        if noise is not None:
            noise.add_(ts)
        torch._foreach_div_(ts, denom)
    for n, p in named:
        p.grad = total[n]
    if norms:
        return torch.cat(losses), torch.cat(norms)
    return torch.zeros(0), torch.zeros(0, dtype=torch.float32)
