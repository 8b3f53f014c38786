"""The Python API:

    model = fastnet.load("parameters.npz")     # or fastnet.load(): ./parameters.npz, else the shipped model
    model.predict(inputs)          # class names, one per input
    model.predict_proba(inputs)    # (N, K) probabilities
    model.fit(inputs, labels)      # train a new network on them (TrainConfig settings as keywords)
    model.save("mine.npz")

`inputs` may be an array (N, D) or (N, *input_shape), or one row: uint8 pixels (read as pixel / 255) or
float features (read as they are: a scikit-learn user's X / 255 works as well); or, for a model of images,
a Pillow image, a path, bytes, or a list of them, prepared as the model's own images were (its
preprocessing and input shape, fastnet.preprocess).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import FastnetError
from .kernels import get_backend
from .kernels.common import PIXEL_SCALE, input_scale
from .model import Network
from .parameters import (DIGITS, Parameters, default_path, is_digit_model, load as load_parameters,
                         save as save_parameters)
from .preprocess import Prep, load_image

FILES = (str, Path, bytes, Image.Image)


def _as_files(inputs) -> list | None:
    """inputs as a list of image files (paths, bytes, Pillow images), or None if they are not such."""
    if isinstance(inputs, FILES):
        return [inputs]
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(i, FILES) for i in inputs):
        return list(inputs)
    return None


class Model:
    def __init__(self, network: Network | None = None, class_names: list[str] | None = None,
                 backend: str = "numba", invert: str = "auto", preprocessing: str = "digit",
                 input_shape: tuple[int, ...] = DIGITS):
        self.network, self.backend, self.invert, self.preprocessing = network, backend, invert, preprocessing
        self.class_names = list(class_names) if class_names is not None else [str(d) for d in range(10)]
        self.classes_from_labels = class_names is None  # fit() then names the classes after the labels it sees
        self.input_shape = tuple(input_shape)
        self.input_scale = PIXEL_SCALE  # of the inputs it was trained on (1/255: uint8 pixels; 1: floats)
        self.test_accuracy = float("nan")
        self.training: dict = {}

    def _checked_network(self) -> Network:
        if self.network is None:
            raise FastnetError("this model has no weights yet: call fit() or fastnet.load()")
        return self.network

    def prep(self) -> Prep:
        """How this model prepares an image file (fastnet.preprocess.Prep)."""
        if self.preprocessing == "none" or len(self.input_shape) != 3:
            raise FastnetError(f"this model reads {int(np.prod(self.input_shape))} features, not images")
        height, width, channels = self.input_shape
        return Prep("digit" if self.preprocessing == "digit" else "resize", height, width, channels, self.invert)

    def _row_shapes(self) -> set[tuple[int, ...]]:
        """The shapes one input may have: flat, or the input shape (a grayscale image's channel left out or not)."""
        shapes = {(int(np.prod(self.input_shape)),), self.input_shape}
        if len(self.input_shape) == 3 and self.input_shape[2] == 1:
            shapes.add(self.input_shape[:2])
        return shapes

    def as_inputs(self, inputs) -> np.ndarray:
        """inputs in any accepted form as a C-contiguous (N, D) uint8 or float32 array."""
        files = _as_files(inputs)
        if files is not None:
            prep = self.prep()
            return np.stack([load_image(i, prep) for i in files])
        array = np.asarray(inputs)
        size = int(np.prod(self.input_shape))
        shapes = self._row_shapes()
        if array.dtype == np.uint8 or array.dtype == np.float32:
            pass
        elif array.dtype.kind in "fiub" and array.size:
            array = array.astype(np.float32)
        elif array.size:
            raise FastnetError(f"inputs must be numbers, not {array.dtype}")
        if array.shape in shapes:
            array = array.reshape(1, size)
        elif array.ndim >= 2 and array.shape[1:] in shapes:
            array = array.reshape(len(array), size)
        else:
            shapes = sorted({f"(N, {', '.join(map(str, shape))})" for shape in shapes}, key=len)
            raise FastnetError(f"inputs must be {' or '.join(shapes)}, not shape {array.shape}")
        if array.dtype == np.float32 and not np.isfinite(array).all():
            raise FastnetError("inputs contain NaN or infinity")
        return np.ascontiguousarray(array)

    def predict_proba(self, inputs) -> np.ndarray:
        """(N, K) float32 class probabilities."""
        network = self._checked_network()
        rows = self.as_inputs(inputs)
        if rows.shape[1] != network.layer_sizes[0]:
            raise FastnetError(f"this model reads {network.layer_sizes[0]} inputs, not {rows.shape[1]}")
        probs = np.empty((len(rows), len(self.class_names)), np.float32)
        if len(rows):
            get_backend(self.backend).predict(probs, rows, network.params, network.activation_code)
        return probs

    def predict(self, inputs) -> np.ndarray:
        """The most probable class name of each input."""
        return np.asarray(self.class_names)[self.predict_proba(inputs).argmax(axis=1)]

    def fit(self, inputs, labels, **settings) -> "Model":
        """Train a new network on inputs and labels: any labels for a Model made without class_names (the
        classes are then the sorted distinct labels), else class indices or names from class_names. An array
        of another shape than the model's sets its input shape: (N, D) features, (N, H, W[, C]) images.

        settings are TrainConfig fields (epochs, batch_size, hidden, optimizer, learning_rate, ...); defaults
        as the CLI."""
        from .training import TrainConfig, check_size, train

        self._take_input_shape(inputs)
        rows = self.as_inputs(inputs)
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise FastnetError(f"labels must be one per input (1-D), not shape {labels.shape}")
        if self.classes_from_labels:  # the sorted distinct labels, as scikit-learn's classes_
            classes, labels = np.unique(labels, return_inverse=True)
            self.class_names = [str(c) for c in classes]
        elif labels.dtype.kind in "US":
            index = {name: i for i, name in enumerate(self.class_names)}
            unknown = sorted(set(map(str, labels)) - set(index))
            if unknown:
                raise FastnetError(f"labels {unknown[:5]} are not among the class names {self.class_names}")
            labels = np.array([index[str(label)] for label in labels])
        if len(labels) != len(rows) or len(rows) == 0:
            raise FastnetError(f"{len(rows)} inputs but {len(labels)} labels")
        if self.preprocessing == "digit" and not is_digit_model(self.input_shape, self.class_names):
            self.preprocessing = "resize"  # MNIST's preparation is for 28x28 gray digits only
        unknown = sorted(set(settings) - set(TrainConfig.__dataclass_fields__))
        if unknown:
            raise FastnetError(f"fit: unknown settings {unknown}; the settings are "
                               f"{', '.join(TrainConfig.__dataclass_fields__)}")
        config = TrainConfig(backend=self.backend, **settings)
        check_size(config, (rows.shape[1], *config.hidden, len(self.class_names)), len(rows))
        self.network, _ = train(config, (rows, labels.astype(np.int64)), None, len(self.class_names))
        self.training, self.input_scale = config.as_dict(), input_scale(rows.dtype)
        return self

    def _take_input_shape(self, inputs) -> None:
        """Before fit: an array of rows that are not this model's input shape sets it, with no image
        preprocessing for (N, D) features; (N, H, W) or (N, H, W, C) arrays are images of that size."""
        if _as_files(inputs) is not None:
            return
        array = np.asarray(inputs)
        if array.ndim < 2 or array.shape[1:] in self._row_shapes():
            return
        if array.ndim == 2:
            self.input_shape, self.preprocessing = (array.shape[1],), "none"
        elif array.ndim in (3, 4):
            self.input_shape = array.shape[1:3] + ((array.shape[3],) if array.ndim == 4 else (1,))
            self.preprocessing = "resize"

    def save(self, path: str | Path) -> None:
        save_parameters(path, Parameters(self._checked_network(), self.class_names, self.training,
                                         self.test_accuracy, self.preprocessing, self.input_shape, self.input_scale))


def from_parameters(stored: Parameters, backend: str = "numba") -> Model:
    model = Model(stored.network, stored.class_names, backend, preprocessing=stored.preprocessing,
                  input_shape=stored.input_shape)
    model.training, model.test_accuracy, model.input_scale = stored.training, stored.test_accuracy, stored.input_scale
    return model


def load(path: str | Path | None = None, backend: str = "numba") -> Model:
    """A Model with the weights and class names stored in a parameters file (None: ./parameters.npz if there is
    one, else the model fastnet ships)."""
    return from_parameters(load_parameters(default_path() if path is None else path), backend)
