"""The same training, done by fastnet's backends and by the libraries people would use instead.

Each trainer takes the same initial network, data, shuffles, batch size and
optimiser (bench.Workload: plain SGD at a rate for the batch size, or Adam with
its usual settings), and returns (seconds of each epoch, final test accuracy, a
note). Peers are optional: a missing one raises ImportError. Compile or set-up
time is never inside the timed epochs. uint8 inputs are pixels (each batch
divided by 255 on the fly), float inputs are read as they are.
"""

from __future__ import annotations

import time

import numpy as np

from .kernels.common import input_scale
from .model import Network


def _fastnet(backend_name, augment=False):
    """fastnet's backend; with augment, each epoch's transforms drawn (common.affine_matrices) and applied inside
    the timed epoch, as training does."""
    def train(network: Network, inputs, labels, test_inputs, test_labels, orders, batch_size, workload, threads):
        from .kernels import get_backend
        from .kernels.common import affine_matrices, new_state
        from .training import TrainConfig, accuracy, warm_up

        backend = get_backend(backend_name)
        config = TrainConfig(batch_size=batch_size, backend=backend_name, hidden=workload.hidden,
                             activation=workload.activation, optimizer=workload.optimizer,
                             learning_rate=workload.learning_rate(batch_size), momentum=0.0, weight_decay=0.0,
                             augment=augment)
        shape = (28, 28, 1)
        warm_up(backend, config, inputs, labels, 10, input_shape=shape)
        rng = np.random.default_rng(2)
        optimizer = config.optimizer_at(config.learning_rate)
        state = new_state(network.params, optimizer)
        data = backend.prepare(inputs)
        seconds = []
        for order in orders:
            start = time.perf_counter()
            transforms = affine_matrices(rng, len(order), shape) if augment else None
            backend.train_epoch(network.params, state, data, labels, order, batch_size, optimizer,
                                network.activation_code, augment=transforms)
            seconds.append(time.perf_counter() - start)
        note = "BLAS threads" if backend_name == "numpy" else ""
        return seconds, accuracy(backend, network, test_inputs, test_labels), note
    return train


def train_torch(network, inputs, labels, test_inputs, test_labels, orders, batch_size, workload, threads):
    """PyTorch eager: nn.Sequential, F.cross_entropy, torch.optim.SGD or Adam; each batch converted to float on
    the fly."""
    import torch

    torch.set_num_threads(threads)
    activation = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[workload.activation]
    layers = []
    for weight, bias in zip(network.weights, network.biases):
        linear = torch.nn.Linear(*weight.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight.T.copy()))
            linear.bias.copy_(torch.from_numpy(bias))
        layers += [linear, activation()]
    model = torch.nn.Sequential(*layers[:-1])
    rate = workload.learning_rate(batch_size)
    optimiser = (torch.optim.Adam(model.parameters(), lr=rate) if workload.optimizer == "adam"
                 else torch.optim.SGD(model.parameters(), lr=rate))
    scale = float(input_scale(inputs.dtype))
    x_all, y_all = torch.from_numpy(inputs), torch.from_numpy(labels.astype(np.int64))
    seconds = []
    for order in orders:
        order = torch.from_numpy(order)
        start = time.perf_counter()
        for first in range(0, len(order), batch_size):
            rows = order[first:first + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x_all[rows].float().mul_(scale)), y_all[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        seconds.append(time.perf_counter() - start)
    with torch.no_grad():
        predicted = model(torch.from_numpy(test_inputs).float().mul_(scale)).argmax(1).numpy()
    return seconds, float((predicted == test_labels).mean()), f"torch {torch.__version__}"


def train_sklearn(network, inputs, labels, test_inputs, test_labels, orders, batch_size, workload, threads):
    """scikit-learn MLPClassifier (the same layers, activation and solver; no momentum, no L2), one partial_fit per
    epoch.

    It shuffles and initialises by itself (Glorot, like fastnet) and needs a float
    copy of the data, made before the clock starts."""
    import sklearn
    from sklearn.neural_network import MLPClassifier

    activation = {"sigmoid": "logistic", "relu": "relu", "tanh": "tanh"}[workload.activation]
    model = MLPClassifier(hidden_layer_sizes=workload.hidden, activation=activation, solver=workload.optimizer,
                          alpha=0.0, batch_size=batch_size, learning_rate_init=workload.learning_rate(batch_size),
                          momentum=0.0, random_state=0, shuffle=True)
    scale = np.float32(input_scale(inputs.dtype))
    x = inputs.astype(np.float32) * scale
    seconds = []
    for _ in orders:
        start = time.perf_counter()
        model.partial_fit(x, labels, classes=np.arange(10))
        seconds.append(time.perf_counter() - start)
    accuracy = float((model.predict(test_inputs.astype(np.float32) * scale) == test_labels).mean())
    return seconds, accuracy, f"scikit-learn {sklearn.__version__}, own init and shuffle"


def train_jax(network, inputs, labels, test_inputs, test_labels, orders, batch_size, workload, threads):
    """JAX: a whole epoch compiled with jax.jit over lax.scan of the batches (full batches; a ragged last batch
    runs as one more compiled step), SGD or Adam written out (PyTorch's defaults)."""
    import jax
    import jax.numpy as jnp

    activation = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "tanh": jnp.tanh}[workload.activation]
    rate, scale = workload.learning_rate(batch_size), float(input_scale(inputs.dtype))
    beta1, beta2, epsilon = 0.9, 0.999, 1e-8

    def logits(params, x):
        for weight, bias in zip(params[0:-2:2], params[1:-2:2]):
            x = activation(x @ weight + bias)
        return x @ params[-2] + params[-1]

    def loss_fn(params, x, y):
        return -jnp.mean(jax.nn.log_softmax(logits(params, x))[jnp.arange(y.shape[0]), y])

    def step(carry, batch):
        params, m, v, t = carry
        x, y = batch
        grads = jax.grad(loss_fn)(params, x.astype(jnp.float32) * scale, y)
        if workload.optimizer != "adam":
            return ([p - rate * g for p, g in zip(params, grads)], m, v, t), None
        t = t + 1
        m = [beta1 * a + (1 - beta1) * g for a, g in zip(m, grads)]
        v = [beta2 * a + (1 - beta2) * g * g for a, g in zip(v, grads)]
        params = [p - rate * (a / (1 - beta1 ** t)) / (jnp.sqrt(b / (1 - beta2 ** t)) + epsilon)
                  for p, a, b in zip(params, m, v)]
        return (params, m, v, t), None

    @jax.jit
    def epoch(carry, x_batches, y_batches):
        return jax.lax.scan(step, carry, (x_batches, y_batches))[0]

    single_step = jax.jit(lambda carry, x, y: step(carry, (x, y))[0])
    params = [jnp.asarray(p) for p in network.params]
    carry = (params, [jnp.zeros_like(p) for p in params], [jnp.zeros_like(p) for p in params], jnp.float32(0))
    x_all, y_all = jnp.asarray(inputs), jnp.asarray(labels.astype(np.int32))
    full = len(inputs) // batch_size * batch_size

    def run(carry, order):
        rows = jnp.asarray(order[:full].reshape(-1, batch_size))
        carry = epoch(carry, x_all[rows], y_all[rows])
        if full < len(order):
            rest = jnp.asarray(order[full:])
            carry = single_step(carry, x_all[rest], y_all[rest])
        return carry

    jax.block_until_ready(run(carry, orders[0]))  # compile, untimed; results discarded
    seconds = []
    for order in orders:
        start = time.perf_counter()
        carry = jax.block_until_ready(run(carry, order))
        seconds.append(time.perf_counter() - start)
    predicted = np.asarray(logits(carry[0], jnp.asarray(test_inputs) * scale).argmax(1))
    return seconds, float((predicted == test_labels).mean()), f"jax {jax.__version__}"


TRAINERS = {"numba": _fastnet("numba"), "numba-augment": _fastnet("numba", augment=True), "numpy": _fastnet("numpy"),
            "torch": train_torch, "sklearn": train_sklearn,
            "jax": train_jax}
