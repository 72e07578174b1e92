"""ssgd: share only the unit vector of a gradient, and measure what that hides.

The core is small: :func:`unit_`/:func:`unit` (the transform), :class:`SSGD` (the
optimizer), :class:`SSGDWrapper` (SSGD in front of any optimizer) and
:func:`shard_unit_grad_` (the paper's SSGD(m) in one process). Attacks, defences,
metrics, data, models, distributed engines and experiments live in subpackages.
"""

from .optim import SSGD
from .shards import shard_unit_grad_, split_shards
from .transform import (
    DEFAULT_EPS,
    NONFINITE_POLICIES,
    SCOPES,
    NonFiniteGradientError,
    batched_unit,
    check_eps,
    check_gamma,
    check_nonfinite,
    check_scope,
    grad_norms,
    unit,
    unit_,
)
from .wrapper import SSGDWrapper

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_EPS",
    "NONFINITE_POLICIES",
    "NonFiniteGradientError",
    "SCOPES",
    "SSGD",
    "SSGDWrapper",
    "__version__",
    "batched_unit",
    "check_eps",
    "check_gamma",
    "check_nonfinite",
    "check_scope",
    "grad_norms",
    "shard_unit_grad_",
    "split_shards",
    "unit",
    "unit_",
]
