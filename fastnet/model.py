"""The network: D inputs -> hidden layers (sigmoid, ReLU or tanh) -> K softmax outputs; the depth is data.

Initialisation (biases start at zero), by the activation of the hidden layers:
- sigmoid and tanh: Glorot/Xavier uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), every layer;
- relu: He normal for the hidden layers, N(0, 2 / fan_in); Glorot uniform for the output layer.
The layers are drawn in order from one generator, so the seed's 784-128-10 starts where it always has.
MLPClassifier starts as scikit-learn's does (initialise_as_scikit_learn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels.common import ACTIVATIONS


@dataclass
class Network:
    weights: list[np.ndarray]  # W_l (fan_in, fan_out) float32, l = 1 .. L
    biases: list[np.ndarray]  # b_l (fan_out,)
    activation: str = "sigmoid"  # of every hidden layer

    @classmethod
    def initialise(cls, layer_sizes: tuple[int, ...] | list[int], activation: str,
                   rng: np.random.Generator) -> "Network":
        """A new network of these layer sizes (D, H_1, ..., K)."""
        def glorot(fan_in, fan_out):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)

        def he(fan_in, fan_out):
            return (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)

        shapes = list(zip(layer_sizes[:-1], layer_sizes[1:]))
        hidden = he if activation == "relu" else glorot
        weights = [hidden(*shape) for shape in shapes[:-1]] + [glorot(*shapes[-1])]
        return cls(weights, [np.zeros(fan_out, np.float32) for _, fan_out in shapes], activation)

    @classmethod
    def initialise_as_scikit_learn(cls, layer_sizes: tuple[int, ...] | list[int], activation: str,
                                   rng: np.random.Generator) -> "Network":
        """A new network initialised as scikit-learn's MLPClassifier does: each layer's weights, then its biases,
        U(-a, a) with a = sqrt(f / (fan_in + fan_out)), f = 2 for sigmoid, else 6."""
        factor = 2.0 if activation == "sigmoid" else 6.0
        weights, biases = [], []
        for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:]):
            limit = np.sqrt(factor / (fan_in + fan_out))
            weights.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32))
            biases.append(rng.uniform(-limit, limit, fan_out).astype(np.float32))
        return cls(weights, biases, activation)

    @property
    def params(self) -> list[np.ndarray]:
        """[W_1, b_1, ..., W_L, b_L], the order every kernel takes them in."""
        return [array for pair in zip(self.weights, self.biases) for array in pair]

    @property
    def activation_code(self) -> int:
        return ACTIVATIONS.index(self.activation)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """(D, H_1, ..., K)."""
        return (self.weights[0].shape[0],) + tuple(w.shape[1] for w in self.weights)

    @property
    def hidden(self) -> tuple[int, ...]:
        return self.layer_sizes[1:-1]

    def all_finite(self) -> bool:
        return all(np.isfinite(p).all() for p in self.params)

    def describe(self) -> str:
        """784-128-10 sigmoid, say."""
        return f"{'-'.join(map(str, self.layer_sizes))} {self.activation}"
