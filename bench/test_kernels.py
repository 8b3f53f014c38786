"""Forward, and backward + update, one batch at a time, per backend and batch size (pytest-benchmark).

These call the public per-batch functions. The Numba ones also lay the weights
out in blocks and index the batch's ink on every call (an epoch does each once),
so per call they can trail numpy; the whole-epoch figures, which is what
training costs, are in test_epoch.py."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import get_backend
from fastnet.kernels.common import Optimizer, new_state
from fastnet.model import Network

BATCH_SIZES = [1, 32, 128]


def setup(backend_name, batch_size, mnist_train):
    backend = get_backend(backend_name)
    images, labels = mnist_train
    rows = np.random.default_rng(0).choice(len(images), batch_size, replace=False)
    network = Network.initialise((784, 128, 10), "sigmoid", np.random.default_rng(0))
    hidden = [np.empty((batch_size, 128), np.float32)]
    probs = np.empty((batch_size, 10), np.float32)
    return backend, images[rows].copy(), labels[rows].copy(), network, hidden, probs


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("backend_name", ["numba", "numpy"])
def test_forward(benchmark, backend_name, batch_size, mnist_train):
    backend, images, _, network, hidden, probs = setup(backend_name, batch_size, mnist_train)
    backend.forward(hidden, probs, images, network.params, 0)
    benchmark(backend.forward, hidden, probs, images, network.params, 0)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("backend_name", ["numba", "numpy"])
def test_backward_and_update(benchmark, backend_name, batch_size, mnist_train):
    backend, images, labels, network, hidden, probs = setup(backend_name, batch_size, mnist_train)
    backend.forward(hidden, probs, images, network.params, 0)
    grads = [np.empty_like(p) for p in network.params]
    optimizer = Optimizer("sgd", 0.01)
    state = new_state(network.params, optimizer)

    def step():
        backend.backward(grads, hidden, probs, images, labels, network.params, 0)
        backend.optimizer_step(network.params, grads, state, optimizer)

    step()
    benchmark(step)
