"""parameters.npz: the trained weights plus what is needed to use and trust them.

Plain numpy can read it, no pickle: np.load("parameters.npz", allow_pickle=False).
    W1 (D, H), b1 (H,), W2 (H, K), b2 (K,)   float32 weights
    format_version                          int, FORMAT_VERSION
    layer_sizes                             int [D, H, K]
    activation                              str, 'sigmoid' or 'relu'
    input_scale                             float, x = pixel * input_scale (1/255)
    class_names                             str (K,), output k means class_names[k]
    training                                str, JSON of the settings that trained it
    test_accuracy                           float, fraction of the MNIST test set right
    fastnet_version                         str
    preprocessing                           str, how predict prepares images: 'digit' (MNIST-style) or
                                            'resize' (plain grayscale 28x28, for non-digit folder datasets)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .errors import FastnetError
from .files import read_npz, write_atomically, write_npz
from .model import ACTIVATIONS, Network

FORMAT_VERSION = 1
INPUT_SCALE = 1.0 / 255.0
WEIGHTS = ("W1", "b1", "W2", "b2")
REQUIRED = WEIGHTS + ("format_version", "layer_sizes", "activation", "class_names")
OPTIONAL = ("input_scale", "training", "test_accuracy", "fastnet_version", "preprocessing")
PREPROCESSING = ("digit", "resize")


@dataclass
class Parameters:
    network: Network
    class_names: list[str]
    training: dict = field(default_factory=dict)
    test_accuracy: float = float("nan")
    preprocessing: str = "digit"  # how predict prepares new images: "digit" (MNIST-style) or "resize"


def shipped_path() -> Path:
    """The trained parameters.npz fastnet ships: inside the installed package, or at the top of a source
    checkout (where `python -m fastnet train` writes it)."""
    package = Path(__file__).parent
    for candidate in (package / "parameters.npz", package.parent / "parameters.npz"):
        if candidate.is_file():
            return candidate
    raise FastnetError(f"the shipped parameters.npz is missing (looked in {package} and {package.parent}); "
                       "reinstall fastnet, or train one with 'python -m fastnet train'")


def default_path() -> Path:
    """The parameters used when none are named: parameters.npz in the current folder (what train writes there),
    else the shipped ones."""
    local = Path("parameters.npz")
    return local if local.exists() else shipped_path()


def save(path: str | Path, parameters: Parameters) -> None:
    """Write parameters to path (.npz) atomically."""
    network = parameters.network
    if not network.all_finite():
        raise FastnetError(f"refusing to write {path}: the weights contain NaN or infinity")
    arrays = {name: getattr(network, name).astype(np.float32) for name in WEIGHTS}
    arrays.update(
        format_version=np.int64(FORMAT_VERSION),
        layer_sizes=np.array(network.layer_sizes, np.int64),
        activation=np.str_(network.activation),
        input_scale=np.float64(INPUT_SCALE),
        class_names=np.array(parameters.class_names, dtype=np.str_),
        training=np.str_(json.dumps(parameters.training, sort_keys=True)),
        test_accuracy=np.float64(parameters.test_accuracy),
        fastnet_version=np.str_(__version__),
        preprocessing=np.str_(parameters.preprocessing),
    )
    write_atomically(Path(path), lambda file: write_npz(file, arrays))


def load(path: str | Path) -> Parameters:
    """Read and check a parameters file; any problem is one FastnetError saying what and where."""
    path = Path(path)
    try:
        stored = read_npz(path, REQUIRED + OPTIONAL, "parameters file")
    except FileNotFoundError:
        raise FastnetError(f"{path}: no such parameters file; train one with 'python -m fastnet train'") from None
    missing = [key for key in REQUIRED if key not in stored]
    if missing:
        raise FastnetError(f"{path}: not a fastnet parameters file (missing {', '.join(missing)})")
    try:
        return _checked(path, stored)
    except (TypeError, ValueError, OverflowError, IndexError) as error:  # entries of the wrong kind
        raise FastnetError(f"{path}: malformed parameters file ({type(error).__name__}: {error})") from None


def checked_network(path: Path, stored: dict, sizes: tuple[int, ...], activation: str) -> Network:
    """The network in stored (arrays by name), after checking that every weight is a finite float array of
    the shape the layer sizes (D, H, K) give it: the kernels do not check their indices."""
    if len(sizes) != 3 or min(sizes) < 1:
        raise FastnetError(f"{path}: layer sizes must be three positive numbers, found {sizes}")
    n_inputs, n_hidden, n_classes = sizes
    expected = {"W1": (n_inputs, n_hidden), "b1": (n_hidden,), "W2": (n_hidden, n_classes), "b2": (n_classes,)}
    for name, shape in expected.items():
        array = stored[name]
        if array.shape != shape or array.dtype.kind != "f":
            raise FastnetError(f"{path}: {name} should be a float array of shape {shape}, "
                               f"found {array.dtype} {array.shape}")
        if not np.isfinite(array).all():
            raise FastnetError(f"{path}: {name} contains NaN or infinity; retrain or use another file")
    if activation not in ACTIVATIONS:
        raise FastnetError(f"{path}: unknown activation {activation!r} (expected one of {', '.join(ACTIVATIONS)})")
    return Network(*(np.ascontiguousarray(stored[name], np.float32) for name in WEIGHTS), activation=activation)


def _checked(path: Path, stored: dict) -> Parameters:
    version = int(stored["format_version"])
    if version > FORMAT_VERSION:
        raise FastnetError(f"{path}: format version {version} is newer than this fastnet reads ({FORMAT_VERSION}); "
                           "upgrade fastnet")
    sizes = tuple(int(n) for n in np.ravel(stored["layer_sizes"]))
    activation = str(stored["activation"])
    class_names = [str(name) for name in np.ravel(stored["class_names"])]
    network = checked_network(path, stored, sizes, activation)
    if len(class_names) != sizes[2]:
        raise FastnetError(f"{path}: {len(class_names)} class names for {sizes[2]} outputs")
    try:
        training = json.loads(str(stored.get("training", "{}")))
    except json.JSONDecodeError:
        training = {}
    preprocessing = str(stored.get("preprocessing", "digit"))
    if preprocessing not in PREPROCESSING:
        raise FastnetError(f"{path}: unknown preprocessing {preprocessing!r} (expected one of {', '.join(PREPROCESSING)})")
    return Parameters(network, class_names, training, float(stored.get("test_accuracy", float("nan"))), preprocessing)
