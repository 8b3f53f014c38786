"""The Numba kernels against the numpy reference, on the same inputs.

Tolerances: both run in float32 (epsilon 1.2e-7) but sum in different orders
(Numba: ink pixels four at a time and hidden units in blocks; numpy: BLAS).
A sum of ~150-784 terms of size <= 1 then differs by at most a few 1e-6, so
activations and probabilities (in [0, 1]) must agree to 2e-6 and gradients to
2e-6 of their largest magnitude. A real bug (a wrong index, a missed pixel, a
race) shows up as errors of 1e-3 or more.
"""

from __future__ import annotations

from typing import NamedTuple

import llvmlite.binding as llvm
import numpy as np
import pytest
from numba import carray, njit

from fastnet.kernels import numba_backend, numpy_backend
from fastnet.kernels.common import Optimizer, new_state
from fastnet.kernels.ink import Dense, InkIndex, append_ink, ink_index
from fastnet.kernels.intrinsics import stack_floats, sum_lanes, trailing_zeros
from fastnet.kernels.layers import BLOCK, TILE, Tile, add_pixel_sum, fill_tile
from fastnet.parameters import weight_names

from .conftest import assert_close, new_network, random_images

ATOL = 2e-6


class Case(NamedTuple):
    """A network and the way its inputs come (pixels sparse as MNIST, floats in [0, 1] sparse or dense): each
    case compiles kernels of its own, so together they cover every path once rather than every combination."""

    hidden: tuple[int, ...]
    activation: str
    inputs: str  # "pixels" (uint8, mostly zero), "scaled" (float32 pixels / 255), "dense" (float32, no zeros)
    n_inputs: int = 784


CASES = [Case((128,), "sigmoid", "pixels"), Case((96, 70), "relu", "scaled"),
         Case((130, 65, 30), "tanh", "dense", 300)]


def inputs_for(case: Case, mnist_train, n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_train
    rows = np.random.default_rng(seed).choice(len(images), n, replace=False)
    x, y = images[rows][:, :case.n_inputs], labels[rows].astype(np.int64)
    if case.inputs == "pixels":
        return np.ascontiguousarray(x), y
    if case.inputs == "scaled":
        return np.ascontiguousarray(x / np.float32(255)), y
    rng = np.random.default_rng(seed)  # every input nonzero: the dense first layer
    return np.ascontiguousarray(x / np.float32(255) + rng.uniform(0.05, 0.5, x.shape).astype(np.float32)), y


def run_forward(backend, network, inputs):
    hidden = [np.empty((len(inputs), h), np.float32) for h in network.hidden]
    probs = np.empty((len(inputs), network.layer_sizes[-1]), np.float32)
    backend.forward(hidden, probs, inputs, network.params, network.activation_code)
    return hidden, probs


@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_reference(case, mnist_train):
    inputs, _ = inputs_for(case, mnist_train, 33)
    network = new_network(case.hidden, case.activation, inputs=case.n_inputs)
    fast_hidden, fast_probs = run_forward(numba_backend, network, inputs)
    ref_hidden, ref_probs = run_forward(numpy_backend, network, inputs)
    for layer, (fast, ref) in enumerate(zip(fast_hidden, ref_hidden), 1):
        assert_close(f"hidden layer {layer}", fast, ref, ATOL)
    assert_close("probs", fast_probs, ref_probs, ATOL)


@pytest.mark.parametrize("n_images", [1, 3, 6])
def test_forward_matches_reference_at_the_tiles_edges(n_images, mnist_train):
    """The later layers' sums come in tiles of 4 images x 2 units (layers.dot_tile): odd widths (a unit pair
    with one unit) and batches that end mid-tile. The kernel is CASES[1]'s, so nothing new compiles."""
    inputs, _ = inputs_for(CASES[1], mnist_train, n_images)
    network = new_network((96, 67), CASES[1].activation, classes=3)
    fast_hidden, fast_probs = run_forward(numba_backend, network, inputs)
    ref_hidden, ref_probs = run_forward(numpy_backend, network, inputs)
    assert_close("hidden layer 2", fast_hidden[1], ref_hidden[1], ATOL)
    assert_close("probs", fast_probs, ref_probs, ATOL)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_backward_matches_reference(case, mnist_train):
    inputs, labels = inputs_for(case, mnist_train, 33)
    network = new_network(case.hidden, case.activation, inputs=case.n_inputs)
    hidden, probs = run_forward(numpy_backend, network, inputs)
    grads = {}
    for backend in (numba_backend, numpy_backend):
        grads[backend] = [np.empty_like(p) for p in network.params]
        backend.backward(grads[backend], hidden, probs, inputs, labels, network.params, network.activation_code)
    names = weight_names(len(network.weights))
    for name, fast, ref in zip(names, grads[numba_backend], grads[numpy_backend]):
        assert np.abs(ref).max() > 0, f"d{name} is all zero: the test would prove nothing"
        assert_close(f"d{name}", fast, ref, ATOL * np.abs(ref).max())


# Optimisers, each with a case and a batch size of its own: every update path (plain SGD, momentum, Nesterov,
# Adam; the first layer's gradient image by image under 16 images, pixel by pixel in one tile of images or
# more, dense; for Nesterov and Adam the rule fused into it, or after it image by image) compiles once. Each
# kernel variant takes ~10 s to compile, so the cases share them where they can (forward and backward run as
# a momentum step, as the last one does).
STEPS = [
    (Optimizer("sgd", 0.5, weight_decay=0.01), CASES[0], 32),
    (Optimizer("sgd", 0.1, momentum=0.9, weight_decay=0.01), CASES[0], 5),
    (Optimizer("sgd", 0.2, momentum=0.9, nesterov=True, weight_decay=0.01), CASES[1], 33),
    (Optimizer("adam", 0.003, weight_decay=0.01), CASES[2], 16),
    (Optimizer("adam", 0.003, weight_decay=0.01), CASES[0], 40),  # two tiles a batch, then one (the ragged 16)
    (Optimizer("sgd", 0.2, momentum=0.9, nesterov=True), CASES[0], 10),  # image by image, then the rule
    # lr 0.02: at 0.2, 96 steps of one image each amplify the last-bit differences chaotically (1e-2 at the end)
    (Optimizer("sgd", 0.02, momentum=0.5), CASES[2], 1),
]


@pytest.mark.parametrize("optimizer,case,batch_size", STEPS,
                         ids=[f"{o.kind}{'-nesterov' if o.nesterov else ''}-momentum{o.momentum}-{c}-batch{b}"
                              for o, c, b in STEPS])
def test_training_steps_match_reference(optimizer, case, batch_size, mnist_train):
    """96 inputs (batches ragged where the size does not divide 96), forward + backward + update, each batch
    from the previous one's weights and the optimiser's state.

    Tolerance 1e-5 (and 1e-5 relative, for weights that grow large) on weights that move by 1e-3 or more: the
    two backends' sums differ by ~1e-6 per step (see the module docstring), and Adam's step divides by the
    gradient's own size, so a few steps can triple that. The moments to 2e-5 (and 1e-5 relative): a velocity
    sums gradients, at batch 1 each of one image (up to 0.75 in the last case), and their last-bit
    differences add up: 3e-6 to 1.2e-5 in that case, depending on the CPU the kernels are compiled for."""
    inputs, labels = inputs_for(case, mnist_train, 96, seed=3)
    results = {}
    for backend in (numba_backend, numpy_backend):
        network = new_network(case.hidden, case.activation, inputs=case.n_inputs)
        state = new_state(network.params, optimizer)
        loss, correct, _ = backend.train_epoch(network.params, state, backend.prepare(inputs), labels,
                                               np.arange(96), batch_size, optimizer, network.activation_code)
        results[backend] = network, state, loss, correct
    fast, ref = results[numba_backend], results[numpy_backend]
    start = new_network(case.hidden, case.activation, inputs=case.n_inputs)
    for name, fast_w, ref_w, start_w in zip(weight_names(len(start.weights)), fast[0].params, ref[0].params,
                                            start.params):
        assert np.abs(ref_w - start_w).max() > 1e-3, f"{name} did not move: the test would prove nothing"
        assert_close(name, fast_w, ref_w, 3e-5 if optimizer.kind == "adam" else 1e-5, rtol=1e-5)
    for moments in ("first", "second"):
        for i, (fast_m, ref_m) in enumerate(zip(getattr(fast[1], moments) or [], getattr(ref[1], moments) or [])):
            assert_close(f"{moments} moment {i}", fast_m, ref_m, 2e-5, rtol=1e-5)
    assert fast[1].step[0] == ref[1].step[0] == -(-96 // batch_size)
    assert fast[2] == pytest.approx(ref[2], rel=1e-5)
    assert fast[3] == ref[3]


@pytest.mark.parametrize("optimizer", [Optimizer("sgd", 0.1), Optimizer("sgd", 0.1, momentum=0.9, weight_decay=0.1),
                                       Optimizer("sgd", 0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
                                       Optimizer("adam", 0.01, weight_decay=0.1)], ids=str)
def test_optimizer_step_matches_reference(optimizer):
    """Two steps of each optimiser from the same gradients (the epoch kernel fuses the same element code)."""
    rng = np.random.default_rng(5)
    shapes = [(784, 128), (128,), (128, 64), (64,), (64, 10), (10,)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    out = {}
    for backend in (numba_backend, numpy_backend):
        p = [x.copy() for x in params]
        state = new_state(p, optimizer)
        for _ in range(2):
            backend.optimizer_step(p, grads, state, optimizer)
        out[backend] = p, state
    for i in range(len(shapes)):
        assert_close(f"param {i}", out[numba_backend][0][i], out[numpy_backend][0][i], 1e-5)
        assert not np.array_equal(out[numpy_backend][0][i], params[i]), "the step moved nothing"
    assert out[numba_backend][1].step[0] == out[numpy_backend][1].step[0] == 2


@pytest.mark.parametrize("case", CASES, ids=str)
def test_predict_matches_reference(case, mnist_train):
    inputs, _ = inputs_for(case, mnist_train, 700)  # several groups of 64 rows, and a part group
    network = new_network(case.hidden, case.activation, inputs=case.n_inputs)
    probs = {}
    for backend in (numba_backend, numpy_backend):
        probs[backend] = np.empty((len(inputs), 10), np.float32)
        backend.predict(probs[backend], inputs, network.params, network.activation_code)
    assert_close("probs", probs[numba_backend], probs[numpy_backend], ATOL)


def test_mostly_zero_inputs_are_read_sparse_and_others_dense(mnist_train):
    images = mnist_train[0][:100]
    assert isinstance(numba_backend.prepare(images), InkIndex)
    assert isinstance(numba_backend.prepare(np.ascontiguousarray(images / np.float32(255))), InkIndex)
    assert isinstance(numba_backend.prepare(np.ascontiguousarray(images | 1)), Dense)


def test_ink_index_lists_exactly_the_nonzero_pixels_and_their_values(mnist_train):
    """The numpy ink index (prepare's reference twin), row by row against flatnonzero; small chunks, so that
    rows 63/64 and 127/128 straddle a chunk's boundary."""
    images = mnist_train[0][:500]
    index = ink_index(images, chunk=64)
    for n in (0, 1, 63, 64, 127, 128, 250, 499):
        ink = slice(index.start[n], index.start[n + 1])
        np.testing.assert_array_equal(index.pixels[ink], np.flatnonzero(images[n]))
        np.testing.assert_array_equal(index.values[ink], images[n][images[n] != 0])
    assert index.start[-1] == np.count_nonzero(images)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("width", [784, 61, 70_000])  # 61: not a multiple of 8; 70,000: uint32 positions
def test_prepare_lists_the_same_ink_as_its_numpy_twin(dtype, width, mnist_train):
    """prepare's compiled listing (ink._count_ink, _list_ink) against ink_index: MNIST digits, blank rows, the
    last word of a row inked, a full row, and last the last input alone; floats also negative, -0.0 (zero),
    NaN and infinities (nonzero); at 70,000 inputs positions past 65,535. The same arrays, dtypes included."""
    rng = np.random.default_rng(5)
    rows = np.zeros((40, width), np.uint8)
    digits = mnist_train[0][:30]
    for n in range(30):
        at = rng.integers(0, max(width - 784, 0) + 1)
        rows[n, at:at + 784] = digits[n, :width - at]
    rows[-3, -8:] = 9
    rows[-2] = 255
    rows[-1, -1] = 7
    images = rows if dtype == np.uint8 else rows / np.float32(255)
    if dtype == np.float32:
        images[:10] *= -1
        images[30, :6] = [-0.0, np.nan, np.inf, -np.inf, -0.0, np.nan]
    images = np.ascontiguousarray(images)
    listed = numba_backend.prepare(images, sparse=True)
    expected = ink_index(images)
    assert isinstance(listed, InkIndex)
    for got, want in zip(listed, expected):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_prepare_lists_ink_when_told_to_even_where_most_inputs_are_ink(dtype):
    """sparse=True overrides the share of zeros (training's warm-up lists a few rows as the whole data is
    read); left to itself, prepare reads the same rows densely."""
    images = np.ones((3, 50), dtype)
    images[1, ::7] = 0
    listed = numba_backend.prepare(images, sparse=True)
    assert isinstance(listed, InkIndex)
    for got, want in zip(listed, ink_index(images)):
        np.testing.assert_array_equal(got, want)
    assert isinstance(numba_backend.prepare(images), Dense)


@njit
def _ink_listed_by_prediction(images, vector_compress):
    """The ink index prediction builds, one row at a time (ink.append_ink)."""
    start = np.zeros(len(images) + 1, np.int64)
    pixels = np.empty(images.size + 64, np.uint16)
    values = np.empty(images.size + 64, np.uint8)
    for n in range(len(images)):
        start[n + 1] = append_ink(images[n], pixels, values, start[n], vector_compress)
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
    expected = ink_index(images)
    for got, want in zip(_ink_listed_by_prediction(images, vector_compress), expected):
        np.testing.assert_array_equal(got, want)


@njit
def _walk_tile(tile, ink, images, dz, scale):
    """fill_tile with images, then per pixel: its mask, the images trailing_zeros walks it to (-1 after), and
    add_pixel_sum's sum and answer; and the masks left after the walk."""
    fill_tile(tile, ink, images)
    n_pixels = tile.masks.shape[0]
    masks = tile.masks.astype(np.uint64)
    walked = np.full((n_pixels, TILE), -1, np.int64)
    sums, inked = np.zeros((n_pixels, BLOCK), np.float32), np.zeros(n_pixels, np.bool_)
    for p in range(n_pixels):
        bits, k = np.uint64(tile.masks[p]), 0
        while bits != 0:
            walked[p, k] = trailing_zeros(bits)
            bits &= bits - np.uint64(1)
            k += 1
        inked[p] = add_pixel_sum(sums[p], tile, p, dz, scale)
    return masks, walked, sums, inked, tile.masks.copy()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_the_w1_updates_tile_finds_exactly_the_images_with_ink(dtype):
    """The tile the pixel-by-pixel first-layer update walks (layers.fill_tile, add_pixel_sum), for uint8 pixels
    or float32 values: a full tile of images on 40 pixels with ink at random, a pixel with no ink and one where
    every image has ink (bit 31 included), stale values from an earlier use where no mask bit is set. Each
    pixel's mask must name exactly its images with ink, the walk visit them in order, the sum be theirs only,
    and the masks be clear afterwards."""
    rng = np.random.default_rng(4)
    images = np.where(rng.random((TILE, 40)) < 0.3, rng.integers(1, 256, (TILE, 40)), 0).astype(dtype)
    images[:, 0], images[:, 1] = 0, 255
    scale = np.float32(1 / 255) if dtype == np.uint8 else np.float32(1)
    if dtype == np.float32:
        images /= 255
    tile = Tile(np.full((40, TILE), 99, dtype), np.zeros(40, np.uint32))  # stale values everywhere
    dz = rng.standard_normal((TILE, BLOCK)).astype(np.float32)
    masks, walked, sums, inked, left = _walk_tile(tile, ink_index(images), np.arange(TILE), dz, scale)
    for p in range(40):
        ink = np.flatnonzero(images[:, p])
        assert masks[p] == sum(1 << int(n) for n in ink), f"pixel {p}"
        np.testing.assert_array_equal(walked[p, :len(ink)], ink)
        assert (walked[p, len(ink):] == -1).all() and inked[p] == (len(ink) > 0)
        expected = (images[ink, p].astype(np.float32)[:, None] * scale * dz[ink]).sum(axis=0)
        np.testing.assert_allclose(sums[p], expected, rtol=1e-5, atol=1e-6)
    assert not left.any()


def _lane_summer(n_sums: int, lanes: int):
    """A compiled sum_lanes for n_sums rows of lanes floats (its counts must be constants where it is compiled)."""
    size = n_sums * lanes

    @njit
    def run(rows, sums):
        rows_at, sums_at = stack_floats(size), stack_floats(n_sums)
        scratch = carray(rows_at, size)
        for i in range(size):
            scratch[i] = rows[i]
        sum_lanes(rows_at, sums_at, n_sums, lanes)
        result = carray(sums_at, n_sums)
        for s in range(n_sums):
            sums[s] = result[s]
    return run


@pytest.mark.parametrize("n_sums, lanes", [(8, 16), (1, 16), (2, 16), (4, 8), (8, 8), (2, 2)])
def test_sum_lanes_adds_each_row_into_its_own_sum(n_sums, lanes):
    """intrinsics.sum_lanes, the later layers' last step of each dot product (layers.dot_tile): rows of
    distinct whole numbers, whose sums are exact in float32, so a lane taken into the wrong sum (or twice, or
    not at all) changes one; then random rows, against float64 sums to float32's rounding (a sum of 16 terms
    of size <= 1 in any order is within 16 epsilon of the exact one)."""
    summed = _lane_summer(n_sums, lanes)
    whole = (np.arange(n_sums)[:, None] * 1000 + 3 ** np.arange(lanes)[None, :] % 997).astype(np.float32)
    sums = np.full(n_sums, np.nan, np.float32)
    summed(whole.ravel(), sums)
    np.testing.assert_array_equal(sums, whole.sum(axis=1, dtype=np.float64))
    rows = np.random.default_rng(3).uniform(-1, 1, (n_sums, lanes)).astype(np.float32)
    summed(rows.ravel(), sums)
    np.testing.assert_allclose(sums, rows.sum(axis=1, dtype=np.float64), rtol=0, atol=lanes * 1.2e-7)
