"""The IDX reader: the shipped files are the canonical MNIST, and damaged files get a clear error."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from fastnet.datasets import MNIST_FILES, load_idx_pair, load_mnist, mnist_dir
from fastnet.errors import FastnetError
from fastnet.idx import read_idx

CANONICAL_SHA256 = {  # of the decompressed files (DEVELOPERS.md)
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


@pytest.mark.parametrize("name", sorted(CANONICAL_SHA256))
def test_shipped_files_are_canonical_mnist(name):
    content = gzip.decompress((mnist_dir() / name).read_bytes())
    assert hashlib.sha256(content).hexdigest() == CANONICAL_SHA256[name]


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


def test_mnist_file_names_cover_both_splits():
    assert set(MNIST_FILES) == {"train", "test"}
