"""Helpers for the tests: random batches, fresh networks, and a comparison that explains itself.
(The MNIST fixtures are in the conftest.py at the root, shared with bench/.)"""

from __future__ import annotations

import os
import signal

import numpy as np

# scikit-learn's array-API check (test_estimator.py) runs only where SciPy was imported with this set; it changes
# nothing else here.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

# The Ctrl-C tests send SIGINT to the commands they start. A shell starts background jobs with SIGINT ignored
# (`python -m pytest &` in a script), and an ignored signal stays ignored in every process started from there,
# so those commands would never hear it; a handled one is reset to the default in them.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

from fastnet.model import Network


def random_images(rng: np.random.Generator, n: int, ink: float = 0.2) -> np.ndarray:
    """uint8 (n, 784) images with about `ink` of their pixels non-zero, like MNIST."""
    images = rng.integers(1, 256, (n, 784), dtype=np.uint8)
    images[rng.random((n, 784)) > ink] = 0
    return images


def new_network(hidden=128, activation="sigmoid", seed=0, dtype=np.float32, inputs=784, classes=10) -> Network:
    """A network of 784 (or `inputs`) inputs, hidden layers of these widths (one int: one layer) and 10 classes,
    with non-zero biases (they catch more bugs), in dtype."""
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    network = Network.initialise((inputs, *hidden, classes), activation, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    for bias in network.biases:
        bias[:] = rng.normal(0, 0.1, bias.shape)
    network.weights = [w.astype(dtype) for w in network.weights]
    network.biases = [b.astype(dtype) for b in network.biases]
    return network


def assert_close(name: str, actual: np.ndarray, expected: np.ndarray, atol: float, rtol: float = 0.0) -> None:
    """np.testing.assert_allclose, but the message names the tensor, the worst index and both values."""
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    excess = np.abs(actual.astype(np.float64) - expected) - (atol + rtol * np.abs(expected))
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else ()
    assert excess.size == 0 or excess[worst] <= 0, (
        f"{name}: worst at index {tuple(int(i) for i in worst)}: got {actual[worst]!r}, "
        f"expected {expected[worst]!r} (atol {atol}, rtol {rtol})")
