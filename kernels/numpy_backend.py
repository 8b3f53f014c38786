"""The reference: plain numpy, vectorised, obviously correct.

This is the test oracle for the Numba kernels (numba_backend.py), which compute
the same maths with explicit loops. It runs in float32 for training and in
float64 (pass float64 parameters) for finite-difference gradient checks.

The network (legend in common.py): x = inputs * input_scale (1/255 for uint8
pixels, 1 for float features), then for l = 1 .. L
    h_l = activation(h_{l-1} @ W_l + b_l)   (h_0 = x; hidden layers)
    logits = h_{L-1} @ W_L + b_L;  probs = softmax(logits)
and the loss is the mean cross-entropy of probs against the labels.
"""

from __future__ import annotations

import numpy as np

from .common import SIGMOID, TANH, Augment, Optimizer, OptimizerState, input_scale


def prepare(inputs: np.ndarray, *, sparse: bool | None = None) -> np.ndarray:
    """The training data as this backend reads it: the array itself (sparse or not: numba_backend's choice)."""
    return inputs


def compile_on_both_cores(layer_sizes, activation, dtype, sparse, batch_size, optimizer, augment_shape, env
                          ) -> None:
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
    elif activation == TANH:
        np.tanh(inp, out=out)
    else:
        np.maximum(inp, 0, out=out)


def activation_backward(dinp, dout, out, activation):
    """dinp = dout * activation'(.), written in terms of the activation's output."""
    if activation == SIGMOID:
        dinp[...] = dout * out * (1 - out)
    elif activation == TANH:
        dinp[...] = dout * (1 - out * out)
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


# ---------------------------------------------------------------- augmentation


def augment_images(inputs, matrices, shape):
    """inputs (N, D) images of shape (H, W, C), each through its transform in matrices (N, 6): Augment says how.
    Same dtype; float32 arithmetic throughout, as the kernel's."""
    height, width, channels = shape
    f32 = np.float32
    n = len(inputs)
    padded = np.zeros((n, height + 2, width + 2, channels), f32)  # a zero border: reads just outside are zeros
    padded[:, 1:-1, 1:-1] = inputs.reshape(n, height, width, channels)
    y, x = np.mgrid[0:height, 0:width].astype(f32)
    m = matrices.astype(f32)[:, :, None, None]
    source_x = m[:, 0] * x + m[:, 1] * y + m[:, 2]
    source_y = m[:, 3] * x + m[:, 4] * y + m[:, 5]
    inside = (source_x > -1) & (source_x < width) & (source_y > -1) & (source_y < height)
    floor_x, floor_y = np.floor(source_x), np.floor(source_y)
    wx, wy = (source_x - floor_x)[..., None], (source_y - floor_y)[..., None]
    ix = (np.clip(floor_x, -1, width - 1).astype(np.int64) + 1)
    iy = (np.clip(floor_y, -1, height - 1).astype(np.int64) + 1)
    image = np.arange(n)[:, None, None]
    v00, v01 = padded[image, iy, ix], padded[image, iy, ix + 1]
    v10, v11 = padded[image, iy + 1, ix], padded[image, iy + 1, ix + 1]
    one = f32(1.0)
    values = (v00 * (one - wx) + v01 * wx) * (one - wy) + (v10 * (one - wx) + v11 * wx) * wy
    values = np.where(inside[..., None], values, f32(0.0))
    if inputs.dtype == np.uint8:
        values = np.floor(values + f32(0.5))
    return values.reshape(n, -1).astype(inputs.dtype)


# ---------------------------------------------------------------- network


def _inputs(inputs, dtype):
    """x = inputs * input_scale, in the parameters' dtype, for one batch only."""
    return inputs.astype(dtype) * dtype.type(input_scale(inputs.dtype))


def forward(hidden, probs, inputs, params, activation):
    """hidden (one (N, H_l) array per hidden layer) and probs (N, K) from inputs (N, D)."""
    weights, biases = params[0::2], params[1::2]
    layer_input = _inputs(inputs, weights[0].dtype)
    for out, weight, bias in zip(hidden, weights, biases):
        linear_forward(out, layer_input, weight, bias)
        activation_forward(out, out, activation)
        layer_input = out
    logits = np.empty_like(probs)
    linear_forward(logits, layer_input, weights[-1], biases[-1])
    softmax_forward(probs, logits)


def backward(grads, hidden, probs, inputs, labels, params, activation):
    """grads (dW_1, db_1, ..., dW_L, db_L) of the batch-mean loss, after forward()."""
    weights = params[0::2]
    layer_inputs = [_inputs(inputs, weights[0].dtype)] + list(hidden)
    dout = np.empty_like(probs)
    cross_entropy_backward(dout, probs, labels)
    for layer in reversed(range(len(weights))):
        dinp = np.empty_like(layer_inputs[layer]) if layer > 0 else None
        linear_backward(grads[2 * layer], grads[2 * layer + 1], dinp, dout, layer_inputs[layer], weights[layer])
        if layer > 0:
            activation_backward(dinp, dinp, layer_inputs[layer], activation)
            dout = dinp


def optimizer_step(params, grads, state: OptimizerState, optimizer: Optimizer):
    """One step of the optimiser (common.Optimizer says the maths) for every parameter, in place."""
    state.step[0] += 1
    for i, (weight, grad) in enumerate(zip(params, grads)):
        decay = optimizer.weight_decay if weight.ndim == 2 else 0.0  # weights, not biases
        rate = weight.dtype.type(optimizer.learning_rate)
        if optimizer.kind == "adam":
            t = state.step[0]
            m, s = state.first[i], state.second[i]
            m *= optimizer.beta1
            m += (1 - optimizer.beta1) * grad
            s *= optimizer.beta2
            s += (1 - optimizer.beta2) * grad * grad
            weight *= 1 - rate * decay
            m_hat = m / (1 - optimizer.beta1 ** t)
            s_hat = s / (1 - optimizer.beta2 ** t)
            weight -= rate * m_hat / (np.sqrt(s_hat) + optimizer.epsilon)
            continue
        grad = grad + decay * weight if decay else grad
        if state.first is None:
            weight -= rate * grad
            continue
        v = state.first[i]
        v *= optimizer.momentum
        v += grad
        weight -= rate * (grad + optimizer.momentum * v if optimizer.nesterov else v)


def cross_entropy_sum(probs, labels):
    """Summed (not mean) cross-entropy, clamped so a zero probability stays finite."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, np.finfo(probs.dtype).tiny)).sum())


def train_epoch(params, state: OptimizerState, data, labels, order, batch_size, optimizer: Optimizer, activation,
                progress=None, stop=None, first_batch=0, augment: Augment | None = None):
    """One pass over data in the given order from batch first_batch, updating params and state in place.

    Returns (summed loss, correct predictions, next batch): next batch is the
    number of batches when the epoch is complete, less if stop[0] was set: the
    batch in progress is finished, and every batch before next batch is done.
    Each batch is forward, backward and update; the loss and accuracy are those
    of each batch before its update (running figures, as in most trainers).
    progress(images done) is called now and then: an epoch here can take a while.
    With augment, each image is trained on through its transform (augment_images).
    """
    weights = params[0::2]
    grads = [np.empty_like(p) for p in params]
    loss_sum, correct = 0.0, 0
    for start in range(first_batch * batch_size, len(order), batch_size):
        rows = order[start:start + batch_size]
        inputs, batch_labels = data[rows], labels[rows]
        if augment is not None:
            inputs = augment_images(inputs, augment.matrices[start:start + len(rows)], augment.shape)
        hidden = [np.empty((len(rows), w.shape[1]), w.dtype) for w in weights[:-1]]
        probs = np.empty((len(rows), weights[-1].shape[1]), weights[0].dtype)
        forward(hidden, probs, inputs, params, activation)
        loss_sum += cross_entropy_sum(probs, batch_labels)
        correct += int((probs.argmax(axis=1) == batch_labels).sum())
        backward(grads, hidden, probs, inputs, batch_labels, params, activation)
        optimizer_step(params, grads, state, optimizer)
        if progress is not None and (start // batch_size) % 64 == 0:
            progress(start + len(rows))
        if stop is not None and stop[0]:  # as in the Numba backend: the batch in progress is finished first
            return loss_sum, correct, start // batch_size + 1
    return loss_sum, correct, -(-len(order) // batch_size)


def predict(probs, inputs, params, activation):
    """probs (N, K) for inputs (N, D)."""
    weights = params[0::2]
    hidden = [np.empty((len(inputs), w.shape[1]), w.dtype) for w in weights[:-1]]
    forward(hidden, probs, inputs, params, activation)
