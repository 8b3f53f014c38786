"""The reference: plain numpy, vectorised, obviously correct.

This is the test oracle for the Numba kernels (``numba_backend.py``), which
compute the same maths with explicit loops. It runs in float32 for training
and in float64 (pass float64 parameters) for finite-difference gradient checks.

Dimension legend, used everywhere below:
    N batch, D inputs (784), H hidden units, K classes.

The network: images (N, D) uint8 -> x = images / 255
    hidden = activation(x @ W1 + b1)        W1 is (D, H), b1 is (H,)
    logits = hidden @ W2 + b2               W2 is (H, K), b2 is (K,)
    probs  = softmax(logits); loss = mean cross-entropy against the labels
"""

from __future__ import annotations

import numpy as np

SIGMOID, RELU = 0, 1
INPUT_SCALE = 1.0 / 255.0


def prepare(images: np.ndarray) -> np.ndarray:
    """The training data as this backend reads it: the uint8 array itself."""
    return images


def start_compiling_prediction() -> None:
    """Nothing to compile here (see numba_backend)."""
    return None


# ---------------------------------------------------------------- layers


def linear_forward(out, inp, weight, bias):
    """out (N, O) = inp (N, I) @ weight (I, O) + bias (O,)."""
    np.matmul(inp, weight, out=out)
    out += bias


def linear_backward(dweight, dbias, dinp, dout, inp, weight):
    """Gradients of linear_forward; dinp may be None (the input layer needs none)."""
    np.matmul(inp.T, dout, out=dweight)
    np.sum(dout, axis=0, out=dbias)
    if dinp is not None:
        np.matmul(dout, weight.T, out=dinp)


def activation_forward(out, inp, activation):
    if activation == SIGMOID:
        with np.errstate(over="ignore"):  # exp(-z) = inf for z < -88 (float32) gives 1 / inf = 0, as it should
            out[...] = 1.0 / (1.0 + np.exp(-inp))
    else:
        np.maximum(inp, 0, out=out)


def activation_backward(dinp, dout, out, activation):
    """dinp = dout * activation'(.), written in terms of the activation's output."""
    if activation == SIGMOID:
        dinp[...] = dout * out * (1 - out)
    else:
        dinp[...] = dout * (out > 0)


def softmax_forward(probs, logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=probs)
    probs /= probs.sum(axis=1, keepdims=True)


def cross_entropy_backward(dlogits, probs, labels):
    """Gradient of the batch-mean cross-entropy with respect to the logits."""
    dlogits[...] = probs
    dlogits[np.arange(len(labels)), labels] -= 1
    dlogits /= len(labels)


# ---------------------------------------------------------------- network


def _inputs(images, dtype):
    """The float conversion x = images / 255, for one batch only."""
    return images.astype(dtype) * dtype.type(INPUT_SCALE)


def forward(hidden, probs, images, params, activation):
    """hidden (N, H) and probs (N, K) from images (N, D) uint8."""
    W1, b1, W2, b2 = params
    linear_forward(hidden, _inputs(images, W1.dtype), W1, b1)
    activation_forward(hidden, hidden, activation)
    logits = np.empty_like(probs)
    linear_forward(logits, hidden, W2, b2)
    softmax_forward(probs, logits)


def backward(grads, hidden, probs, images, labels, params, activation):
    """grads = (dW1, db1, dW2, db2) of the batch-mean loss, after forward()."""
    W1, b1, W2, b2 = params
    dW1, db1, dW2, db2 = grads
    dlogits = np.empty_like(probs)
    cross_entropy_backward(dlogits, probs, labels)
    dhidden = np.empty_like(hidden)
    linear_backward(dW2, db2, dhidden, dlogits, hidden, W2)
    activation_backward(dhidden, dhidden, hidden, activation)
    linear_backward(dW1, db1, None, dhidden, _inputs(images, W1.dtype), W1)


def sgd_update(params, grads, velocity, learning_rate, momentum, weight_decay=0.0):
    """SGD with (PyTorch-style) momentum and L2 weight decay on W1 and W2 (not the biases):
    g' = g + weight_decay * w;  v = momentum * v + g';  w -= learning_rate * v  (v = g' without momentum)."""
    for weight, grad, v in zip(params, grads, velocity):
        if weight_decay and weight.ndim == 2:
            grad = grad + weight_decay * weight
        if momentum:
            v *= momentum
            v += grad
            weight -= learning_rate * v
        else:
            weight -= learning_rate * grad


def cross_entropy_sum(probs, labels):
    """Summed (not mean) cross-entropy, clamped so a zero probability stays finite."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, np.finfo(probs.dtype).tiny)).sum())


def train_epoch(params, velocity, data, labels, order, batch_size, learning_rate, momentum, activation,
                weight_decay=0.0, progress=None, stop=None, first_batch=0):
    """One pass over data in the given order from batch first_batch, updating params in place.

    Returns (summed loss, correct predictions, next batch): next batch is the
    number of batches when the epoch is complete, less if stop[0] was set: the
    batch in progress is finished, and every batch before next batch is done. Each batch is forward, backward and
    update; the loss and accuracy are those of each batch before its update
    (running figures, as in most trainers). progress(images done) is called
    now and then: an epoch here can take a while.
    """
    W1, _, W2, _ = params
    grads = [np.empty_like(p) for p in params]
    loss_sum, correct = 0.0, 0
    for start in range(first_batch * batch_size, len(order), batch_size):
        rows = order[start:start + batch_size]
        images, batch_labels = data[rows], labels[rows]
        hidden = np.empty((len(rows), W1.shape[1]), W1.dtype)
        probs = np.empty((len(rows), W2.shape[1]), W1.dtype)
        forward(hidden, probs, images, params, activation)
        loss_sum += cross_entropy_sum(probs, batch_labels)
        correct += int((probs.argmax(axis=1) == batch_labels).sum())
        backward(grads, hidden, probs, images, batch_labels, params, activation)
        sgd_update(params, grads, velocity, learning_rate, momentum, weight_decay)
        if progress is not None and (start // batch_size) % 64 == 0:
            progress(start + len(rows))
        if stop is not None and stop[0]:  # as in the Numba backend: the batch in progress is finished first
            return loss_sum, correct, start // batch_size + 1
    return loss_sum, correct, -(-len(order) // batch_size)


def predict(probs, images, params, activation):
    """probs (N, K) for images (N, D) uint8."""
    hidden = np.empty((len(images), params[0].shape[1]), params[0].dtype)
    forward(hidden, probs, images, params, activation)
