"""The IDX reader: the shipped files are the canonical MNIST, and damaged files get a clear error."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from fastnet.datasets import MNIST_FILES, load_idx_pair, load_mnist, mnist_dir
from fastnet.errors import FastnetError
from fastnet.fetch import SHA256, SIZES
from fastnet.idx import read_idx

NAMES = [name for pair in MNIST_FILES.values() for name in pair]


@pytest.mark.parametrize("name", NAMES)
def test_shipped_files_are_canonical_mnist(name):
    """The size and SHA-256 of each decompressed file are those fetch verifies downloads against
    (fastnet.fetch.SIZES and fastnet.fetch.SHA256)."""
    content = gzip.decompress((mnist_dir() / name).read_bytes())
    assert len(content) == SIZES[name]
    assert hashlib.sha256(content).hexdigest() == SHA256[name]


def test_fetch_verifies_exactly_the_files_load_mnist_reads():
    assert sorted(SHA256) == sorted(SIZES) == sorted(NAMES)


@pytest.mark.parametrize("split,count", [("train", 60000), ("test", 10000)])
def test_load_mnist_gives_contiguous_uint8_arrays(split, count):
    images, labels = load_mnist(split)
    assert images.shape == (count, 784) and images.dtype == np.uint8 and images.flags.c_contiguous
    assert labels.shape == (count,) and labels.dtype == np.uint8
    assert images.flags.writeable  # readonly arrays would make Numba compile every kernel a second time
    assert set(np.unique(labels)) == set(range(10))


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_reads_raw_and_gzipped(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), array)


@pytest.mark.parametrize("damage,message", [
    (lambda b: b[:-1], "truncated IDX file"),
    (lambda b: b + b"\0", "too long"),
    (lambda b: b[:6], "truncated IDX header"),
    (lambda b: b"\x12\x34" + b[2:], "bad magic"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "not supported"),
    (lambda b: b"", "bad magic"),
])
def test_damaged_files_are_rejected(tmp_path, damage, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(damage(idx_bytes(np.zeros((2, 3, 4), np.uint8))))
    with pytest.raises(FastnetError, match=message):
        read_idx(path)


def test_truncated_gzip_and_missing_file(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))[:-20])
    with pytest.raises(FastnetError, match="decompress"):
        read_idx(path)
    with pytest.raises(FastnetError, match="no such file"):
        read_idx(tmp_path / "missing.gz")


def test_count_mismatch_between_images_and_labels(tmp_path):
    (tmp_path / "images").write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8)))
    (tmp_path / "labels").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(FastnetError, match="5 images but .* 4 labels"):
        load_idx_pair(tmp_path / "images", tmp_path / "labels")
