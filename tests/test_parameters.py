"""parameters.npz: round trip, plain-numpy readable, atomic, and strict about what it loads."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastnet import files, parameters
from fastnet.errors import FastnetError
from fastnet.kernels import get_backend
from fastnet.parameters import Parameters, load, save

from .conftest import new_network

DATA = Path(__file__).parent / "data"


def saved(tmp_path, **changes):
    path = tmp_path / "p.npz"
    save(path, Parameters(new_network(32, "relu"), list("0123456789"), {"epochs": 3}, 0.97))
    if changes:
        with np.load(path) as archive:
            arrays = dict(archive)
        arrays.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del arrays[key]
        np.savez(path, **arrays)
    return path


def test_round_trip(tmp_path):
    original = new_network(32, "relu")
    save(tmp_path / "p.npz", Parameters(original, list("0123456789"), {"epochs": 3}, 0.97))
    loaded = load(tmp_path / "p.npz")
    for a, b in zip(loaded.network.params, original.params):
        np.testing.assert_array_equal(a, b)
    assert loaded.network.activation == "relu"
    assert loaded.class_names == list("0123456789")
    assert loaded.training == {"epochs": 3} and loaded.test_accuracy == 0.97


def test_readable_with_plain_numpy_and_no_pickle(tmp_path):
    with np.load(saved(tmp_path), allow_pickle=False) as archive:
        assert archive["W1"].shape == (784, 32) and archive["W1"].dtype == np.float32
        assert list(archive["layer_sizes"]) == [784, 32, 10]
        assert list(archive["input_shape"]) == [28, 28, 1]
        assert str(archive["activation"]) == "relu"
        assert float(archive["input_scale"]) == pytest.approx(1 / 255)
        assert json.loads(str(archive["training"])) == {"epochs": 3}
        assert int(archive["format_version"]) == parameters.FORMAT_VERSION
        assert str(archive["fastnet_version"])


def test_failed_write_keeps_the_old_file(tmp_path):
    path = saved(tmp_path)
    before = path.read_bytes()

    def explode(file):
        file.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.write_atomically(path, explode)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]  # no temporary left behind


def test_nan_weights_are_never_written(tmp_path):
    network = new_network(32)
    network.weights[1][3, 4] = np.nan
    with pytest.raises(FastnetError, match="NaN"):
        save(tmp_path / "p.npz", Parameters(network, list("0123456789")))
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("changes,message", [
    ({"W1": None}, "missing W1"),
    ({"W2": np.zeros((32, 9), np.float32)}, "W2 should be"),
    ({"b1": np.zeros(32, np.int64)}, "b1 should be a float array"),
    ({"format_version": np.int64(99)}, "newer than this fastnet"),
    ({"activation": np.str_("softplus")}, "unknown activation"),
    ({"layer_sizes": np.array([784, 10])}, "layer sizes must be"),
    ({"layer_sizes": np.array([784, 32, 16, 10])}, r"W2 should be of shape \(32, 16\), found \(32, 10\)"),
    ({"input_shape": np.array([28, 27, 1])}, "does not give the network's 784 inputs"),
    ({"input_shape": np.array([28, 14, 2])}, "images have 1 channel"),
    ({"input_shape": np.array([28.5, 28, 1])}, "not whole numbers"),
    ({"input_shape": np.array([2**61 + 1, 784, 1])}, "does not give the network's 784 inputs"),  # 784 in int64
    ({"input_shape": np.array([14, 56, 1])}, "preprocessing 'digit' does not fit"),
    ({"input_shape": np.array([784]), "preprocessing": np.str_("resize")}, "preprocessing 'resize' does not fit"),
    ({"input_scale": np.float64(0.5)}, "neither 1/255"),
    ({"input_scale": np.str_("1")}, "input_scale should be a number"),
    ({"pixel_scale": np.float64(0.5)}, "pixel scale 0.5 is not 1/255, 1 or 0"),
    ({"pixel_scale": np.float64(1.0)}, "1/255 for a model of uint8 pixels"),  # its input_scale is 1/255
    ({"format_version": np.float64(2.7)}, "format_version should be a number"),
    ({"format_version": np.bool_(True)}, "format_version should be a number"),
    ({"format_version": np.int64(-3)}, "format version -3 is not one fastnet wrote"),
    ({"class_names": np.array([str(d) for d in range(9)] + ["3"])}, "class names are not distinct"),
    ({"class_names": np.array([str(d).encode() for d in range(10)])}, "should be 10 strings"),
    ({"class_names": np.array([str(d) for d in range(2_000_000)])}, "should be 10 strings .* found 2000000"),
    ({"W1": np.full((784, 32), 1e300)}, "W1 contains NaN or infinity \\(as float32\\)"),  # float64, finite
    ({"layer_sizes": np.array([784, 32, 1]), "W2": np.zeros((32, 1), np.float32), "b2": np.zeros(1, np.float32),
      "class_names": np.array(["only"])}, "1 output is not a classifier"),
    ({"preprocessing": np.str_("sharpen")}, "unknown preprocessing"),
    ({"class_names": np.array(["a", "b"])}, "should be 10 strings for 10 outputs, found 2 of"),
    ({"b2": np.full(10, np.inf, np.float32)}, "NaN or infinity"),
    ({"classes": np.arange(9, -1, -1)}, r"classes \[9, 8, .* are not its class names"),  # output 0 would be 9
])
def test_bad_contents_are_rejected(tmp_path, changes, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a second line before the error's
        with pytest.raises(FastnetError, match=message):
            load(saved(tmp_path, **changes))


def test_class_names_the_file_cannot_keep_are_refused_before_writing(tmp_path):
    """numpy's strings drop trailing NULs: "a" and "a\\0" were written as two "a"s, a file the loader refuses."""
    from .conftest import new_network

    network = new_network(16, "relu", classes=2)
    with pytest.raises(FastnetError, match="ends in a NUL character"):
        save(tmp_path / "p.npz", Parameters(network, ["a", "a\0"]))
    assert list(tmp_path.iterdir()) == []


def test_a_training_record_nested_too_deeply_is_ignored(tmp_path):
    """The record of how a model was trained is only shown: unreadable, it is left out (it was a RecursionError)."""
    assert load(saved(tmp_path, training=np.str_("[" * 100_000 + "]" * 100_000))).training == {}


def test_object_arrays_are_refused(tmp_path):
    path = saved(tmp_path, W1=np.array([None, 1], dtype=object))
    with pytest.raises(FastnetError, match="cannot read this parameters file"):
        load(path)


@pytest.mark.parametrize("content", [b"", b"not a zip file", None])
def test_truncated_or_foreign_files_are_rejected(tmp_path, content):
    path = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:500] if content is None else content)
    with pytest.raises(FastnetError, match="cannot read this parameters file|not a fastnet parameters file"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FastnetError, match="no such parameters file"):
        load(tmp_path / "nothing.npz")


def test_any_depth_round_trips(tmp_path):
    original = new_network((40, 30, 20), "tanh")
    save(tmp_path / "deep.npz", Parameters(original, list("abcdefghij"), {}, 0.5, "resize", (28, 28, 1)))
    loaded = load(tmp_path / "deep.npz")
    assert loaded.network.layer_sizes == (784, 40, 30, 20, 10) and loaded.network.activation == "tanh"
    for a, b in zip(loaded.network.params, original.params):
        np.testing.assert_array_equal(a, b)
    with np.load(tmp_path / "deep.npz", allow_pickle=False) as archive:
        assert [archive[f"W{layer}"].shape for layer in (1, 2, 3, 4)] == [(784, 40), (40, 30), (30, 20), (20, 10)]


def test_a_version_1_file_loads_and_predicts_as_it_did(tmp_path, mnist_test):
    """tests/data/parameters-v1.npz was written by fastnet before format 2 (784-24-10 relu): it still loads, and
    written again as format 2 it predicts the very same."""
    old = load(DATA / "parameters-v1.npz")
    assert old.network.layer_sizes == (784, 24, 10) and old.input_shape == (28, 28, 1)
    save(tmp_path / "again.npz", old)
    new = load(tmp_path / "again.npz")
    with np.load(tmp_path / "again.npz", allow_pickle=False) as archive:
        assert int(archive["format_version"]) == 2
    images = mnist_test[0][:500]
    probs = [np.empty((500, 10), np.float32) for _ in range(3)]
    for out, stored, backend in zip(probs, (old, new, old), ("numba", "numba", "numpy")):
        get_backend(backend).predict(out, images, stored.network.params, stored.network.activation_code)
    np.testing.assert_array_equal(probs[0], probs[1])
    np.testing.assert_allclose(probs[0], probs[2], atol=2e-6)
