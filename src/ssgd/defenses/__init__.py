"""Defences: what a node shares instead of its raw gradient (``list[Tensor] -> list[Tensor]``).

Select them by spec string with :func:`get_defense` (``'ssgd-global'``, ``'noise:sigma=0.01'``).
"""

from ..specs import coerce_params, parse_spec
from .base import DEFENSES, Defense, batch_gradient, get_defense, list_defenses, register_defense
from .builtin import (DPSGD, FP16, NoDefense, Noise, Prune, Sign, SSGDGlobal, SSGDLayer, SSGDNoise, SSGDShards)

__all__ = ["DEFENSES", "DPSGD", "Defense", "FP16", "NoDefense", "Noise", "Prune", "SSGDGlobal", "SSGDLayer",
           "SSGDNoise", "SSGDShards", "Sign", "batch_gradient", "coerce_params", "get_defense",
           "list_defenses", "parse_spec", "register_defense"]
