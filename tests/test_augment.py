"""Augmentation: the reference transform against plain geometry, the kernel against the reference, and an
augmented epoch of the Numba backend against the numpy backend's.

Tolerances: both transforms compute in float32, the kernel with fused multiply-adds where fastmath finds them,
so a sample position can differ in its last bit; a uint8 pixel whose bilinear value lies within that of a
half then rounds the other way. So uint8 pixels agree within 1, and all but 1 in 1,000 exactly; float pixels
(in [0, 1]) within 1e-5. A wrong index or weight gives errors of tens of grey levels over many pixels.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from fastnet.errors import FastnetError
from fastnet.kernels import numba_backend, numpy_backend
from fastnet.kernels.common import (TRANSFORMED, WHOLE_PIXEL_SHARE, WHOLE_PIXELS, Optimizer, affine_matrices,
                                   new_state, plain_final_epochs)
from fastnet.training import TrainConfig, epoch_augmentation, train

from .conftest import assert_close, new_network
from .test_checkpoint import make_folder_dataset

ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))

# One worker runs them all: its compiled transform and augmented epoch kernels serve every test here (bench's
# included) instead of being compiled again in the other worker.
pytestmark = pytest.mark.xdist_group("augment")
BACKENDS = [numpy_backend, numba_backend]
IDENTITY = np.array([1, 0, 0, 0, 1, 0], np.float32)


def shift_matrix(dx: float, dy: float) -> np.ndarray:
    """Moves the image right by dx and down by dy (output pixel (x, y) reads (x - dx, y - dy))."""
    return np.array([1, 0, -dx, 0, 1, -dy], np.float32)


def colour_strokes(count: int, seed: int = 0) -> np.ndarray:
    """count 20x24 colour images (H, W, C flattened), mostly black, with a few coloured bars."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 20, 24, 3), np.uint8)
    for image in images:
        for _ in range(3):
            y, x = rng.integers(2, 16), rng.integers(2, 18)
            image[y:y + rng.integers(1, 4), x:x + rng.integers(2, 6)] = rng.integers(1, 256, 3)
    return images.reshape(count, -1)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__.split(".")[-1])
def test_identity_and_whole_pixel_shifts_are_exact(backend, mnist_train):
    """Exact, whatever falls off an edge (the Numba kernel copies such images' ink rather than reading it)."""
    images = mnist_train[0][:20]
    assert np.array_equal(backend.augment_images(images, np.tile(IDENTITY, (20, 1)), (28, 28, 1)), images)
    moved = backend.augment_images(images, np.tile(shift_matrix(3, -2), (20, 1)), (28, 28, 1))
    expected = np.zeros((20, 28, 28), np.uint8)
    expected[:, :26, 3:] = images.reshape(20, 28, 28)[:, 2:, :25]
    assert np.array_equal(moved, expected.reshape(20, -1))
    colour = colour_strokes(20)
    moved = backend.augment_images(colour, np.tile(shift_matrix(-9, 7), (20, 1)), (20, 24, 3))
    expected = np.zeros((20, 20, 24, 3), np.uint8)
    expected[:, 7:, :15] = colour.reshape(20, 20, 24, 3)[:, :13, 9:]
    assert np.array_equal(moved, expected.reshape(20, -1)) and 0 < np.count_nonzero(moved) < np.count_nonzero(colour)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__.split(".")[-1])
def test_half_pixel_shift_averages_neighbours_and_keeps_the_ink(backend):
    """Bilinear reading: half a pixel right gives the mean of each pixel and its left neighbour (for uint8
    levels, rounded half up)."""
    image = np.zeros((1, 8, 8, 1), np.float32)
    image[0, 3, 2:5, 0] = [0.2, 1.0, 0.6]
    moved = backend.augment_images(image.reshape(1, -1), shift_matrix(0.5, 0)[None], (8, 8, 1)).reshape(8, 8)
    np.testing.assert_allclose(moved[3, 2:6], [0.1, 0.6, 0.8, 0.3], atol=1e-6)
    assert moved.sum() == pytest.approx(image.sum(), abs=1e-6)
    levels = np.zeros((1, 8, 8, 1), np.uint8)
    levels[0, 3, 2:5, 0] = [20, 101, 60]
    moved = backend.augment_images(levels.reshape(1, -1), shift_matrix(0.5, 0)[None], (8, 8, 1)).reshape(8, 8)
    assert moved[3, 2:6].tolist() == [10, 61, 81, 30]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.__name__.split(".")[-1])
def test_a_quarter_turn_is_np_rot90(backend, mnist_train):
    """Output (x, y) reading input (27 - y, x): a quarter turn about the centre, exact on whole pixels."""
    images = mnist_train[0][:5]
    turned = backend.augment_images(images, np.tile(np.float32([0, -1, 27, 1, 0, 0]), (5, 1)), (28, 28, 1))
    assert np.array_equal(turned.reshape(5, 28, 28), np.rot90(images.reshape(5, 28, 28), axes=(1, 2)))


def test_random_transforms_stay_in_their_ranges():
    """A share TRANSFORMED of the images is transformed, the others left as they are (the identity, exactly);
    of those, a share WHOLE_PIXEL_SHARE only moved by whole pixels (up to WHOLE_PIXELS, each move drawn, the
    identity among them); every other transform moves the centre by at most the shift range and scales lengths
    within the scale and shear ranges (its singular values); the draws differ image to image."""
    augment = affine_matrices(np.random.default_rng(0), 2000, (28, 28, 1))
    plain = (augment.matrices == IDENTITY).all(axis=1)
    whole = (augment.matrices[:, [0, 1, 3, 4]] == IDENTITY[[0, 1, 3, 4]]).all(axis=1) & ~plain
    moves = augment.matrices[whole][:, [2, 5]]
    assert set(np.unique(moves)) == set(range(-WHOLE_PIXELS, WHOLE_PIXELS + 1))
    shifted = TRANSFORMED * WHOLE_PIXEL_SHARE  # of which 1 in (2 WHOLE_PIXELS + 1)^2 is the identity
    unmoved = shifted / (2 * WHOLE_PIXELS + 1) ** 2
    # 2000 draws: each share's standard deviation is 0.011 or less
    assert abs(plain.mean() - (1 - TRANSFORMED + unmoved)) < 0.05 and abs(whole.mean() - (shifted - unmoved)) < 0.05
    m = augment.matrices[~plain & ~whole].astype(np.float64)
    assert abs(len(m) / 2000 - (TRANSFORMED - shifted)) < 0.05
    inverse = m[:, [0, 1, 3, 4]].reshape(-1, 2, 2)
    forward = np.linalg.inv(inverse)
    centre = np.array([13.5, 13.5])
    source_of_centre = inverse @ centre + m[:, [2, 5]]
    moved = centre - source_of_centre  # where the input's centre goes, relative: forward maps it back
    shift = np.einsum("nij,nj->ni", forward, source_of_centre - centre)
    assert np.abs(shift).max() <= 0.09 * 28 + 1e-4 and np.abs(moved).max() > 1.0
    stretch = np.linalg.svd(forward, compute_uv=False)
    assert 0.8 < stretch.min() and stretch.max() < 1.3
    assert len(np.unique(m, axis=0)) == len(m)


def test_the_final_epochs_transform_nothing_and_draw_as_the_others():
    """epoch_augmentation: the share TRANSFORMED until the run's final epochs (plain_final_epochs of them: 5 of
    35), then only identities; the share changes which images are transformed, not what is drawn."""
    config = TrainConfig(epochs=35, augment=True)
    assert plain_final_epochs(35) == 5 and plain_final_epochs(1) == 0
    shares = [1 - (epoch_augmentation(config, np.random.default_rng(epoch), 2000, (28, 28, 1), epoch).matrices
                   == IDENTITY).all(axis=1).mean() for epoch in range(35)]
    assert all(abs(share - TRANSFORMED) < 0.05 for share in shares[:30]) and shares[30:] == [0.0] * 5
    assert epoch_augmentation(TrainConfig(augment=False), np.random.default_rng(0), 10, (28, 28, 1), 0) is None
    every, some = (affine_matrices(np.random.default_rng(3), 500, (28, 28, 1), share).matrices for share in (1, 0.5))
    kept = ~(some == IDENTITY).all(axis=1)
    assert 0 < kept.sum() < 500 and np.array_equal(some[kept], every[kept])


@pytest.mark.parametrize("inputs", ["pixels", "scaled", "colour"])
def test_kernel_transform_matches_the_reference(inputs, mnist_train):
    """Random transforms of every range, and some far outside them (turned over, halved, doubled, moved off the
    image), on MNIST pixels, the same as floats, and colour."""
    if inputs == "colour":
        images, shape = colour_strokes(300), (20, 24, 3)
    else:
        images, shape = mnist_train[0][:300], (28, 28, 1)
        if inputs == "scaled":
            images = np.ascontiguousarray(images / np.float32(255))
    matrices = affine_matrices(np.random.default_rng(1), len(images), shape).matrices
    extreme = [[-1, 0, 27, 0, -1, 27], [0.5, 0, 7, 0, 0.5, 7], [2, 0.3, -14, -0.2, 2, -14], [1, 0, 30, 0, 1, 0],
               [1, 0, -27.5, 0, 1, 27.5], [0.9, 0.4, -3, -0.4, 0.9, 5]]
    matrices[:len(extreme)] = extreme
    fast = numba_backend.augment_images(images, matrices, shape)
    ref = numpy_backend.augment_images(images, matrices, shape)
    assert ref.any() and not np.array_equal(ref, images), "the transforms should move the ink"
    # the identities and whole-pixel shifts are copied, so exact: apart from the others' tolerance below
    copied = ((matrices[:, [0, 1, 3, 4]] == IDENTITY[[0, 1, 3, 4]]).all(axis=1)
              & (matrices[:, [2, 5]] % 1 == 0).all(axis=1))
    assert (matrices[copied] != IDENTITY).any() and np.array_equal(fast[copied], ref[copied])
    fast, ref = fast[~copied], ref[~copied]
    if images.dtype == np.uint8:
        difference = np.abs(fast.astype(int) - ref)
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
    else:
        assert_close("transformed", fast, ref, 1e-5)


@pytest.mark.parametrize("batch_size", [32, 5], ids=["pixel-by-pixel", "image-by-image"])
def test_an_augmented_epoch_matches_the_reference(batch_size, mnist_train):
    """Plain SGD over 200 images (a ragged last batch), each through its transform: weights within 1e-5 (as
    test_kernels' training steps), the same hits, and weights other than training without augmentation gives.
    (Plain SGD: the kernel variant the other augmented tests use; the update paths are test_kernels'.)"""
    images, labels = (a[:200] for a in mnist_train)
    rng = np.random.default_rng(3)
    order, augment = rng.permutation(200), affine_matrices(rng, 200, (28, 28, 1))
    optimizer = Optimizer("sgd", 0.3)
    results = {}
    for backend in BACKENDS:
        network = new_network(128)
        state = new_state(network.params, optimizer)
        loss, correct, next_batch = backend.train_epoch(network.params, state, backend.prepare(images), labels,
                                                        order, batch_size, optimizer, 0, augment=augment)
        assert next_batch == -(-200 // batch_size)
        results[backend] = network.params, loss, correct
    plain = new_network(128)
    numba_backend.train_epoch(plain.params, new_state(plain.params, optimizer), numba_backend.prepare(images),
                              labels, order, batch_size, optimizer, 0)
    (fast, fast_loss, fast_correct), (ref, ref_loss, ref_correct) = results[numba_backend], results[numpy_backend]
    for i, (f, r, p) in enumerate(zip(fast, ref, plain.params)):
        assert_close(f"parameter {i}", f, r, 1e-5, rtol=1e-5)
    assert np.abs(fast[0] - plain.params[0]).max() > 1e-3, "augmentation should change what is learned"
    assert fast_loss == pytest.approx(ref_loss, rel=1e-5) and fast_correct == ref_correct


def test_augmentation_is_refused_where_it_cannot_apply(mnist_train):
    """Plain features have no image shape; images mostly of ink have no ink index to transform."""
    table = np.random.default_rng(0).standard_normal((64, 20)).astype(np.float32)
    labels = np.arange(64) % 2
    with pytest.raises(FastnetError, match="plain features"):
        train(TrainConfig(epochs=1, augment=True), (table, labels), None, 2)
    noise = np.random.default_rng(0).integers(1, 256, (64, 784), dtype=np.uint8)
    with pytest.raises(FastnetError, match="mostly blank"):
        train(TrainConfig(epochs=1, augment=True), (noise, labels), None, 2, input_shape=(28, 28, 1))


def test_the_command_line_refuses_augmenting_noise_in_one_line(tmp_path):
    root = make_folder_dataset(tmp_path / "noise")  # random pixels: mostly ink
    result = subprocess.run([sys.executable, "-m", "fastnet", "train", "--data", root, "--val-split", "0.25",
                             "--augment", "--batch-size", "4", "--out", tmp_path / "p.npz"], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "without --augment" in result.stderr
    assert not (tmp_path / "p.npz").exists()


def test_bench_times_augmented_epochs_and_refuses_them_on_features():
    """bench --augment's system: an augmented epoch on MNIST, scored on the test set; dense features refused."""
    from fastnet.bench import Workload, _measure_here

    record = _measure_here("numba-augment", 32, 1, 1, Workload(augment=True))
    assert record.backend == "numba-augment" and record.test_accuracy > 0.9 and record.seconds_per_epoch > 0
    assert "with and without augmentation" in record.workload
    result = subprocess.run([sys.executable, "-m", "fastnet", "bench", "--augment", "--dense", "50"], env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.strip() == (
        "fastnet: error: bench --augment transforms MNIST's images; --dense features have none")


@pytest.mark.skipif(numba.get_num_threads() < 2, reason="one thread here: nothing to compare")
def test_augmented_epochs_are_bit_identical_for_one_and_two_threads(mnist_train):
    """Two workers share each batch's transforms: 1 and 2 threads give the same weights, bit for bit (in this
    process, numba.set_num_threads, so the kernels compiled above serve)."""
    images, labels = (a[:3000] for a in mnist_train)
    rng = np.random.default_rng(5)
    order, augment = rng.permutation(3000), affine_matrices(rng, 3000, (28, 28, 1))
    optimizer, weights = Optimizer("sgd", 0.3), []
    for threads in (1, 2):
        network = new_network(128)
        numba.set_num_threads(threads)
        try:
            numba_backend.train_epoch(network.params, new_state(network.params, optimizer),
                                      numba_backend.prepare(images), labels, order, 32, optimizer, 0, augment=augment)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        weights.append(network.params)
    for one, two in zip(*weights):
        np.testing.assert_array_equal(one, two)
