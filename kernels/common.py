"""What both backends share: the activation codes, how inputs are scaled, and the optimiser's settings and state.

Dimension legend, used in every kernel module: N batch, D inputs, H (H_l) units of a
hidden layer, K classes; a network has L layers of weights, params = [W_1, b_1, ...,
W_L, b_L] with W_l of shape (fan_in, fan_out).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SIGMOID, RELU, TANH = 0, 1, 2
ACTIVATIONS = ("sigmoid", "relu", "tanh")  # index = the activation code the kernels take
PIXEL_SCALE = 1.0 / 255.0  # uint8 inputs are pixels: the network reads pixel / 255


def input_scale(dtype: np.dtype) -> float:
    """What the network multiplies an input of this dtype by: 1/255 for uint8 pixels, 1 for float features."""
    return PIXEL_SCALE if np.dtype(dtype) == np.uint8 else 1.0


def check_inputs(inputs: np.ndarray) -> None:
    """The two forms the kernels read: uint8 pixels or float32 features, (N, D), C-contiguous."""
    if not (inputs.ndim == 2 and inputs.dtype in (np.uint8, np.float32) and inputs.flags.c_contiguous):
        raise ValueError(f"inputs must be a C-contiguous (N, D) uint8 or float32 array, not {inputs.dtype} "
                         f"{inputs.shape}")


class Optimizer(NamedTuple):
    """How the weights move after each batch's gradient g (of the batch-mean loss):

    sgd:  g' = g + weight_decay * w (L2, weights only, not biases);
          plain: w -= lr * g';  momentum: v = momentum * v + g', w -= lr * v;
          Nesterov: v as with momentum, w -= lr * (g' + momentum * v)   (PyTorch's SGD)
    adam: decoupled weight decay (AdamW): m = beta1 m + (1 - beta1) g, s = beta2 s + (1 - beta2) g^2,
          w = w * (1 - lr * weight_decay) - lr * (m / (1 - beta1^t)) / (sqrt(s / (1 - beta2^t)) + epsilon)
          with t the number of the step, from 1; biases take no decay (PyTorch's AdamW)
    """

    kind: str = "sgd"  # "sgd" or "adam"
    learning_rate: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8


class OptimizerState(NamedTuple):
    """What an optimiser carries from one batch to the next: the steps taken so far (a 1-element int64 array,
    updated in place) and, per parameter, SGD's velocity or Adam's first moment (first) and Adam's second
    moment (second); None where the optimiser has none."""

    step: np.ndarray
    first: list[np.ndarray] | None
    second: list[np.ndarray] | None


def new_state(params: list[np.ndarray], optimizer: Optimizer) -> OptimizerState:
    """The state of an optimiser that has taken no step yet: zero moments, where it keeps any."""
    adam = optimizer.kind == "adam"
    zeros = (lambda: [np.zeros_like(p) for p in params])
    return OptimizerState(np.zeros(1, np.int64), zeros() if adam or optimizer.momentum != 0 else None,
                          zeros() if adam else None)
