"""Training data: the shipped MNIST, MNIST IDX files, or image folders, as the arrays training reads.

Images come back as one C-contiguous uint8 array (N, height * width * channels)
and labels as uint8 (N,). load_data turns a --data argument into a Dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FastnetError
from .idx import read_idx
from .parameters import is_digit_model

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


@dataclass
class Dataset:
    """Training and test sets (inputs, labels), the class names, and what prediction needs to know: the input
    shape (height, width, channels) and how to prepare a new image (parameters.PREPROCESSING)."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    classes: list[str]
    input_shape: tuple[int, ...] = (28, 28, 1)
    preprocessing: str = "digit"


def check_data_argument(data: str) -> None:
    """One error for a --data that names something other than a folder (an image file, say)."""
    if data != "mnist" and Path(data).exists() and not Path(data).is_dir():
        raise FastnetError(f"--data {data}: not a folder; give mnist, a folder of MNIST's four IDX files, or an image "
                           "folder with a subfolder per class")


def check_data_options(data: str, val_split: float | None = None, image_size: tuple[int, int] | None = None,
                       color: bool = False) -> bool:
    """Refuse, before any loading, options that do not apply to the dataset --data names; returns whether it is
    MNIST's IDX files (else an image folder)."""
    from .folders import has_train_and_test

    check_data_argument(data)
    folder = Path(data)
    idx = data == "mnist" or all((folder / name).is_file() for pair in MNIST_FILES.values() for name in pair)
    if val_split is not None and (idx or has_train_and_test(folder)):
        raise FastnetError(f"--val-split: {data} comes with its own test set; --val-split is for a DIR/<class>/ "
                           "dataset without train/ and test/ folders")
    if idx and (image_size is not None or color):
        raise FastnetError(f"--image-size and --color: {data} is MNIST, 28x28 grayscale; they are for image "
                           "folders")
    return idx


def load_data(data: str, val_split: float | None = None, strict: bool = False, seed: int = 0,
              image_size: tuple[int, int] | None = None, color: bool = False) -> Dataset:
    """The dataset --data names: 'mnist' (the shipped files), a folder of the four MNIST IDX files, or an image
    folder (fastnet.folders), its images at image_size (height, width; 28x28 unless told), in colour or not."""
    from .folders import load_dataset
    from .preprocess import Prep

    folder = Path(data)
    if check_data_options(data, val_split, image_size, color):
        directory = None if data == "mnist" else folder
        return Dataset(load_mnist("train", directory), load_mnist("test", directory), list(MNIST_CLASSES))
    height, width = image_size or (28, 28)
    prep = Prep("resize", height, width, 3 if color else 1)
    train, test, classes = load_dataset(folder, val_split or 0.0, strict, seed, prep)
    digits = is_digit_model((height, width, prep.channels), classes) and looks_like_mnist(train[0], height, width)
    return Dataset(train, test, classes, (height, width, prep.channels), "digit" if digits else "resize")



def looks_like_mnist(images: np.ndarray, height: int, width: int) -> bool:
    """Light digits on black, as MNIST's (and fastnet export's): nine in ten pixels of the outer 2-pixel frame
    are 0. Only then is the MNIST preparation of new images (preprocess.load_digit) what training saw."""
    if len(images) == 0:
        return False
    frame = np.ones((height, width), bool)
    frame[2:-2, 2:-2] = False
    return float((images.reshape(len(images), height, width)[:, frame] == 0).mean()) >= 0.9
