"""Seconds per 60,000-image training epoch, and prediction over the 10,000 test images,
for each backend, batch size and thread count. Compare runs with --benchmark-save / --benchmark-compare."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import get_backend
from fastnet.kernels.common import Optimizer, new_state
from fastnet.model import Network
from fastnet.training import TrainConfig, warm_up

CASES = [("numba", 1, 1), ("numba", 32, 1), ("numba", 32, 2), ("numba", 128, 1), ("numba", 128, 2),
         ("numpy", 32, 1), ("numpy", 128, 1)]


@pytest.mark.parametrize("backend_name,batch_size,threads", CASES, ids=[f"{b}-batch{n}-threads{t}" for b, n, t in CASES])
def test_train_epoch(benchmark, backend_name, batch_size, threads, mnist_train, set_threads):
    set_threads(threads)
    backend = get_backend(backend_name)
    images, labels = mnist_train
    warm_up(backend, TrainConfig(batch_size=batch_size, backend=backend_name, activation="sigmoid", momentum=0.0),
            images, labels, 10)  # the kernels timed below: the seed network, plain SGD
    network = Network.initialise((784, 128, 10), "sigmoid", np.random.default_rng(0))
    optimizer = Optimizer("sgd", 0.1)
    state = new_state(network.params, optimizer)
    data = backend.prepare(images)
    order = np.random.default_rng(0).permutation(len(images))
    rounds = 1 if backend_name == "numpy" else 3
    benchmark.extra_info["images"] = len(images)
    benchmark.pedantic(backend.train_epoch, args=(network.params, state, data, labels, order, batch_size, optimizer, 0),
                       rounds=rounds, iterations=1)


@pytest.mark.parametrize("backend_name,threads", [("numba", 1), ("numba", 2), ("numpy", 1)])
def test_predict_test_set(benchmark, backend_name, threads, mnist_test, set_threads):
    set_threads(threads)
    backend = get_backend(backend_name)
    images = mnist_test[0]
    network = Network.initialise((784, 128, 10), "sigmoid", np.random.default_rng(0))
    probs = np.empty((len(images), 10), np.float32)
    backend.predict(probs, images, network.params, 0)
    benchmark.extra_info["images"] = len(images)
    benchmark(backend.predict, probs, images, network.params, 0)
