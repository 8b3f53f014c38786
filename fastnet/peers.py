"""The same training, done by fastnet's backends and by the libraries people would use instead.

Each trainer takes the same initial network, data, shuffles, batch size and
plain-SGD learning rate, and returns (seconds of each epoch, final test
accuracy, a note). Peers are optional: a missing one raises ImportError.
Compile or set-up time is never inside the timed epochs.
"""

from __future__ import annotations

import time

import numpy as np

from .model import Network


def _fastnet(backend_name):
    def train(network: Network, images, labels, test_images, test_labels, orders, batch_size, learning_rate, threads):
        from .kernels import get_backend
        from .training import TrainConfig, accuracy, warm_up

        backend = get_backend(backend_name)
        warm_up(backend, TrainConfig(batch_size=batch_size, backend=backend_name, weight_decay=0.0), images, labels,
                10)
        velocity = [np.zeros_like(p) for p in network.params]
        data = backend.prepare(images)
        seconds = []
        for order in orders:
            start = time.perf_counter()
            backend.train_epoch(network.params, velocity, data, labels, order, batch_size, learning_rate, 0.0, 0)
            seconds.append(time.perf_counter() - start)
        note = "BLAS threads" if backend_name == "numpy" else ""
        return seconds, accuracy(backend, network, test_images, test_labels), note
    return train


def train_torch(network, images, labels, test_images, test_labels, orders, batch_size, learning_rate, threads):
    """PyTorch eager: nn.Sequential, F.cross_entropy, torch.optim.SGD; each batch converted to float on the fly."""
    import torch

    torch.set_num_threads(threads)
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.Sigmoid(), torch.nn.Linear(128, 10))
    with torch.no_grad():
        for layer, weight, bias in ((model[0], network.W1, network.b1), (model[2], network.W2, network.b2)):
            layer.weight.copy_(torch.from_numpy(weight.T.copy()))
            layer.bias.copy_(torch.from_numpy(bias))
    optimiser = torch.optim.SGD(model.parameters(), lr=learning_rate)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    seconds = []
    for order in orders:
        order = torch.from_numpy(order)
        start = time.perf_counter()
        for first in range(0, len(order), batch_size):
            rows = order[first:first + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x_all[rows].float().div_(255)), y_all[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        seconds.append(time.perf_counter() - start)
    with torch.no_grad():
        predicted = model(torch.from_numpy(test_images).float().div_(255)).argmax(1).numpy()
    return seconds, float((predicted == test_labels).mean()), f"torch {torch.__version__}"


def train_sklearn(network, images, labels, test_images, test_labels, orders, batch_size, learning_rate, threads):
    """scikit-learn MLPClassifier (logistic, sgd, no momentum, no L2), one partial_fit per epoch.

    It shuffles and initialises by itself (Glorot, like fastnet) and needs a float
    copy of the data, made before the clock starts."""
    import sklearn
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(hidden_layer_sizes=(128,), activation="logistic", solver="sgd", alpha=0.0,
                          batch_size=batch_size, learning_rate_init=learning_rate, momentum=0.0, random_state=0,
                          shuffle=True)
    x = images.astype(np.float32) / np.float32(255)
    seconds = []
    for _ in orders:
        start = time.perf_counter()
        model.partial_fit(x, labels, classes=np.arange(10))
        seconds.append(time.perf_counter() - start)
    accuracy = float((model.predict(test_images.astype(np.float32) / np.float32(255)) == test_labels).mean())
    return seconds, accuracy, f"scikit-learn {sklearn.__version__}, own init and shuffle"


def train_jax(network, images, labels, test_images, test_labels, orders, batch_size, learning_rate, threads):
    """JAX: a whole epoch compiled with jax.jit over lax.scan of the batches (full batches; a ragged last batch
    runs as one more compiled step)."""
    import jax
    import jax.numpy as jnp

    def loss_fn(params, x, y):
        W1, b1, W2, b2 = params
        hidden = jax.nn.sigmoid(x @ W1 + b1)
        return -jnp.mean(jax.nn.log_softmax(hidden @ W2 + b2)[jnp.arange(y.shape[0]), y])

    def step(params, batch):
        x, y = batch
        grads = jax.grad(loss_fn)(params, x.astype(jnp.float32) / 255.0, y)
        return [p - learning_rate * g for p, g in zip(params, grads)], None

    @jax.jit
    def epoch(params, x_batches, y_batches):
        return jax.lax.scan(step, params, (x_batches, y_batches))[0]

    single_step = jax.jit(lambda params, x, y: step(params, (x, y))[0])
    params = [jnp.asarray(p) for p in network.params]
    x_all, y_all = jnp.asarray(images), jnp.asarray(labels.astype(np.int32))
    full = len(images) // batch_size * batch_size

    def run(params, order):
        rows = jnp.asarray(order[:full].reshape(-1, batch_size))
        params = epoch(params, x_all[rows], y_all[rows])
        if full < len(order):
            rest = jnp.asarray(order[full:])
            params = single_step(params, x_all[rest], y_all[rest])
        return params

    jax.block_until_ready(run([p for p in params], orders[0]))  # compile, untimed; results discarded
    seconds = []
    for order in orders:
        start = time.perf_counter()
        params = jax.block_until_ready(run(params, order))
        seconds.append(time.perf_counter() - start)
    W1, b1, W2, b2 = params
    predicted = np.asarray((jax.nn.sigmoid(jnp.asarray(test_images) / 255.0 @ W1 + b1) @ W2 + b2).argmax(1))
    return seconds, float((predicted == test_labels).mean()), f"jax {jax.__version__}"


TRAINERS = {"numba": _fastnet("numba"), "numpy": _fastnet("numpy"), "torch": train_torch, "sklearn": train_sklearn,
            "jax": train_jax}
