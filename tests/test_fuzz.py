"""Fuzzing the readers of untrusted files with random, truncated and corrupted bytes (hypothesis).

Whatever the bytes, the only exception allowed out is FastnetError with a message.
Examples per test: settings(max_examples=...) below, 300 each (1,500 in all).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fastnet.checkpoint import load_checkpoint
from fastnet.training import Interrupted, TrainConfig, train
from fastnet.errors import FastnetError
from fastnet.idx import parse_idx
from fastnet.parameters import Parameters, load, save
from fastnet.preprocess import load_digit

from .conftest import new_network, random_images

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def only_fastnet_errors(read, *args):
    try:
        read(*args)
    except FastnetError as error:
        assert str(error), "an error needs a message"


def valid_idx() -> bytes:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    return bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def mutated(valid: bytes):
    """Strategy: the valid bytes cut short, with bytes overwritten, or with junk added."""
    cut = st.integers(0, len(valid)).map(lambda n: valid[:n])
    flipped = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(
        lambda edits: bytes(_apply(valid, edits)))
    extended = st.binary(min_size=1, max_size=64).map(lambda junk: valid + junk)
    return st.one_of(cut, flipped, extended, st.binary(max_size=2048))


def _apply(valid, edits):
    data = bytearray(valid)
    for index, value in edits:
        data[index] = value
    return data


@EXAMPLES
@given(mutated(valid_idx()))
def test_idx_reader(data):
    only_fastnet_errors(parse_idx, data, "fuzz.idx")


def saved_bytes(write) -> bytes:
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


PARAMETERS = None
CHECKPOINT = None


def parameters_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "p.npz"
    save(path, Parameters(new_network(16), list("0123456789")))
    return path.read_bytes()


@EXAMPLES
@given(data=st.data())
def test_parameters_loader(tmp_path_factory, data):
    global PARAMETERS
    PARAMETERS = PARAMETERS or parameters_file(tmp_path_factory)
    path = tmp_path_factory.mktemp("fuzz") / "p.npz"
    path.write_bytes(data.draw(mutated(PARAMETERS)))
    only_fastnet_errors(load, path)


@EXAMPLES
@given(data=st.data())
def test_checkpoint_loader(tmp_path_factory, data):
    global CHECKPOINT
    if CHECKPOINT is None:  # a real one: a small run with momentum, written after its first of two epochs
        path = tmp_path_factory.mktemp("valid") / "c.npz"
        rng = np.random.default_rng(0)
        inputs, labels = random_images(rng, 64), rng.integers(0, 10, 64).astype(np.uint8)
        stop = np.zeros(16, np.int64)
        with pytest.raises(Interrupted):
            train(TrainConfig(epochs=2, hidden=16, momentum=0.5), (inputs, labels), None, 10,
                  lambda stats: stop.__setitem__(0, 1), checkpoint_path=path, stop=stop)
        load_checkpoint(path)  # valid to start with
        CHECKPOINT = path.read_bytes()
    path = tmp_path_factory.mktemp("fuzz") / "c.npz"
    path.write_bytes(data.draw(mutated(CHECKPOINT)))
    only_fastnet_errors(load_checkpoint, path)


@EXAMPLES
@given(st.lists(st.sampled_from(["W1", "b1", "W2", "b2", "format_version", "layer_sizes", "activation",
                                 "class_names"]), unique=True),
       st.sampled_from([np.zeros(3), np.zeros((2, 2), np.int8), np.array("text"), np.array([b"x"]), np.float64(7)]))
def test_parameters_with_keys_replaced_by_wrong_arrays(tmp_path_factory, keys, replacement):
    """A structurally valid npz whose entries have the wrong kind of content."""
    global PARAMETERS
    PARAMETERS = PARAMETERS or parameters_file(tmp_path_factory)
    with np.load(io.BytesIO(PARAMETERS)) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays.update({key: replacement for key in keys})
    path = tmp_path_factory.mktemp("fuzz") / "p.npz"
    np.savez(path, **arrays)
    only_fastnet_errors(load, path)


def image_files() -> list[bytes]:
    """A small digit as PNG, JPEG, GIF and BMP bytes: the starting points for mutation."""
    from PIL import Image

    digit = Image.fromarray((np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28))
    files = []
    for fmt in ("PNG", "JPEG", "GIF", "BMP"):
        buffer = io.BytesIO()
        digit.save(buffer, fmt)
        files.append(buffer.getvalue())
    return files


@EXAMPLES
@given(data=st.data())
def test_image_loader(data):
    valid = data.draw(st.sampled_from(image_files()))
    damaged = data.draw(mutated(valid))
    try:
        digit = load_digit(damaged)
    except FastnetError as error:
        assert str(error)
    else:  # a mutation Pillow can still decode must still give a proper digit
        assert digit.shape == (784,) and digit.dtype == np.uint8
