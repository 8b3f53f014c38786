"""Helpers for the tests: random batches, fresh networks, and a comparison that explains itself.
(The MNIST fixtures are in the conftest.py at the root, shared with bench/.)"""

from __future__ import annotations

import numpy as np

from fastnet.model import Network


def random_images(rng: np.random.Generator, n: int, ink: float = 0.2) -> np.ndarray:
    """uint8 (n, 784) images with about `ink` of their pixels non-zero, like MNIST."""
    images = rng.integers(1, 256, (n, 784), dtype=np.uint8)
    images[rng.random((n, 784)) > ink] = 0
    return images


def new_network(hidden=128, activation="sigmoid", seed=0, dtype=np.float32) -> Network:
    network = Network.initialise(784, hidden, 10, activation, np.random.default_rng(seed))
    network.b1[:] = np.random.default_rng(seed + 1).normal(0, 0.1, hidden)  # non-zero biases catch more bugs
    network.b2[:] = np.random.default_rng(seed + 2).normal(0, 0.1, 10)
    for name in ("W1", "b1", "W2", "b2"):
        setattr(network, name, getattr(network, name).astype(dtype))
    return network


def assert_close(name: str, actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float = 0.0) -> None:
    """np.testing.assert_allclose, but the message names the tensor, the worst index and both values."""
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    excess = np.abs(actual.astype(np.float64) - expected) - (atol + rtol * np.abs(expected))
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else ()
    assert excess.size == 0 or excess[worst] <= 0, (
        f"{name}: worst at index {tuple(int(i) for i in worst)}: got {actual[worst]!r}, "
        f"expected {expected[worst]!r} (atol {atol}, rtol {rtol})")
