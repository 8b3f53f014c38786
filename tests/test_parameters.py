"""parameters.npz: round trip, plain-numpy readable, atomic, and strict about what it loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastnet import files, parameters
from fastnet.errors import FastnetError
from fastnet.parameters import Parameters, load, save

from .conftest import new_network


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
    network.W2[3, 4] = np.nan
    with pytest.raises(FastnetError, match="NaN"):
        save(tmp_path / "p.npz", Parameters(network, list("0123456789")))
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("changes,message", [
    ({"W1": None}, "missing W1"),
    ({"W2": np.zeros((32, 9), np.float32)}, "W2 should be"),
    ({"b1": np.zeros(32, np.int64)}, "b1 should be a float array"),
    ({"format_version": np.int64(99)}, "newer than this fastnet"),
    ({"activation": np.str_("tanh")}, "unknown activation"),
    ({"class_names": np.array(["a", "b"])}, "2 class names for 10 outputs"),
    ({"b2": np.full(10, np.inf, np.float32)}, "NaN or infinity"),
])
def test_bad_contents_are_rejected(tmp_path, changes, message):
    with pytest.raises(FastnetError, match=message):
        load(saved(tmp_path, **changes))


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
