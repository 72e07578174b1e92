"""Experiments: training, and the paper reproductions built on it.

Every reproduction follows :mod:`ssgd.experiments.contract`: a config dataclass with
``validate()``, ``quick()`` and ``run(run_dir, *, resume=False, progress=True) -> ExperimentResult``.
"""

from ..models.optimizers import DEFAULT_LR, OPTIMIZERS, build_optimizer
from .contract import Experiment, ExperimentResult
from .poisoning import PoisoningConfig
from .sweep import SweepConfig
from .table2 import Table2Config
from .table6 import Table6Config
from .train import TrainConfig, TrainResult, evaluate, train

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "Experiment", "ExperimentResult", "PoisoningConfig", "SweepConfig",
           "Table2Config", "Table6Config", "TrainConfig", "TrainResult", "build_optimizer", "evaluate", "train"]
