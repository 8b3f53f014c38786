"""The compute backends, one module each, with the same functions and signatures.

    numpy_backend  the reference: plain numpy, obviously correct (the test oracle)
    numba_backend  the fast one: the same maths as explicit loops, JIT-compiled

Each provides (legend in common.py; params = [W_1, b_1, ..., W_L, b_L]; inputs (N, D) uint8 pixels or float32
features; optimizer a common.Optimizer, state a common.OptimizerState):
    prepare(inputs, *, sparse=None)                   the training data as the backend reads it
    compile_on_both_cores(layer_sizes, activation, dtype, sparse, batch_size, optimizer, augment_shape, env)
                                                      the epoch's kernels shared out with a second process,
                                                      which then compiles predict's: that process, or None
    train_epoch(params, state, data, labels, order, batch_size, optimizer, activation, progress=None,
                stop=None, first_batch=0) -> (summed loss, correct predictions, next batch)
    forward(hidden, probs, inputs, params, activation)                 hidden: one (N, H_l) array per layer
    backward(grads, hidden, probs, inputs, labels, params, activation)
    optimizer_step(params, grads, state, optimizer)
    predict(probs, inputs, params, activation)
This package imports nothing from fastnet: it is the bottom layer.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = ("numba", "numpy")


def get_backend(name: str) -> ModuleType:
    """The backend module called name ('numba' or 'numpy')."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(f"{__name__}.{name}_backend")
