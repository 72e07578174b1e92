"""Gradient-inversion attacks, one interface: ``attack.reconstruct(model, shared, meta)``.

Registered by name (:func:`get_attack`): ``dlg``, ``idlg``, ``inverting``, ``analytic`` and the
SSGD-aware ``dlg-unit`` and ``inverting-layer`` and the baseline-aware ``dlg-aware`` and ``analytic-aware``. Many targets run stacked
(:meth:`Attack.reconstruct_batch`); label recovery alone is :func:`recover_labels`.
"""

from .analytic import Analytic, AnalyticAware
from .base import ATTACKS, Attack, AttackMeta, Reconstruction, get_attack, list_attacks, register_attack
from .engine import INITS, DummyGradients, initial_images, lbfgs, signed_adam
from .labels import last_layer_signal, recover_labels, shard_assignments
from .optimization import DLG, IDLG, DLGAware, DLGUnit, Inverting, InvertingLayer

__all__ = ["ATTACKS", "Analytic", "AnalyticAware", "Attack", "AttackMeta", "DLG", "DLGAware", "DLGUnit", "DummyGradients", "IDLG", "INITS",
           "Inverting", "InvertingLayer", "Reconstruction", "get_attack", "initial_images", "last_layer_signal",
           "lbfgs", "list_attacks", "recover_labels", "register_attack", "shard_assignments", "signed_adam"]
