import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from ssgd.data import DATASETS, DatasetError, ImageDataset, load_dataset, subsample, train_val_split
from ssgd.data.datasets import FASHION_MNIST_DIR, FASHION_MNIST_FILES


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.astype(np.uint8).tobytes()


def _write_fmnist(folder, n_train=30, n_test=10, gz=True, labels_max=9):
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28)), "y_train": rng.integers(0, labels_max + 1, n_train),
        "x_test": rng.integers(0, 256, (n_test, 28, 28)), "y_test": rng.integers(0, labels_max + 1, n_test),
    }
    for key, stem in FASHION_MNIST_FILES.items():
        data = _idx(arrays[key])
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_dir(tmp_path, gz):
    arrays = _write_fmnist(tmp_path, gz=gz)
    d = load_dataset("fashion-mnist", tmp_path)
    assert d.x_train.shape == (30, 1, 28, 28) and d.x_test.shape == (10, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and 0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1
    np.testing.assert_allclose(d.x_train[3, 0].numpy() * 255, arrays["x_train"][3], atol=1e-3)
    assert d.y_train.tolist() == arrays["y_train"].tolist() and d.num_classes == 10


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path / "absent")
    _write_fmnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.*missing"):
        load_dataset("fashion-mnist", tmp_path)


def test_fashion_mnist_bad_labels_and_count_mismatch_name_the_file(tmp_path):
    _write_fmnist(tmp_path, labels_max=12)
    with pytest.raises(DatasetError, match="labels-idx1-ubyte.gz.*out of range"):
        load_dataset("fashion-mnist", tmp_path)
    _write_fmnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.zeros(29, np.uint8))))
    with pytest.raises(DatasetError, match="30 images.*29 labels"):
        load_dataset("fashion-mnist", tmp_path)


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_labels_are_balanced():
    from ssgd.data import read_idx

    y = read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz", expect_ndim=1)
    assert y.shape == (10000,) and np.bincount(y).tolist() == [1000] * 10


def test_digits_and_registry():
    assert {"mnist", "fashion-mnist", "digits", "cifar10"} <= set(DATASETS)
    d = load_dataset("digits")
    assert d.shape == (1, 8, 8) and d.x_train.shape[0] + d.x_test.shape[0] == 1797
    assert float(d.x_train.max()) == 1.0 and float(d.x_train.min()) == 0.0
    with pytest.raises(ValueError, match="Unknown dataset 'nope'"):
        load_dataset("nope")


def _write_cifar(folder, n=6, bad_labels=False):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, n).tolist()
        if bad_labels and name == "test_batch":
            labels[0] = 10
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), b"labels": labels}, fh)


def test_cifar10_from_user_folder(tmp_path):
    sub = tmp_path / "cifar-10-batches-py"
    sub.mkdir()
    _write_cifar(sub)
    d = load_dataset("cifar10", tmp_path)
    assert d.x_train.shape == (30, 3, 32, 32) and d.x_test.shape == (6, 3, 32, 32)


def test_cifar10_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("cifar10")
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_dataset("cifar10", tmp_path)
    _write_cifar(tmp_path, bad_labels=True)
    with pytest.raises(DatasetError, match="test_batch.*labels out of range"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "data_batch_2").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match="data_batch_2"):
        load_dataset("cifar10", tmp_path)


def test_validate_rejects_bad_shapes_and_labels():
    x = torch.zeros(4, 1, 2, 2)
    with pytest.raises(DatasetError, match="4 images but 3 labels"):
        ImageDataset("t", x, torch.zeros(3, dtype=torch.long), x, torch.zeros(4, dtype=torch.long), 2).validate()
    with pytest.raises(DatasetError, match="out of range"):
        ImageDataset("t", x, torch.full((4,), 5), x, torch.zeros(4, dtype=torch.long), 2).validate()
    with pytest.raises(DatasetError, match=r"\(N, C, H, W\)"):
        ImageDataset("t", torch.zeros(4, 2, 2), torch.zeros(4, dtype=torch.long), x,
                     torch.zeros(4, dtype=torch.long), 2).validate()


def test_train_val_split_is_disjoint_stratified_and_keeps_test():
    d = load_dataset("digits")
    tr, va = train_val_split(d, 0.2, seed=3)
    assert tr.x_train.shape[0] + va.x_test.shape[0] == d.x_train.shape[0]
    assert torch.equal(tr.x_test, d.x_test)  # the test split is untouched
    # disjoint and complete: tag every training image with its index
    n = d.x_train.shape[0]
    tagged = ImageDataset("t", torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), d.y_train, d.x_test, d.y_test, 10)
    ttr, tva = train_val_split(tagged, 0.2, seed=3)
    a, b = set(ttr.x_train.flatten().long().tolist()), set(tva.x_test.flatten().long().tolist())
    assert not a & b and a | b == set(range(n))
    frac = torch.bincount(va.y_test, minlength=10).float() / torch.bincount(d.y_train, minlength=10).float()
    assert torch.all((frac - 0.2).abs() < 0.03)
    tr2, va2 = train_val_split(d, 0.2, seed=3)
    assert torch.equal(va.y_test, va2.y_test) and torch.equal(tr.x_train, tr2.x_train)
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        train_val_split(d, 1.5)


def test_subsample_is_stratified_and_seeded():
    d = load_dataset("digits")
    s = subsample(d, 200, 50, seed=1)
    assert abs(s.x_train.shape[0] - 200) <= 10 and abs(s.x_test.shape[0] - 50) <= 10
    assert torch.bincount(s.y_train, minlength=10).min() >= 15
    assert torch.equal(subsample(d, 200, 50, seed=1).y_train, s.y_train)
    assert subsample(d, None, None).x_train.shape == d.x_train.shape


def test_mnist_reads_data_dir_instead_of_ignoring_it(tmp_path):
    # --data-dir used to be ignored for mnist (the embedded 5,000 samples came back silently)
    arrays = _write_fmnist(tmp_path, n_train=12, n_test=4)
    d = load_dataset("mnist", tmp_path)
    assert d.name == "mnist" and d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (4, 1, 28, 28)
    assert d.y_test.tolist() == arrays["y_test"].tolist()
    with pytest.raises(DatasetError, match="MNIST folder not found"):
        load_dataset("mnist", tmp_path / "absent")


def test_digits_refuses_a_data_dir_it_would_not_read(tmp_path):
    with pytest.raises(DatasetError, match="--data-dir .*drop --data-dir"):
        load_dataset("digits", tmp_path)
