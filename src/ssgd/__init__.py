"""ssgd: share only the unit vector of a gradient, and measure what that hides.

The core is small: :func:`unit_`/:func:`unit`/:func:`batched_unit` (the transform, in
:mod:`ssgd.transform` with its validators), :class:`SSGD` (the optimizer), :class:`SSGDWrapper`
(SSGD in front of any optimizer) and :func:`shard_unit_grad_` (the paper's SSGD(m) in one
process). Attacks, defences, metrics, data, models, distributed engines and experiments live in
subpackages.
"""

from .optim import SSGD
from .shards import shard_unit_grad_, split_shards
from .transform import NonFiniteGradientError, batched_unit, unit, unit_
from .wrapper import SSGDWrapper

__version__ = "0.1.0"

__all__ = [
    "NonFiniteGradientError",
    "SSGD",
    "SSGDWrapper",
    "__version__",
    "batched_unit",
    "shard_unit_grad_",
    "unit",
    "unit_",
]
