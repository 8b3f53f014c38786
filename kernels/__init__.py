"""The compute backends, one module each, with the same functions and signatures.

    numpy_backend  the reference: plain numpy, obviously correct (the test oracle)
    numba_backend  the fast one: the same maths as explicit loops, JIT-compiled

Each provides (N batch, D inputs, H hidden, K classes; params = [W1, b1, W2, b2]):
    prepare(images)                                   the training data as the backend reads it
    start_compiling_prediction()                      a process compiling predict's kernel meanwhile, or None
    train_epoch(params, velocity, data, labels, order, batch_size, learning_rate, momentum, activation,
                progress=None) -> (summed loss, correct predictions)
    forward(hidden, probs, images, params, activation)
    backward(grads, hidden, probs, images, labels, params, activation)
    sgd_update(params, grads, velocity, learning_rate, momentum)
    predict(probs, images, params, activation)
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
