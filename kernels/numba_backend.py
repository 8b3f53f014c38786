"""The fast one: the same maths as numpy_backend.py, as explicit loops JIT-compiled by Numba.

float32 throughout, fastmath so that the loops over a block's units vectorise, cache=True so the compile is paid
once. This module only assembles the public functions; the work is in
    ink.py      the first layer's input: the ink index of mostly-zero inputs, or the dense rows
    layout.py   hidden units in aligned blocks that threads own whole
    layers.py   one layer's forward, backward and update
    epoch.py    a whole epoch as one compiled call per thread
    predict.py  probabilities for raw inputs
    threads.py, intrinsics.py, jit.py   threads without Numba's parallel regions; LLVM operations; jit settings
Why it is fast, and what each choice bought, is in docs/design.md.
"""

from __future__ import annotations

import numpy as np

from .augment import new_augmented, transform_images
from .common import Augment, Optimizer, OptimizerState, check_inputs
from .compile_ahead import compile_on_both_cores
from .epoch import kernel_step, run_epoch, train_epoch
from .ink import Dense, InkIndex, ink_index, prepare as _prepare
from .jit import jit
from .layers import rule_from_buffer, scale_add
from .predict import predict

__all__ = ["prepare", "train_epoch", "forward", "backward", "optimizer_step", "predict", "compile_on_both_cores",
           "augment_images"]


def prepare(inputs: np.ndarray, *, sparse: bool | None = None) -> InkIndex | Dense:
    """The training data as this backend reads it (ink.prepare)."""
    check_inputs(inputs)
    return _prepare(inputs, sparse=sparse)


def augment_images(inputs, matrices, shape):
    """inputs (N, D) images of shape (H, W, C), each through its transform in matrices (N, 6) (common.Augment),
    by the kernel the epoch uses (augment.py): for tests."""
    check_inputs(inputs)
    ink = ink_index(inputs)
    augmented = new_augmented(Augment(matrices, shape), len(inputs), 1, ink)
    transform_images(ink, np.arange(len(inputs)), 0, len(inputs), augmented, augmented.sources[0], 0)
    out = np.zeros_like(inputs)
    start, pixels, values = augmented.ink
    for n in range(len(inputs)):
        out[n, pixels[start[2 * n]:start[2 * n + 1]]] = values[start[2 * n]:start[2 * n + 1]]
    return out


# ---------------------------------------------------------------- one batch at a time, for tests and benchmarks
# The epoch kernel itself, run on one batch as one worker with a step that changes nothing: SGD with momentum 1,
# learning rate 0 and a zero velocity leaves the weights where they are and the batch's gradient in the velocity.


def _one_batch(params, inputs, labels, activation):
    """(hidden activations, probabilities, gradients) of one batch, from the epoch kernel."""
    state = OptimizerState(np.zeros(1, np.int64), [np.zeros_like(p) for p in params], None)
    buffers = run_epoch(params, state, prepare(inputs), np.asarray(labels, np.int64), np.arange(len(inputs)),
                        len(inputs), Optimizer("sgd", learning_rate=0.0, momentum=1.0), activation)[3]
    hidden = [blocks.transpose(1, 0, 2).reshape(len(inputs), -1)[:, :w.shape[1]]
              for blocks, w in zip(buffers.hidden, params[0:-2:2])]
    return hidden, buffers.probs, state.first


def forward(hidden, probs, inputs, params, activation):
    """hidden (one (N, H_l) array per hidden layer) and probs (N, K) from inputs (N, D)."""
    computed, computed_probs, _ = _one_batch(params, inputs, np.zeros(len(inputs), np.int64), activation)
    for out, values in zip(hidden, computed):
        out[...] = values
    probs[...] = computed_probs


def backward(grads, hidden, probs, inputs, labels, params, activation):
    """grads (dW_1, db_1, ..., dW_L, db_L) of the batch-mean loss (computing the forward again itself)."""
    for grad, computed in zip(grads, _one_batch(params, inputs, labels, activation)[2]):
        grad[...] = computed


@jit
def _step_array(weight, grad, velocity, second, additive, adaptive, step, decay, corrections):
    """One optimiser step for a 2-D parameter with the kernels' own element code (layers.py)."""
    if additive is not None:
        if velocity is None:
            if decay != np.float32(0.0):
                scale_add(weight, np.float32(1.0) - step.learning_rate * decay, weight, np.float32(0.0))
            scale_add(weight, np.float32(1.0), grad, -step.learning_rate)
        else:
            scale_add(velocity, step.momentum, weight, decay)
            scale_add(velocity, np.float32(1.0), grad, np.float32(1.0))
            scale_add(weight, np.float32(1.0), velocity, -step.learning_rate)
    if adaptive is not None:
        if second is None:
            rule_from_buffer(weight, velocity, velocity, grad, step, decay, corrections, None)
        else:
            rule_from_buffer(weight, velocity, second, grad, step, decay, corrections, True)


def optimizer_step(params, grads, state: OptimizerState, optimizer: Optimizer):
    """One step of the optimiser for every parameter, in place (for tests: the epoch fuses it into the backward)."""
    step, additive, adaptive = kernel_step(optimizer)
    state.step[0] += 1
    t = int(state.step[0])
    corrections = (np.float32(1.0 / (1.0 - optimizer.beta1 ** t)), np.float32(1.0 / (1.0 - optimizer.beta2 ** t)))
    def row(array):  # a bias as a 1-row matrix: _step_array takes 2-D parameters
        return None if array is None else array.reshape(1, -1) if array.ndim == 1 else array

    for i, (weight, grad) in enumerate(zip(params, grads)):
        moments = [None if state.first is None else state.first[i], None if state.second is None else state.second[i]]
        decay = np.float32(optimizer.weight_decay if weight.ndim == 2 else 0.0)
        _step_array(row(weight), row(grad).copy(), row(moments[0]), row(moments[1]), additive, adaptive, step, decay,
                    corrections)
