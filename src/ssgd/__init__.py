"""ssgd: share only the unit vector of a gradient, and measure what that hides.

The core is small: :func:`unit_`/:func:`unit` (the transform), :class:`SSGD` (the
optimizer), :class:`SSGDWrapper` (SSGD in front of any optimizer) and
:func:`shard_unit_grad_` (the paper's SSGD(m) in one process). Attacks, defences,
metrics, data, models, distributed engines and experiments live in subpackages.
"""

from .optim import SSGD
from .shards import shard_unit_grad_, split_shards
from .transform import DEFAULT_EPS, NonFiniteGradientError, grad_norms, unit, unit_
from .wrapper import SSGDWrapper

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_EPS",
    "NonFiniteGradientError",
    "SSGD",
    "SSGDWrapper",
    "__version__",
    "grad_norms",
    "shard_unit_grad_",
    "split_shards",
    "unit",
    "unit_",
]
