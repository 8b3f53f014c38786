"""The Numba kernels against the numpy reference, on the same inputs.

Tolerances: both run in float32 (epsilon 1.2e-7) but sum in different orders
(Numba: ink pixels four at a time and hidden units in blocks; numpy: BLAS).
A sum of ~150-784 terms of size <= 1 then differs by at most a few 1e-6, so
activations and probabilities (in [0, 1]) must agree to 2e-6 and gradients to
2e-6 of their largest magnitude. A real bug (a wrong index, a missed pixel, a
race) shows up as errors of 1e-3 or more.
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import pytest
from numba import njit

from fastnet.kernels import numba_backend, numpy_backend
from fastnet.kernels.intrinsics import nonzero_bits32, trailing_zeros

from .conftest import assert_close, new_network, random_images

ATOL = 2e-6
SHAPES = [(128, "sigmoid"), (128, "relu"), (100, "sigmoid"), (200, "relu"), (16, "sigmoid")]


def batch(kind: str, mnist_train, n: int):
    if kind == "real":
        images, labels = mnist_train
        rows = np.random.default_rng(7).choice(len(images), n, replace=False)
        return images[rows].copy(), labels[rows].copy()
    rng = np.random.default_rng(11)
    return random_images(rng, n), rng.integers(0, 10, n).astype(np.uint8)


def run_forward(backend, network, images):
    hidden = np.empty((len(images), network.W1.shape[1]), np.float32)
    probs = np.empty((len(images), 10), np.float32)
    backend.forward(hidden, probs, images, network.params, network.activation_code)
    return hidden, probs


@pytest.mark.parametrize("kind", ["real", "random"])
@pytest.mark.parametrize("n_hidden,activation", SHAPES)
def test_forward_matches_reference(kind, n_hidden, activation, mnist_train):
    images, _ = batch(kind, mnist_train, 33)
    network = new_network(n_hidden, activation)
    fast_hidden, fast_probs = run_forward(numba_backend, network, images)
    ref_hidden, ref_probs = run_forward(numpy_backend, network, images)
    assert_close("hidden", fast_hidden, ref_hidden, ATOL)
    assert_close("probs", fast_probs, ref_probs, ATOL)


@pytest.mark.parametrize("kind", ["real", "random"])
@pytest.mark.parametrize("n_hidden,activation", SHAPES)
def test_backward_matches_reference(kind, n_hidden, activation, mnist_train):
    images, labels = batch(kind, mnist_train, 33)
    network = new_network(n_hidden, activation)
    hidden, probs = run_forward(numpy_backend, network, images)
    grads = {}
    for backend in (numba_backend, numpy_backend):
        grads[backend] = [np.empty_like(p) for p in network.params]
        backend.backward(grads[backend], hidden, probs, images, labels, network.params, network.activation_code)
    for name, fast, ref in zip(("dW1", "db1", "dW2", "db2"), grads[numba_backend], grads[numpy_backend]):
        assert np.abs(ref).max() > 0, f"{name} is all zero: the test would prove nothing"
        assert_close(name, fast, ref, ATOL * np.abs(ref).max())


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01), (0.5, 0.01)])
@pytest.mark.parametrize("n_hidden,activation", SHAPES)
def test_training_steps_match_reference(n_hidden, activation, momentum, weight_decay, mnist_train):
    """Three batches of forward + backward + update, each starting from the previous one's weights."""
    images, labels = mnist_train
    order = np.random.default_rng(3).permutation(len(images))[:96]
    results = {}
    for backend in (numba_backend, numpy_backend):
        network = new_network(n_hidden, activation)
        velocity = [np.zeros_like(p) for p in network.params]
        loss, correct, _ = backend.train_epoch(network.params, velocity, backend.prepare(images), labels, order, 32,
                                            0.5, momentum, network.activation_code, weight_decay=weight_decay)
        results[backend] = network, velocity, loss, correct
    fast, ref = results[numba_backend], results[numpy_backend]
    start = new_network(n_hidden, activation)
    for name, fast_w, ref_w, start_w in zip(("W1", "b1", "W2", "b2"), fast[0].params, ref[0].params, start.params):
        assert np.abs(ref_w - start_w).max() > 1e-4, f"{name} did not move: the test would prove nothing"
        assert_close(name, fast_w, ref_w, 1e-5)
    for name, fast_v, ref_v in zip(("v1", "vb1", "v2", "vb2"), fast[1], ref[1]):
        assert_close(name, fast_v, ref_v, 1e-5)
    assert fast[2] == pytest.approx(ref[2], rel=1e-5)
    assert fast[3] == ref[3]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_batch_size_one_and_ragged_last_batch_match_reference(momentum, mnist_train):
    """Each way of adding W1's gradient (a kernel of its own: under 16 images image by image, else pixel by
    pixel), with plain SGD and with momentum."""
    images, labels = mnist_train
    order = np.arange(37)
    for batch_size in (1, 5, 16, 33):  # 16 and 33: the pixel-by-pixel W1 update, 33 in two parts
        results = []
        for backend in (numba_backend, numpy_backend):
            network = new_network(100, "sigmoid")
            velocity = [np.zeros_like(p) for p in network.params]
            backend.train_epoch(network.params, velocity, backend.prepare(images), labels, order, batch_size, 0.3,
                                momentum, 0)
            results.append(network)
        for name, fast, ref in zip(("W1", "b1", "W2", "b2"), results[0].params, results[1].params):
            assert_close(f"{name} (batch {batch_size}, momentum {momentum})", fast, ref, 1e-5)


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.1), (0.9, 0.1)])
def test_sgd_update_matches_reference(momentum, weight_decay):
    rng = np.random.default_rng(5)
    shapes = [(784, 128), (128,), (128, 10), (10,)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    out = {}
    for backend in (numba_backend, numpy_backend):
        p, v = [x.copy() for x in params], [np.full(s, 0.5, np.float32) for s in shapes]
        backend.sgd_update(p, grads, v, 0.1, momentum, weight_decay)
        out[backend] = p, v
    for i in range(4):
        assert_close(f"param {i}", out[numba_backend][0][i], out[numpy_backend][0][i], 1e-6)
        assert_close(f"velocity {i}", out[numba_backend][1][i], out[numpy_backend][1][i], 1e-6)


def test_predict_matches_reference(mnist_test):
    images = mnist_test[0][:1000]
    network = new_network(128, "sigmoid")
    probs = {}
    for backend in (numba_backend, numpy_backend):
        probs[backend] = np.empty((len(images), 10), np.float32)
        backend.predict(probs[backend], images, network.params, 0)
    assert_close("probs", probs[numba_backend], probs[numpy_backend], ATOL)


def test_ink_index_lists_exactly_the_nonzero_pixels_and_their_values(mnist_train):
    images = mnist_train[0][:500]
    index = numba_backend.prepare(images, chunk=64)  # small chunks: 63/64 and 127/128 straddle a boundary
    for n in (0, 1, 63, 64, 127, 128, 250, 499):
        ink = slice(index.start[n], index.start[n + 1])
        np.testing.assert_array_equal(index.pixels[ink], np.flatnonzero(images[n]))
        np.testing.assert_array_equal(index.values[ink], images[n][images[n] != 0])
    assert index.start[-1] == np.count_nonzero(images)


@njit
def _ink_listed_by_prediction(images, vector_compress):
    """The ink index prediction builds, one row at a time (numba_backend._append_ink)."""
    start = np.zeros(len(images) + 1, np.int64)
    pixels = np.empty(images.size + 64, np.uint16)
    values = np.empty(images.size + 64, np.uint8)
    for n in range(len(images)):
        start[n + 1] = numba_backend._append_ink(images[n], pixels, values, start[n], vector_compress)
    return start, pixels[:start[-1]], values[:start[-1]]


OLD_LLVM = pytest.mark.skipif(llvm.llvm_version_info < (19,), reason="LLVM before 19 has no vector compress")


@pytest.mark.parametrize("vector_compress", [pytest.param(True, marks=OLD_LLVM), None],
                         ids=["vector-compress", "8-pixel-words"])
@pytest.mark.parametrize("width", [784, 100, 61])  # 61: neither 64 nor 8 divides it
def test_prediction_lists_the_same_ink_as_prepare(vector_compress, width, mnist_test):
    rng = np.random.default_rng(3)
    images = np.concatenate([mnist_test[0][:300], random_images(rng, 20), np.zeros((2, 784), np.uint8),
                             np.full((2, 784), 255, np.uint8)])
    images[-1, :-1] = 0  # ink in the last pixel only
    images = np.ascontiguousarray(images[:, :width])
    expected = numba_backend.prepare(images)
    for got, want in zip(_ink_listed_by_prediction(images, vector_compress), expected):
        np.testing.assert_array_equal(got, want)


@njit
def _images_with_ink(pixel_ink):
    """Per row of pixel_ink: its nonzero_bits32 mask, and the columns trailing_zeros walks it to (-1 after)."""
    masks = np.empty(pixel_ink.shape[0], np.uint64)
    columns = np.full((pixel_ink.shape[0], 32), -1, np.int64)
    for row in range(pixel_ink.shape[0]):
        bits = nonzero_bits32(pixel_ink, row)
        masks[row] = bits
        k = 0
        while bits != 0:
            columns[row, k] = trailing_zeros(bits)
            bits &= bits - np.uint64(1)
            k += 1
    return masks, columns


def test_the_w1_updates_byte_masks_find_exactly_the_images_with_ink():
    """The two intrinsics the pixel-by-pixel W1 update walks its (D, 32) tile with. Rows are 40 wide here,
    with ink in columns 32-39 too: a mask must cover its own row's first 32 bytes and nothing else."""
    rng = np.random.default_rng(4)
    tile = np.where(rng.random((60, 40)) < 0.3, rng.integers(1, 256, (60, 40)), 0).astype(np.uint8)
    tile[0], tile[1], tile[2, :32] = 0, 255, 0  # no ink, all ink, ink only past column 32
    masks, columns = _images_with_ink(tile)
    for row in range(len(tile)):
        ink = np.flatnonzero(tile[row, :32])
        assert masks[row] == sum(1 << int(i) for i in ink), f"row {row}"
        np.testing.assert_array_equal(columns[row, :len(ink)], ink)
        assert (columns[row, len(ink):] == -1).all()
