import io
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("kymatio")

from ssgd.data import ImageDataset, scattering_channels, scattering_transform, scatternet_cache_path, \
    scatternet_features
from ssgd.data import scatternet as sn


def _data(n_train=6, n_test=3, side=16, seed=0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    return ImageDataset("toy", torch.rand(n_train, 1, side, side, generator=g),
                        torch.randint(0, 10, (n_train,), generator=g),
                        torch.rand(n_test, 1, side, side, generator=g), torch.randint(0, 10, (n_test,), generator=g), 10)


def test_channel_count_matches_the_transform():
    assert scattering_channels(2, 8) == 81 and scattering_channels(1, 8) == 9 and scattering_channels(3, 4) == 61
    x = torch.rand(2, 1, 16, 16)
    assert scattering_transform(x, J=2, L=8).shape == (2, 81, 4, 4)
    assert scattering_transform(x.repeat(1, 3, 1, 1), J=1, L=4).shape == (2, 3 * 5, 8, 8)  # J=1: no order 2


def test_transform_properties():
    x = torch.rand(3, 1, 16, 16)
    f = scattering_transform(x)
    # linear in the order-0 (low-pass) channel, zero for a zero image, non-negative moduli in orders 1 and 2
    assert torch.allclose(scattering_transform(2 * x)[:, 0], 2 * f[:, 0], atol=1e-5)
    assert scattering_transform(torch.zeros(1, 1, 16, 16)).abs().max() < 1e-6
    assert (f[:, 1:] >= -1e-6).all()
    # chunking does not change the result, and examples do not mix
    assert torch.allclose(scattering_transform(x, chunk=1), f, atol=1e-6)
    assert torch.allclose(scattering_transform(x[1:2]), f[1:2], atol=1e-6)


def test_bad_parameters_name_the_value():
    with pytest.raises(ValueError, match="J=3 for 12x12"):
        scattering_transform(torch.rand(1, 1, 12, 12), J=3)
    with pytest.raises(ValueError, match="L=0"):
        scattering_transform(torch.rand(1, 1, 16, 16), L=0)


def test_features_are_cached_and_reused(tmp_path, monkeypatch):
    d = _data()
    f1 = scatternet_features(d, cache_dir=tmp_path)
    assert f1.name == "toy-scatternet" and f1.x_train.shape == (6, 81, 4, 4) and f1.x_test.shape == (3, 81, 4, 4)
    assert torch.equal(f1.y_train, d.y_train) and torch.equal(f1.y_test, d.y_test)
    assert torch.allclose(f1.x_train, scattering_transform(d.x_train), atol=1e-6)
    path = scatternet_cache_path(d, cache_dir=tmp_path)
    assert path.is_file() and list(tmp_path.iterdir()) == [path]

    def boom(*a, **k):
        raise AssertionError("recomputed although the cache is valid")

    monkeypatch.setattr(sn, "scattering_transform", boom)
    f2 = scatternet_features(d, cache_dir=tmp_path)
    assert torch.equal(f2.x_train, f1.x_train) and torch.equal(f2.x_test, f1.x_test)


def test_cache_key_follows_content_and_parameters(tmp_path):
    d = _data()
    other = _data()
    other.y_train = (other.y_train + 1) % 10  # same images, other labels
    p = scatternet_cache_path(d, cache_dir=tmp_path)
    assert p != scatternet_cache_path(other, cache_dir=tmp_path)
    assert p != scatternet_cache_path(d, J=1, cache_dir=tmp_path)
    assert p != scatternet_cache_path(d, L=4, cache_dir=tmp_path)
    assert p == scatternet_cache_path(_data(), cache_dir=tmp_path)


def _save(path, **arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("defect", ["garbage", "nan", "shape", "dtype", "key", "extra", "pickle"])
def test_hostile_cache_is_recomputed(tmp_path, defect):
    d = _data()
    good = scatternet_features(d, cache_dir=tmp_path)
    path = scatternet_cache_path(d, cache_dir=tmp_path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    if defect == "garbage":
        path.write_bytes(b"PK\x03\x04 not a zip")
    else:
        if defect == "nan":
            arrays["x_train"] = arrays["x_train"].copy()
            arrays["x_train"][0, 0, 0, 0] = np.nan
        elif defect == "shape":
            arrays["x_test"] = arrays["x_test"][:2]
        elif defect == "dtype":
            arrays["x_train"] = arrays["x_train"].astype(np.float64)
        elif defect == "key":
            arrays["key"] = np.array("0" * 64)
        elif defect == "extra":
            arrays["more"] = np.zeros(1)
        elif defect == "pickle":
            arrays["x_train"] = np.array([{"a": 1}], dtype=object)
        _save(path, **arrays)
    with pytest.warns(UserWarning, match="unusable"):
        again = scatternet_features(d, cache_dir=tmp_path)
    assert torch.equal(again.x_train, good.x_train) and torch.equal(again.x_test, good.x_test)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file is valid again
        scatternet_features(d, cache_dir=tmp_path)


def test_no_cache_writes_nothing(tmp_path):
    scatternet_features(_data(), cache_dir=tmp_path, cache=False)
    assert list(tmp_path.iterdir()) == []


def test_registered_dataset_reads_fashion_mnist_files(tmp_path, monkeypatch):
    import struct

    from ssgd.data import load_dataset
    from ssgd.data.datasets import FASHION_MNIST_FILES

    rng = np.random.default_rng(0)
    sizes = {"x_train": (4, 28, 28), "y_train": (4,), "x_test": (2, 28, 28), "y_test": (2,)}
    for key, stem in FASHION_MNIST_FILES.items():
        a = rng.integers(0, 10 if key.startswith("y") else 256, sizes[key]).astype(np.uint8)
        (tmp_path / stem).write_bytes(bytes([0, 0, 8, a.ndim]) + struct.pack(">" + "I" * a.ndim, *a.shape)
                                      + a.tobytes())
    monkeypatch.setenv("SSGD_CACHE_DIR", str(tmp_path / "cache"))
    d = load_dataset("fashion-mnist-scatternet", tmp_path)
    assert d.x_train.shape == (4, 81, 7, 7) and d.x_test.shape == (2, 81, 7, 7)
    assert any((tmp_path / "cache" / "scatternet").iterdir())
