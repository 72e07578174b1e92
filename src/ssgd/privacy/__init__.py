"""Formal privacy on top of SSGD: unit vectors + calibrated Gaussian noise + Opacus's accountant.

A unit vector has norm 1, so the sensitivity of a sum of unit vectors is known by
construction and Gaussian noise calibrated to it gives (ε, δ)-differential privacy
with no clipping threshold. Two levels:

* example level (:func:`private_unit_grad_`, :class:`PoissonSampler`): per-example unit
  vectors summed plus noise -- DP-SGD with normalisation in place of clipping;
* node level (:class:`NodeNoise`, :func:`node_unit_sum_`): each node's unit vector plus
  noise, with the noise once on the sum (secure aggregation) or on every vector (local).

ε comes from Opacus (:class:`PrivacyAccountant`, :func:`compute_epsilon`,
:func:`solve_noise_multiplier`); ssgd has no accountant of its own. Engines: the DDP hook
takes a :class:`NodePrivacy` (``ssgd.distributed.register(..., noise=)``, :func:`ddp_privacy`);
Flower has :class:`ssgd.distributed.flower.PrivateSSGDStrategy` and
:class:`ssgd.distributed.flower.LocalNoiseMod` (they need ``flwr``). See docs/privacy.md.
"""

from .accountant import (
    ACCOUNTANTS,
    PrivacyAccountant,
    PrivacyBudgetError,
    compute_epsilon,
    solve_noise_multiplier,
)
from .engine import make_private
from .example import (DEFAULT_GAMMA, NonFiniteExampleError, PoissonSampler, check_per_example_model,
                      per_example_unit_grads, private_unit_grad_)
from .node import (DEFAULT_BUDGET_DELTA, DEFAULT_MAX_EPSILON, NODE_MODES, BudgetSpentError, NodeNoise, NodePrivacy,
                   ReleaseBudget, node_unit_sum_)
from .noise import LEVELS, GaussianNoise, derive_seed, sensitivity
from .training import (DP_LEVELS, MIN_NODE_LOCAL_NOISE, DPConfig, DPTraining, check_ddp_config, check_dp_setup,
                       check_node_local_sigma, ddp_privacy)

__all__ = [
    "ACCOUNTANTS",
    "BudgetSpentError",
    "DEFAULT_BUDGET_DELTA",
    "DEFAULT_MAX_EPSILON",
    "ReleaseBudget",
    "DEFAULT_GAMMA",
    "NonFiniteExampleError",
    "DPConfig",
    "DPTraining",
    "DP_LEVELS",
    "GaussianNoise",
    "LEVELS",
    "NODE_MODES",
    "NodeNoise",
    "NodePrivacy",
    "PoissonSampler",
    "PrivacyAccountant",
    "PrivacyBudgetError",
    "check_ddp_config",
    "check_dp_setup",
    "check_node_local_sigma",
    "MIN_NODE_LOCAL_NOISE",
    "check_per_example_model",
    "compute_epsilon",
    "ddp_privacy",
    "derive_seed",
    "make_private",
    "node_unit_sum_",
    "per_example_unit_grads",
    "private_unit_grad_",
    "sensitivity",
    "solve_noise_multiplier",
]
