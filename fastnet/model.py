"""The network: 784 inputs -> H hidden units (sigmoid or ReLU) -> 10 softmax outputs.

Weight init (biases start at zero):
- sigmoid: Glorot/Xavier uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), both layers;
- relu: He normal for W1, N(0, 2 / fan_in); Glorot uniform for the output layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTIVATIONS = ("sigmoid", "relu")  # index = the activation code the kernels take


@dataclass
class Network:
    W1: np.ndarray  # (D, H) float32
    b1: np.ndarray  # (H,)
    W2: np.ndarray  # (H, K)
    b2: np.ndarray  # (K,)
    activation: str = "sigmoid"

    @classmethod
    def initialise(cls, n_inputs: int, n_hidden: int, n_classes: int, activation: str,
                   rng: np.random.Generator) -> "Network":
        def glorot(fan_in, fan_out):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)

        if activation == "relu":
            W1 = (rng.standard_normal((n_inputs, n_hidden)) * np.sqrt(2.0 / n_inputs)).astype(np.float32)
        else:
            W1 = glorot(n_inputs, n_hidden)
        return cls(W1, np.zeros(n_hidden, np.float32), glorot(n_hidden, n_classes),
                   np.zeros(n_classes, np.float32), activation)

    @property
    def params(self) -> list[np.ndarray]:
        """[W1, b1, W2, b2], the order every kernel takes them in."""
        return [self.W1, self.b1, self.W2, self.b2]

    @property
    def activation_code(self) -> int:
        return ACTIVATIONS.index(self.activation)

    @property
    def layer_sizes(self) -> tuple[int, int, int]:
        return self.W1.shape[0], self.W1.shape[1], self.W2.shape[1]

    def all_finite(self) -> bool:
        return all(np.isfinite(p).all() for p in self.params)
