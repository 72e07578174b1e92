"""A small reader for the IDX format (MNIST, Fashion-MNIST), plain or gzipped.

Format (big-endian): two zero bytes, a type code (``0x08`` = uint8, ...), the number
of dimensions ``d``, then ``d`` uint32 sizes, then the data. Every check names the
file: a wrong magic number, a truncated body or trailing bytes raise
:class:`~ssgd.data.datasets.DatasetError`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "IDX_DTYPES"]

IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _error(msg: str):
    from .datasets import DatasetError

    return DatasetError(msg)


def read_idx(path: str | Path, *, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` is decompressed) into a numpy array of its shape.

    ``expect_ndim`` (e.g. 3 for images, 1 for labels) is checked against the header.
    """
    path = Path(path)
    if not path.is_file():
        raise _error(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as e:  # gzip: "Compressed file ended before the end-of-stream marker"
        raise _error(f"{path}: cannot read ({e}); the file is truncated or corrupt -- re-download or reinstall it") from e
    if len(raw) < 4:
        raise _error(f"{path}: truncated IDX header ({len(raw)} bytes; need at least 4)")
    if raw[0] != 0 or raw[1] != 0:
        raise _error(f"{path}: bad IDX magic number {raw[:4].hex()}; expected 0000<type><ndim> (is this an IDX file?)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise _error(f"{path}: unknown IDX data type code 0x{code:02x}; known: {[hex(c) for c in IDX_DTYPES]}")
    if expect_ndim is not None and ndim != expect_ndim:
        raise _error(f"{path}: IDX file has {ndim} dimensions, expected {expect_ndim} "
                     f"({'images' if expect_ndim == 3 else 'labels'}); are the image and label files swapped?")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise _error(f"{path}: truncated IDX header ({len(raw)} bytes; need {head} for {ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - head
    if have < need:
        raise _error(f"{path}: truncated IDX data: header says shape {shape} ({need} bytes) but only {have} bytes "
                     "follow; re-download or reinstall the file")
    if have > need:
        raise _error(f"{path}: {have - need} unexpected trailing bytes after the IDX data of shape {shape}")
    return np.frombuffer(raw, dtype=dtype, count=need // dtype.itemsize, offset=head).reshape(shape).astype(
        dtype.newbyteorder("="))
