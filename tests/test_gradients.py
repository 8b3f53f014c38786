"""The float64 reference's gradients against central finite differences of its own loss."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import numpy_backend as ref

from .conftest import new_network, random_images


def mean_loss(network, images, labels):
    probs = np.empty((len(images), 10))
    ref.forward(np.empty((len(images), network.W1.shape[1])), probs, images, network.params, network.activation_code)
    return ref.cross_entropy_sum(probs, labels) / len(labels)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_gradients_match_finite_differences(activation):
    """In float64 with step 1e-6, central differences are good to ~1e-8; we ask for 1e-6 relative."""
    rng = np.random.default_rng(0)
    images, labels = random_images(rng, 6), rng.integers(0, 10, 6)
    network = new_network(12, activation, dtype=np.float64)
    hidden, probs = np.empty((6, 12)), np.empty((6, 10))
    ref.forward(hidden, probs, images, network.params, network.activation_code)
    grads = [np.empty_like(p) for p in network.params]
    ref.backward(grads, hidden, probs, images, labels, network.params, network.activation_code)
    step = 1e-6
    for name, param, grad in zip(("W1", "b1", "W2", "b2"), network.params, grads):
        flat, flat_grad = param.reshape(-1), grad.reshape(-1)
        candidates = np.flatnonzero(flat_grad) if name == "W1" else np.arange(flat.size)
        for i in rng.choice(candidates, min(25, candidates.size), replace=False):
            saved = flat[i]
            flat[i] = saved + step
            up = mean_loss(network, images, labels)
            flat[i] = saved - step
            down = mean_loss(network, images, labels)
            flat[i] = saved
            numeric = (up - down) / (2 * step)
            assert flat_grad[i] == pytest.approx(numeric, rel=1e-6, abs=1e-9), f"{name}[{i}]"
