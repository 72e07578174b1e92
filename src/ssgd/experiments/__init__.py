"""Experiments: training, and the paper reproductions built on it."""

from ..models.optimizers import DEFAULT_LR, OPTIMIZERS, build_optimizer
from .train import TrainConfig, TrainResult, evaluate, train

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "TrainConfig", "TrainResult", "build_optimizer", "evaluate", "train"]
