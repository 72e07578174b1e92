import gzip
import struct

import numpy as np
import pytest

from ssgd.data import DatasetError, read_idx


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.astype(">u1").tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_roundtrip_plain_and_gzip(tmp_path, gz):
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3)).astype(np.uint8)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    out = read_idx(path, expect_ndim=3)
    assert out.shape == (5, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)


def test_bad_magic_names_file(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DatasetError, match="bad.idx.*magic"):
        read_idx(path)


def test_truncated_body_names_file_and_sizes(tmp_path):
    arr = np.zeros((10, 2, 2), np.uint8)
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(arr)[:-7])
    with pytest.raises(DatasetError, match=r"short\.idx.*truncated.*\(10, 2, 2\)"):
        read_idx(path)


def test_truncated_gzip_names_file(tmp_path):
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 8, 8), np.uint8)))[:40])
    with pytest.raises(DatasetError, match=r"cut\.idx\.gz"):
        read_idx(path)


def test_trailing_bytes_and_wrong_ndim(tmp_path):
    path = tmp_path / "extra.idx"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"xx")
    with pytest.raises(DatasetError, match="trailing"):
        read_idx(path)
    path2 = tmp_path / "labels.idx"
    path2.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DatasetError, match="1 dimensions, expected 3"):
        read_idx(path2, expect_ndim=3)


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_idx(tmp_path / "nope.idx")
    path = tmp_path / "t.idx"
    path.write_bytes(bytes([0, 0, 0x42, 1]) + struct.pack(">I", 0))
    with pytest.raises(DatasetError, match="type code 0x42"):
        read_idx(path)
