"""A trained network with what it needs to read new inputs: what `fastnet predict`, `evaluate` and `serve` use.

    model = load("parameters.npz")     # or load(): ./parameters.npz, else the model fastnet ships
    model.predict_proba(rows)          # (N, K) float32 probabilities of (N, D) uint8 or float32 rows
    model.read_images(files)           # image files as rows, prepared as the model's own images were

Python users have fastnet.MLPClassifier (estimator.py), which reads arrays the scikit-learn way and image files
through this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import FastnetError
from .kernels import get_backend
from .kernels.common import PIXEL_SCALE
from .model import Network
from .parameters import DIGITS, default_path, load as load_parameters
from .preprocess import Prep, load_image

FILES = (str, Path, bytes, Image.Image)


def as_files(inputs) -> list | None:
    """inputs as a list of image files (paths, bytes, Pillow images), or None if they are not such."""
    if isinstance(inputs, FILES):
        return [inputs]
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(i, FILES) for i in inputs):
        return list(inputs)
    return None


@dataclass
class TrainedModel:
    network: Network
    class_names: list[str]
    preprocessing: str = "digit"  # how an image file is prepared (parameters.PREPROCESSING)
    input_shape: tuple[int, ...] = DIGITS
    input_scale: float = PIXEL_SCALE  # of the inputs it was trained on (1/255: uint8 pixels; 1: floats)
    backend: str = "numba"
    invert: str = "auto"  # for image files: preprocess.Prep's
    pixel_scale: float = PIXEL_SCALE  # an image file's pixel p is p * pixel_scale to the network (parameters.py)

    def prep(self) -> Prep:
        """How this model prepares an image file (fastnet.preprocess.Prep)."""
        if self.preprocessing == "none" or len(self.input_shape) != 3:
            raise FastnetError(f"this model reads {int(np.prod(self.input_shape))} features, not images")
        height, width, channels = self.input_shape
        return Prep("digit" if self.preprocessing == "digit" else "resize", height, width, channels, self.invert)

    def read_images(self, files: list) -> np.ndarray:
        """(N, D) uint8 rows of image files (paths, bytes, Pillow images), prepared as this model's images were."""
        prep = self.prep()
        return np.stack([load_image(file, prep) for file in files])

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """(N, K) float32 class probabilities of C-contiguous (N, D) uint8 pixels (what read_images gives, read
        as pixel_scale says) or float32 inputs (as the network reads them)."""
        size = self.network.layer_sizes[0]
        if not (isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.shape[1] == size
                and rows.dtype in (np.uint8, np.float32)):
            raise FastnetError(f"this model reads (N, {size}) uint8 or float32 rows, not "
                               f"{getattr(rows, 'dtype', type(rows).__name__)} {getattr(rows, 'shape', '')}")
        if rows.dtype == np.uint8 and self.pixel_scale != PIXEL_SCALE:  # (the kernels read uint8 as p / 255)
            if self.pixel_scale == 0:
                raise FastnetError("this model was fitted on images scaled neither to [0, 1] nor to [0, 255], so "
                                   "it cannot read image files or pixels; pass it arrays scaled as it was fitted")
            rows = rows.astype(np.float32) * np.float32(self.pixel_scale)
        probs = np.empty((len(rows), len(self.class_names)), np.float32)
        if len(rows):
            get_backend(self.backend).predict(probs, np.ascontiguousarray(rows), self.network.params,
                                              self.network.activation_code)
        if not np.isfinite(probs).all():  # finite weights and inputs whose sums pass float32's range
            raise FastnetError("the network's sums overflow float32 on these inputs (its probabilities would be "
                               "NaN): its weights or these inputs are too large; retrain it, or scale the inputs")
        return probs


def load(path: str | Path | None = None, backend: str = "numba") -> TrainedModel:
    """The model stored in a parameters file (None: ./parameters.npz if there is one, else the one fastnet ships)."""
    stored = load_parameters(default_path() if path is None else path)
    return TrainedModel(stored.network, stored.class_names, stored.preprocessing, stored.input_shape,
                        stored.input_scale, backend, pixel_scale=stored.pixel_scale)
