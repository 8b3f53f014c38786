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


class Augment(NamedTuple):
    """An epoch's augmentation: for the image at each position of the epoch's order, the map from a pixel
    (x, y) of its transformed image to where that pixel is read in the original, bilinearly (zero outside):
    (x', y') = (m0 x + m1 y + m2, m3 x + m4 y + m5), matrices (N, 6) float32; and the images' shape (H, W, C),
    rows holding pixel (x, y)'s channel c at (y * W + x) * C + c. Values of uint8 images are rounded."""

    matrices: np.ndarray
    shape: tuple[int, int, int]


# The ranges of the random transforms (affine_matrices): rotation in degrees, scale about 1, shear in degrees,
# shift as a share of each side (2.5 pixels of MNIST's 28).
ROTATION, SCALE, SHEAR, SHIFT = 12.0, 0.1, 10.0, 0.09
# The share of images transformed in an epoch; the others are trained on as they are (the identity). Chosen on
# a validation split (docs/performance.md, Augmentation): a share of them left plain read better than all
# transformed, and cost less (the kernel copies an identity's ink).
TRANSFORMED = 0.7
# Of those, the share moved by whole pixels only (up to WHOLE_PIXELS each way, uniform), whose ink the kernel
# copies to its new place instead of reading it bilinearly: as accurate on that split, within the noise, and
# their epochs ~30% cheaper (docs/performance.md, Augmentation).
WHOLE_PIXEL_SHARE, WHOLE_PIXELS = 0.5, 2
# The share of a training run's epochs, at its end, in which no image is transformed (5 of 35): as accurate on
# that split as transforming to the end, and those epochs cost less (docs/performance.md, Augmentation).
PLAIN_FINAL_EPOCHS = 1 / 7


def plain_final_epochs(epochs: int) -> int:
    """How many of a run's last epochs train on the images as they are (PLAIN_FINAL_EPOCHS, rounded)."""
    return round(epochs * PLAIN_FINAL_EPOCHS)


def affine_matrices(rng: np.random.Generator, count: int, shape: tuple[int, int, int],
                    transformed: float = TRANSFORMED) -> Augment:
    """count random transforms about the image's centre, uniform in the ranges above: rotate, shear along x,
    scale (both axes alike), shift; each, with probability 1 - transformed, the identity instead, and else
    with probability WHOLE_PIXEL_SHARE a shift by whole pixels only (the draws are the same whatever the
    share). Augment.matrices holds their inverses (output pixel -> input pixel)."""
    height, width = shape[:2]
    angle, shear = (np.radians(rng.uniform(-limit, limit, count)) for limit in (ROTATION, SHEAR))
    scale = rng.uniform(1 - SCALE, 1 + SCALE, count)
    shift_x, shift_y = (rng.uniform(-SHIFT, SHIFT, count) * side for side in (width, height))
    cos, sin, tan = np.cos(angle), np.sin(angle), np.tan(shear)
    # forward = rotation @ [[1, tan], [0, 1]] * scale; the inverse of a 2x2 [[a, b], [c, d]] by its cofactors
    a, b, c, d = cos * scale, (cos * tan - sin) * scale, sin * scale, (sin * tan + cos) * scale
    det = a * d - b * c
    inverse = np.stack([d, -b, -c, a], axis=1) / det[:, None]
    centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
    # input = inverse @ (output - centre - shift) + centre
    from_x, from_y = -centre_x - shift_x, -centre_y - shift_y
    matrices = np.stack([inverse[:, 0], inverse[:, 1], inverse[:, 0] * from_x + inverse[:, 1] * from_y + centre_x,
                         inverse[:, 2], inverse[:, 3], inverse[:, 2] * from_x + inverse[:, 3] * from_y + centre_y],
                        axis=1).astype(np.float32)
    plain, whole = rng.random(count) >= transformed, rng.random(count) < WHOLE_PIXEL_SHARE
    moves = rng.integers(-WHOLE_PIXELS, WHOLE_PIXELS + 1, (count, 2))
    matrices[whole] = np.stack([np.ones(count), np.zeros(count), -moves[:, 0], np.zeros(count), np.ones(count),
                                -moves[:, 1]], axis=1)[whole]
    matrices[plain] = (1, 0, 0, 0, 1, 0)
    return Augment(matrices, tuple(int(n) for n in shape))


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
