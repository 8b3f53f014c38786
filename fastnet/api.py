"""The Python API, scikit-learn style:

    model = fastnet.load("parameters.npz")
    model.predict(images)          # class names, one per image
    model.predict_proba(images)    # (N, K) probabilities
    model.fit(images, labels)      # train a new network on them
    model.save("mine.npz")

`images` may be a uint8 array (N, 784) or (N, 28, 28), one image (784,) or
(28, 28), a Pillow image, a path, or a list of images and paths. Arrays are
taken as MNIST-form digits already; Pillow images and files go through the
MNIST-style preprocessing (fastnet.preprocess) first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import FastnetError
from .kernels import get_backend
from .model import Network
from .parameters import Parameters, load as load_parameters, save as save_parameters
from .preprocess import load_digit


class Model:
    def __init__(self, network: Network | None = None, class_names: list[str] | None = None,
                 backend: str = "numba", invert: str = "auto", preprocessing: str = "digit"):
        self.network, self.backend, self.invert, self.preprocessing = network, backend, invert, preprocessing
        self.class_names = list(class_names) if class_names is not None else [str(d) for d in range(10)]
        self.test_accuracy = float("nan")

    def _checked_network(self) -> Network:
        if self.network is None:
            raise FastnetError("this model has no weights yet: call fit() or fastnet.load()")
        return self.network

    def as_digits(self, images) -> np.ndarray:
        """images in any accepted form as a C-contiguous uint8 array (N, 784)."""
        if isinstance(images, (str, Path, bytes, Image.Image)):
            images = [images]
        files = (str, Path, bytes, Image.Image)
        if isinstance(images, (list, tuple)) and images and all(isinstance(i, files) for i in images):
            return np.stack([load_digit(i, self.invert, self.preprocessing) for i in images])
        array = np.asarray(images)
        if array.dtype != np.uint8:
            raise FastnetError(f"images must be uint8 (0-255 pixels, as MNIST), not {array.dtype}")
        if array.shape in ((784,), (28, 28)):
            array = array.reshape(1, 784)
        elif array.ndim == 3 and array.shape[1:] == (28, 28):
            array = array.reshape(len(array), 784)
        elif not (array.ndim == 2 and array.shape[1] == 784):
            raise FastnetError(f"images must be (N, 784) or (N, 28, 28) uint8, not shape {array.shape}")
        return np.ascontiguousarray(array)

    def predict_proba(self, images) -> np.ndarray:
        """(N, K) float32 class probabilities."""
        network = self._checked_network()
        digits = self.as_digits(images)
        probs = np.empty((len(digits), len(self.class_names)), np.float32)
        if len(digits):
            get_backend(self.backend).predict(probs, digits, network.params, network.activation_code)
        return probs

    def predict(self, images) -> np.ndarray:
        """The most probable class name of each image."""
        return np.asarray(self.class_names)[self.predict_proba(images).argmax(axis=1)]

    def fit(self, images, labels, **settings) -> "Model":
        """Train a new network on images and labels (class indices, or names from class_names).

        settings are TrainConfig fields (epochs, batch_size, learning_rate, ...); defaults as the CLI."""
        from .training import TrainConfig, train

        digits = self.as_digits(images)
        labels = np.asarray(labels)
        if labels.dtype.kind in "US":
            index = {name: i for i, name in enumerate(self.class_names)}
            labels = np.array([index[str(label)] for label in labels])
        if len(labels) != len(digits) or len(digits) == 0:
            raise FastnetError(f"{len(digits)} images but {len(labels)} labels")
        labels = labels.astype(np.uint8)
        config = TrainConfig(backend=self.backend, **settings)
        self.network, _ = train(config, (digits, labels), None, len(self.class_names))
        self.training = config.as_dict()
        return self

    def save(self, path: str | Path) -> None:
        save_parameters(path, Parameters(self._checked_network(), self.class_names, getattr(self, "training", {}),
                                         self.test_accuracy, self.preprocessing))


def load(path: str | Path = "parameters.npz", backend: str = "numba") -> Model:
    """A Model with the weights and class names stored in a parameters file."""
    stored = load_parameters(path)
    model = Model(stored.network, stored.class_names, backend, preprocessing=stored.preprocessing)
    model.training, model.test_accuracy = stored.training, stored.test_accuracy
    return model
