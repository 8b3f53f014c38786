"""parameters.npz: the trained weights plus what is needed to use and trust them.

Plain numpy can read it, no pickle: np.load("parameters.npz", allow_pickle=False).
    W1, b1, ..., WL, bL     float32 weights of the L layers: W_l (fan_in, fan_out), b_l (fan_out,)
    format_version          int, FORMAT_VERSION (version 1, the 784-H-10 files before, is still read)
    layer_sizes             int [D, H_1, ..., K]
    activation              str, of the hidden layers: 'sigmoid', 'relu' or 'tanh'
    input_shape             int [height, width, channels] of the images it reads, each flattened in (height,
                            width, channel) order (channels 1: grayscale, 3: RGB), or [D] for plain features
    input_scale             float, the network reads input * input_scale: 1/255 for uint8 pixels, 1 for features
    pixel_scale             optional float, what an image file's pixel p (0 to 255) is to the network: p * pixel_scale;
                            1/255 (the default) for a model of uint8 pixels or of floats in [0, 1] (X / 255), 1 for
                            floats in [0, 255], 0 where image files cannot be read (images scaled any other way)
    preprocessing           str, how predict prepares an image: 'digit' (MNIST-style: invert, crop, centre),
                            'resize' (to input_shape, nothing else), or 'none' (a model of features, not images)
    class_names             str (K,), output k means class_names[k]
    classes                 optional: the K labels as numbers or booleans, where the model was fitted on such
                            (MLPClassifier's classes_); class_names are then their text
    training                str, JSON of the settings that trained it
    test_accuracy           float, fraction of its test set right
    fastnet_version         str
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .errors import FastnetError
from .files import read_json, read_npz, write_atomically, write_npz
from .kernels.common import ACTIVATIONS, PIXEL_SCALE
from .model import Network

FORMAT_VERSION = 2
REQUIRED = ("format_version", "layer_sizes", "activation", "class_names")
OPTIONAL = ("input_shape", "input_scale", "pixel_scale", "training", "test_accuracy", "fastnet_version",
            "preprocessing", "classes")
PIXEL_SCALES = (PIXEL_SCALE, 1.0, 0.0)  # pixel_scale's values (module docstring)
PREPROCESSING = ("digit", "resize", "none")
MAX_LAYERS = 64  # more is not a network fastnet wrote
DIGITS = (28, 28, 1)  # the input shape of version-1 files (MNIST)


def is_digit_model(input_shape: tuple[int, ...], classes: list[str]) -> bool:
    """Whether a model of this input shape and these classes may read images the MNIST way: 28x28 gray digits."""
    return tuple(input_shape) == DIGITS and all(len(name) == 1 and name.isdigit() for name in classes)


@dataclass
class Parameters:
    network: Network
    class_names: list[str]
    training: dict = field(default_factory=dict)
    test_accuracy: float = float("nan")
    preprocessing: str = "digit"  # how predict prepares new images (module docstring)
    input_shape: tuple[int, ...] = DIGITS
    input_scale: float = PIXEL_SCALE
    classes: np.ndarray | None = None  # the labels as numbers or booleans, where they were such
    pixel_scale: float = PIXEL_SCALE  # what an image file's pixels are to the network (module docstring)


def weight_names(n_layers: int) -> list[str]:
    """W1, b1, ..., WL, bL: the order of Network.params."""
    return [f"{kind}{layer}" for layer in range(1, n_layers + 1) for kind in ("W", "b")]


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
    names = np.array(parameters.class_names, dtype=np.str_)
    if names.tolist() != [str(name) for name in parameters.class_names]:  # numpy drops trailing NUL characters
        raise FastnetError(f"refusing to write {path}: a class name ends in a NUL character, which the file "
                           "cannot keep; rename that class")
    arrays = {name: array.astype(np.float32) for name, array in zip(weight_names(len(network.weights)),
                                                                       network.params)}
    arrays.update(
        format_version=np.int64(FORMAT_VERSION),
        layer_sizes=np.array(network.layer_sizes, np.int64),
        activation=np.str_(network.activation),
        input_shape=np.array(parameters.input_shape, np.int64),
        input_scale=np.float64(parameters.input_scale),
        pixel_scale=np.float64(parameters.pixel_scale),
        preprocessing=np.str_(parameters.preprocessing),
        class_names=names,
        training=np.str_(json.dumps(parameters.training, sort_keys=True)),
        test_accuracy=np.float64(parameters.test_accuracy),
        fastnet_version=np.str_(__version__),
    )
    if parameters.classes is not None:
        arrays["classes"] = np.asarray(parameters.classes)
    write_atomically(Path(path), lambda file: write_npz(file, arrays))


def load(path: str | Path) -> Parameters:
    """Read and check a parameters file; any problem is one FastnetError saying what and where."""
    path = Path(path)
    try:
        stored = read_npz(path, REQUIRED + OPTIONAL, "parameters file")
        missing = [key for key in REQUIRED if key not in stored]
        if missing:
            raise FastnetError(f"{path}: not a fastnet parameters file (missing {', '.join(missing)})")
        sizes = layer_sizes(path, stored["layer_sizes"])
        stored.update(read_npz(path, weight_names(len(sizes) - 1), "parameters file", max_bytes=None,
                               shapes=weight_shapes(sizes)))
    except FileNotFoundError:
        raise FastnetError(f"{path}: no such parameters file; train one with 'python -m fastnet train'") from None
    try:
        return _checked(path, stored, sizes)
    except FastnetError:  # a ValueError, but already the message to give
        raise
    except (TypeError, ValueError, OverflowError, IndexError) as error:  # entries of the wrong kind
        raise FastnetError(f"{path}: malformed parameters file ({type(error).__name__}: {error})") from None


def weight_shapes(sizes: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The shape of every weight (by name) of a network of these layer sizes."""
    shapes = [shape for fan_in, fan_out in zip(sizes[:-1], sizes[1:]) for shape in ((fan_in, fan_out), (fan_out,))]
    return dict(zip(weight_names(len(sizes) - 1), shapes))


def layer_sizes(path: Path, stored: np.ndarray) -> tuple[int, ...]:
    """The layer sizes (D, H_1, ..., K) as stored, checked: at least one hidden layer, every size positive."""
    if stored.dtype.kind not in "iu" or stored.ndim != 1 or not 3 <= stored.size <= MAX_LAYERS + 1 or \
            (stored < 1).any():
        raise FastnetError(f"{path}: layer sizes must be 3 to {MAX_LAYERS + 1} positive whole numbers, found "
                           f"{stored.dtype} {stored.shape}")
    if stored[-1] < 2:
        raise FastnetError(f"{path}: a network of {stored[-1]} output is not a classifier (2 classes or more)")
    return tuple(int(n) for n in stored)


def checked_network(path: Path, stored: dict, sizes: tuple[int, ...], activation: str) -> Network:
    """The network in stored (arrays by name: W1, b1, ...), after checking that every weight is a finite float
    array of the shape the layer sizes (D, H_1, ..., K) give it: the kernels do not check their indices."""
    names = weight_names(len(sizes) - 1)
    for name, shape in weight_shapes(sizes).items():
        array = stored.get(name)
        if array is None:
            raise FastnetError(f"{path}: not a fastnet parameters file (missing {name})")
        if array.shape != shape or array.dtype.kind != "f":
            raise FastnetError(f"{path}: {name} should be a float array of shape {shape}, "
                               f"found {array.dtype} {array.shape}")
    if activation not in ACTIVATIONS:
        raise FastnetError(f"{path}: unknown activation {activation!r} (expected one of {', '.join(ACTIVATIONS)})")
    with np.errstate(over="ignore"):  # float64 past float32's range becomes infinity, refused below
        params = [np.ascontiguousarray(stored[name], np.float32) for name in names]
    for name, param in zip(names, params):
        if not np.isfinite(param).all():
            raise FastnetError(f"{path}: {name} contains NaN or infinity (as float32); retrain or use another file")
    return Network(params[0::2], params[1::2], activation)


def _number(path: Path, stored: dict, name: str, default: float, kinds: str = "iuf") -> float:
    """stored[name] (default where it is missing), checked to be one number of these dtype kinds."""
    value = np.asarray(stored.get(name, default))
    if value.dtype.kind not in kinds or value.size != 1:
        raise FastnetError(f"{path}: {name} should be a number, found {value.dtype} {value.shape}")
    return value.item()


def _checked(path: Path, stored: dict, sizes: tuple[int, ...]) -> Parameters:
    version = _number(path, stored, "format_version", FORMAT_VERSION, "iu")
    if version < 1:
        raise FastnetError(f"{path}: format version {version} is not one fastnet wrote")
    if version > FORMAT_VERSION:
        raise FastnetError(f"{path}: format version {version} is newer than this fastnet reads ({FORMAT_VERSION}); "
                           "upgrade fastnet")
    network = checked_network(path, stored, sizes, str(stored["activation"]))
    names = stored["class_names"]
    if names.dtype.kind != "U" or names.size != sizes[-1]:  # (counted before a list of them is made)
        raise FastnetError(f"{path}: class names should be {sizes[-1]} strings for {sizes[-1]} outputs, found "
                           f"{names.size} of {names.dtype}")
    class_names = [str(name) for name in np.ravel(names)]
    if len(set(class_names)) != len(class_names):
        raise FastnetError(f"{path}: its class names are not distinct ({', '.join(class_names)})")
    try:
        training = read_json(str(stored.get("training", "{}")))
    except ValueError:
        training = {}
    preprocessing = str(stored.get("preprocessing", "digit"))
    if preprocessing not in PREPROCESSING:
        raise FastnetError(f"{path}: unknown preprocessing {preprocessing!r} (expected one of {', '.join(PREPROCESSING)})")
    raw_shape = np.ravel(stored["input_shape"]) if "input_shape" in stored else np.array(DIGITS)
    if raw_shape.dtype.kind not in "iu":
        raise FastnetError(f"{path}: input shape {raw_shape.tolist()} is not whole numbers")
    shape = tuple(int(n) for n in raw_shape)
    if not 1 <= len(shape) <= 3 or min(shape) < 1 or math.prod(shape) != sizes[0]:  # (not np.prod: int64 wraps)
        raise FastnetError(f"{path}: input shape {shape} does not give the network's {sizes[0]} inputs")
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise FastnetError(f"{path}: input shape {shape}: images have 1 channel (gray) or 3 (colour), not {shape[2]}")
    if preprocessing == "digit" and shape != DIGITS or preprocessing == "resize" and len(shape) != 3:
        raise FastnetError(f"{path}: preprocessing {preprocessing!r} does not fit input shape {shape}")
    scale = float(_number(path, stored, "input_scale", PIXEL_SCALE, "f"))
    if scale not in (PIXEL_SCALE, 1.0):
        raise FastnetError(f"{path}: input scale {scale} is neither 1/255 (pixels) nor 1 (features)")
    pixel_scale = float(_number(path, stored, "pixel_scale", PIXEL_SCALE, "f"))
    if pixel_scale not in PIXEL_SCALES or scale == PIXEL_SCALE and pixel_scale != PIXEL_SCALE:
        raise FastnetError(f"{path}: pixel scale {pixel_scale} is not 1/255, 1 or 0 (1/255 for a model of uint8 "
                           f"pixels)")
    classes = stored.get("classes")
    if classes is not None and (classes.dtype.kind not in "biuf" or classes.shape != (len(class_names),)):
        raise FastnetError(f"{path}: classes should be {len(class_names)} numbers, found {classes.dtype} {classes.shape}")
    if classes is not None and [str(c) for c in classes] != class_names:  # as MLPClassifier.save writes them
        raise FastnetError(f"{path}: its classes {classes.tolist()} are not its class names {class_names}")
    return Parameters(network, class_names, training, float(_number(path, stored, "test_accuracy", float("nan"))),
                      preprocessing, shape, scale, classes, pixel_scale)
