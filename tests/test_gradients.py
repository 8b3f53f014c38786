"""The float64 reference's gradients against central finite differences of its own loss, for every activation
and one, two and three hidden layers; and the optimisers' steps against their formulas written out."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.kernels import numpy_backend as ref
from fastnet.kernels.common import Optimizer, new_state
from fastnet.parameters import weight_names

from .conftest import new_network, random_images


def mean_loss(network, inputs, labels):
    probs = np.empty((len(inputs), 10))
    hidden = [np.empty((len(inputs), h)) for h in network.hidden]
    ref.forward(hidden, probs, inputs, network.params, network.activation_code)
    return ref.cross_entropy_sum(probs, labels) / len(labels)


@pytest.mark.parametrize("hidden", [(12,), (12, 9), (10, 8, 7)], ids=lambda h: f"{len(h)} hidden")
@pytest.mark.parametrize("activation", ["sigmoid", "relu", "tanh"])
def test_gradients_match_finite_differences(activation, hidden):
    """In float64 with step 1e-6, central differences are good to ~1e-8; we ask for 1e-6 relative."""
    rng = np.random.default_rng(0)
    images, labels = random_images(rng, 6), rng.integers(0, 10, 6)
    network = new_network(hidden, activation, dtype=np.float64)
    hidden_out, probs = [np.empty((6, h)) for h in hidden], np.empty((6, 10))
    ref.forward(hidden_out, probs, images, network.params, network.activation_code)
    grads = [np.empty_like(p) for p in network.params]
    ref.backward(grads, hidden_out, probs, images, labels, network.params, network.activation_code)
    step = 1e-6
    for name, param, grad in zip(weight_names(len(network.weights)), network.params, grads):
        flat, flat_grad = param.reshape(-1), grad.reshape(-1)
        candidates = np.flatnonzero(flat_grad) if name == "W1" else np.arange(flat.size)
        for i in rng.choice(candidates, min(20, candidates.size), replace=False):
            saved = flat[i]
            flat[i] = saved + step
            up = mean_loss(network, images, labels)
            flat[i] = saved - step
            down = mean_loss(network, images, labels)
            flat[i] = saved
            numeric = (up - down) / (2 * step)
            assert flat_grad[i] == pytest.approx(numeric, rel=1e-6, abs=1e-9), f"{name}[{i}]"


def test_the_optimisers_follow_their_formulas():
    """Three steps of each optimiser on one weight and one bias, against PyTorch's formulas written out here
    (SGD with L2 decay, momentum and Nesterov; AdamW's bias-corrected step with decoupled decay)."""
    rng = np.random.default_rng(1)
    weight, bias = rng.standard_normal((3, 2)), rng.standard_normal(2)
    grads = [[rng.standard_normal((3, 2)), rng.standard_normal(2)] for _ in range(3)]
    lr, mu, wd, b1, b2, eps = 0.1, 0.9, 0.05, 0.8, 0.95, 1e-8
    for optimizer in (Optimizer("sgd", lr, weight_decay=wd), Optimizer("sgd", lr, mu, weight_decay=wd),
                      Optimizer("sgd", lr, mu, nesterov=True, weight_decay=wd),
                      Optimizer("adam", lr, weight_decay=wd, beta1=b1, beta2=b2, epsilon=eps)):
        params = [weight.copy(), bias.copy()]
        state = new_state(params, optimizer)
        expected = [weight.copy(), bias.copy()]
        m, v = [np.zeros_like(p) for p in expected], [np.zeros_like(p) for p in expected]
        for t, step_grads in enumerate(grads, 1):
            ref.optimizer_step(params, step_grads, state, optimizer)
            for i, (w, g) in enumerate(zip(expected, step_grads)):
                decay = wd if i == 0 else 0.0
                if optimizer.kind == "adam":
                    m[i] = b1 * m[i] + (1 - b1) * g
                    v[i] = b2 * v[i] + (1 - b2) * g * g
                    w *= 1 - lr * decay
                    w -= lr * (m[i] / (1 - b1 ** t)) / (np.sqrt(v[i] / (1 - b2 ** t)) + eps)
                    continue
                g = g + decay * w
                if optimizer.momentum == 0:
                    w -= lr * g
                    continue
                m[i] = mu * m[i] + g
                w -= lr * (g + mu * m[i] if optimizer.nesterov else m[i])
        for name, got, want in zip(("weight", "bias"), params, expected):
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"{optimizer} {name}")
        assert not np.allclose(params[0], weight), "the steps moved nothing"
