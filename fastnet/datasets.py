"""The shipped MNIST data: where it is and how it loads.

Images come back as one C-contiguous uint8 array of shape (N, 784) and labels
as uint8 (N,): the only form training and evaluation read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import FastnetError
from .idx import read_idx

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_CLASSES = tuple(str(digit) for digit in range(10))


def mnist_dir() -> Path:
    """data/mnist of a source checkout, or the copy an installed fastnet carries."""
    package = Path(__file__).parent
    for candidate in (package.parent / "data" / "mnist", package / "mnist"):
        if candidate.is_dir():
            return candidate
    raise FastnetError(f"the MNIST files are missing (looked in {package.parent / 'data' / 'mnist'} "
                       f"and {package / 'mnist'}); reinstall fastnet or restore data/mnist from a fresh clone")


def load_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, rows*cols) uint8 and labels (N,) uint8 from an IDX image file and label file."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise FastnetError(f"{images_path}: expected images (N, rows, cols), found shape {images.shape}")
    if labels.ndim != 1:
        raise FastnetError(f"{labels_path}: expected labels (N,), found shape {labels.shape}")
    if len(images) != len(labels):
        raise FastnetError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
                           "they must be a matching pair")
    if len(images) == 0:
        raise FastnetError(f"{images_path}: holds no images; replace it with a good copy")
    return images.reshape(len(images), images.shape[1] * images.shape[2]), labels


def load_mnist(split: str, directory: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST 'train' (60,000) or 'test' (10,000) split: images (N, 784) uint8, labels (N,) uint8."""
    directory = Path(directory) if directory is not None else mnist_dir()
    images_name, labels_name = MNIST_FILES[split]
    images, labels = load_idx_pair(directory / images_name, directory / labels_name)
    if images.shape[1] != 784 or labels.max(initial=0) > 9:
        raise FastnetError(f"{directory}: the {split} files are not MNIST (28x28 images, labels 0-9)")
    return images, labels
