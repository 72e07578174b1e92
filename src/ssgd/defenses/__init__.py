"""Defences: what a node shares instead of its raw gradient (``list[Tensor] -> list[Tensor]``).

Select them by spec string with :func:`get_defense` (``'ssgd-global'``, ``'noise:sigma=0.01'``).
"""

from .base import DEFENSES, Defense, batch_gradient, get_defense, list_defenses, register_defense
from .builtin import (DPSGD, FP16, NoDefense, Noise, Prune, Sign, SSGDGlobal, SSGDLayer, SSGDNoise, SSGDShards,
                      gaussian_epsilon)
from .spec import coerce_params, parse_spec

__all__ = ["DEFENSES", "DPSGD", "Defense", "FP16", "NoDefense", "Noise", "Prune", "SSGDGlobal", "SSGDLayer",
           "SSGDNoise", "SSGDShards", "Sign", "batch_gradient", "coerce_params", "gaussian_epsilon", "get_defense",
           "list_defenses", "parse_spec", "register_defense"]
