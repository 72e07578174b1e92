"""ScatterNet features: the handcrafted features of Tramèr & Boneh (ICLR 2021) for private linear models.

A scattering transform (Mallat; Oyallon & Mallat 2015) with ``J`` scales and ``L`` angles maps
an image of ``C`` channels and ``H x W`` pixels to ``C * K`` channels of ``H/2^J x W/2^J``,
with ``K = 1 + J*L + L^2 * J*(J-1)/2`` (81 for ``J = 2, L = 8``: 28x28 -> 81 x 7 x 7). The
transform has no learned parameters and looks at no statistics of the data, so computing it
costs no privacy; Tramèr & Boneh train a linear model on top with DP-SGD and reach 89.7 % on
Fashion-MNIST at ε = 3 (the model, with its data-independent group normalisation, is
``scatter-linear`` in :mod:`ssgd.models`).

The transform comes from kymatio (optional extra ``ssgd[scatter]``). kymatio 0.3's top-level
``kymatio.torch`` import fails with scipy >= 1.15 (``sph_harm`` was removed), so the 2-D torch
frontend is imported directly.

Features are computed once and cached on disk (``$SSGD_CACHE_DIR``, else ``~/.cache/ssgd``), keyed
by a hash of the images and labels and by the transform's parameters. A cache file is hostile
input: it is read without pickle, and its key, names, shapes, dtype and finiteness are checked;
a file that fails any check is recomputed and overwritten (a warning says why).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .datasets import DatasetError, ImageDataset, _cache_dir, load_fashion_mnist, register_dataset

__all__ = ["SCATTERNET_J", "SCATTERNET_L", "scattering_channels", "scattering_transform", "scatternet_features",
           "scatternet_cache_path", "load_fashion_mnist_scatternet"]

SCATTERNET_J = 2
SCATTERNET_L = 8
_FORMAT = "ssgd-scatternet-v1"
_KEYS = ("format", "key", "x_train", "x_test")


def scattering_channels(J: int = SCATTERNET_J, L: int = SCATTERNET_L) -> int:
    """Channels per input channel of a scattering transform of order 2: ``1 + J*L + L^2*J*(J-1)/2``."""
    return 1 + J * L + L * L * J * (J - 1) // 2


def _check_params(J: int, L: int, shape: tuple[int, ...]) -> None:
    for name, v in (("J", J), ("L", L)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"Invalid scattering {name}={v!r}; must be an integer >= 1 (Tramèr & Boneh: J=2, L=8)")
    if len(shape) != 3:
        raise ValueError(f"scattering needs images (C, H, W), got per-example shape {tuple(shape)}")
    _, h, w = shape
    if h % (2 ** J) or w % (2 ** J) or h < 2 ** (J + 1) or w < 2 ** (J + 1):
        raise ValueError(f"Invalid scattering J={J} for {h}x{w} images: the sides must be multiples of 2^J "
                         f"= {2 ** J} and at least {2 ** (J + 1)}; use a smaller J")


def _frontend():
    try:
        from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D
    except ImportError as e:
        raise DatasetError("ScatterNet features need kymatio: pip install 'ssgd[scatter]' (or pip install kymatio)"
                           ) from e
    return ScatteringTorch2D


def scattering_transform(x: Tensor, *, J: int = SCATTERNET_J, L: int = SCATTERNET_L, chunk: int = 2048) -> Tensor:
    """Scattering features of images ``x`` (N, C, H, W): float32 (N, C*K, H/2^J, W/2^J), on ``x``'s device."""
    if x.ndim != 4:
        raise ValueError(f"scattering_transform needs images (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    _check_params(J, L, (c, h, w))
    S = _frontend()(J=J, shape=(h, w), L=L).to(x.device)
    out = torch.empty(n, c * scattering_channels(J, L), h >> J, w >> J, dtype=torch.float32, device=x.device)
    with torch.no_grad():
        for i in range(0, n, chunk):
            out[i:i + chunk] = S(x[i:i + chunk].float()).reshape(-1, *out.shape[1:])
    return out


def _digest(data: ImageDataset, J: int, L: int) -> str:
    h = hashlib.sha256(f"{_FORMAT}|J={J}|L={L}|".encode())
    for t in (data.x_train, data.y_train, data.x_test, data.y_test):
        a = np.ascontiguousarray(t.detach().cpu().numpy())
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def scatternet_cache_path(data: ImageDataset, *, J: int = SCATTERNET_J, L: int = SCATTERNET_L,
                          cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`scatternet_features` keeps the features of ``data`` (the name holds the content hash)."""
    folder = Path(cache_dir) if cache_dir is not None else _cache_dir() / "scatternet"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in data.name)[:40]
    return folder / f"{safe}-J{J}-L{L}-{_digest(data, J, L)[:24]}.npz"


def _load_cached(path: Path, key: str, expect: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` (with a warning naming the problem) for anything but a valid file."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if names != set(_KEYS):
                raise ValueError(f"holds {sorted(names)}, expected {sorted(_KEYS)}")
            if str(z["format"]) != _FORMAT or str(z["key"]) != key:
                raise ValueError("its format tag or content key does not match these images")
            out = {}
            for split, shape in expect.items():
                a = z[split]
                if a.dtype != np.float32 or a.shape != shape:
                    raise ValueError(f"{split} is {a.dtype} {a.shape}, expected float32 {shape}")
                if not np.isfinite(a).all():
                    raise ValueError(f"{split} holds non-finite values")
                out[split] = a
            return out
    except Exception as e:  # noqa: BLE001 - any parse failure of a hostile file (BadZipFile, EOFError, ...)
        warnings.warn(f"ScatterNet cache {path} is unusable ({type(e).__name__}: {e}); recomputing it", stacklevel=3)
        return None


def scatternet_features(data: ImageDataset, *, J: int = SCATTERNET_J, L: int = SCATTERNET_L,
                        cache_dir: str | os.PathLike | None = None, cache: bool = True,
                        log=None) -> ImageDataset:
    """``data`` with its images replaced by their scattering features (same labels, name ``<name>-scatternet``).

    Features are float32 (N, C*K, H/2^J, W/2^J), computed once and cached (module doc); ``cache=False``
    neither reads nor writes the cache."""
    _check_params(J, L, tuple(data.x_train.shape[1:]))
    c, h, w = data.x_train.shape[1:]
    feat_shape = (c * scattering_channels(J, L), h >> J, w >> J)
    expect = {"x_train": (data.x_train.shape[0], *feat_shape), "x_test": (data.x_test.shape[0], *feat_shape)}
    key = _digest(data, J, L)
    path = scatternet_cache_path(data, J=J, L=L, cache_dir=cache_dir)
    arrays = _load_cached(path, key, expect) if cache else None
    if arrays is None:
        if log is not None:
            log(f"computing ScatterNet features (J={J}, L={L}) of {expect['x_train'][0] + expect['x_test'][0]} "
                f"images" + (f"; caching them in {path}" if cache else ""))
        arrays = {split: scattering_transform(getattr(data, split), J=J, L=L).cpu().numpy() for split in expect}
        if cache:
            try:
                from ..report.io import atomic_write_bytes

                buf = io.BytesIO()
                np.savez(buf, format=np.array(_FORMAT), key=np.array(key), **arrays)
                atomic_write_bytes(path, buf.getvalue())
            except OSError as e:  # a read-only cache folder costs time, not results
                warnings.warn(f"could not write the ScatterNet cache {path} ({e}); features are not cached",
                              stacklevel=2)
    return ImageDataset(f"{data.name}-scatternet", torch.from_numpy(arrays["x_train"]), data.y_train,
                        torch.from_numpy(arrays["x_test"]), data.y_test, data.num_classes).validate()


@register_dataset("fashion-mnist-scatternet")
def load_fashion_mnist_scatternet(data_dir=None) -> ImageDataset:
    """Fashion-MNIST as ScatterNet features (J = 2, L = 8: 81 x 7 x 7 per image), as in Tramèr & Boneh 2021.

    Reads the same IDX files as ``fashion-mnist``; the features are computed once (about 2 minutes on
    one CPU thread for the 70,000 images) and then read from the cache."""
    return scatternet_features(load_fashion_mnist(data_dir))
