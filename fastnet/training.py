"""The training loop: shuffle, one compiled epoch, evaluate, report; repeat."""

from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .checkpoint import Checkpoint, save_checkpoint
from .errors import FastnetError
from .kernels import BACKENDS, get_backend
from .kernels.common import (ACTIVATIONS, TRANSFORMED, Augment, Optimizer, affine_matrices, input_scale,
                             new_state, plain_final_epochs)
from .kernels.ink import is_sparse
from .memory import check_fits
from .model import Network

SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("sgd", "adam")
# Each optimiser's own defaults: SGD's (Nesterov momentum 0.9, lr 0.05) train the seed's 784-128-10 with relu
# and augmentation to its best accuracy in 35 epochs (docs/performance.md, Augmentation); Adam's are the usual
# ones (PyTorch's and Keras's), with no weight decay unless asked for (it is then decoupled: AdamW).
DEFAULT_LEARNING_RATE = {"sgd": 0.05, "adam": 0.001}
# SGD's holds for inputs no longer than MNIST's: a mean squared length (each row's inputs times their scale,
# squared and summed) of 88. SGD's step moves the first layer's sums in proportion to that length, so on longer
# rows (large colour images, light backgrounds, wide tables) its default is scaled down by it: 64x64 colour
# images of shapes (~4,000) ended at chance with lr 0.05 and trained with 0.001 (default_learning_rate).
# Adam's step does not grow with the gradient: its default is kept, which trained those images better than
# one scaled down.
SGD_DEFAULT_HOLDS_TO = 100.0
DEFAULT_MOMENTUM = {"sgd": 0.9, "adam": 0.0}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-5, "adam": 0.0}
MAX_HIDDEN_LAYERS = 16
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class TrainConfig:
    epochs: int = 35
    batch_size: int = 32
    learning_rate: float | None = None  # None: the optimiser's default for the data (with_learning_rate decides)
    momentum: float | None = None  # SGD's; None: the optimiser's default (DEFAULT_MOMENTUM)
    nesterov: bool | None = None  # None: with SGD and a momentum
    weight_decay: float | None = None  # None: the optimiser's default (DEFAULT_WEIGHT_DECAY)
    schedule: str = "cosine"
    hidden: tuple[int, ...] = (128,)  # units of each hidden layer
    activation: str = "relu"
    optimizer: str = "sgd"
    beta1: float = 0.9  # Adam's
    beta2: float = 0.999
    epsilon: float = 1e-8
    seed: int = 0
    backend: str = "numba"
    # each epoch, a share of the images through new random small affine transforms; None: where the data are
    # images that are mostly blank (with_augment decides once the data are known)
    augment: bool | None = None

    def __post_init__(self):
        """Every setting is checked here, whoever made the config (flags, a checkpoint, the API): one bad value
        is one FastnetError naming it. The optimiser's defaults are filled in."""
        def whole(name, value, low):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise FastnetError(f"setting {name}={value!r}: must be a whole number, at least {low}")

        def real(name, low, high=math.inf, low_inclusive=True):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or \
                    not math.isfinite(value) or not (value >= low if low_inclusive else value > low) or value >= high:
                limits = f"{'[' if low_inclusive else '('}{low:g}, {high:g})"
                raise FastnetError(f"setting {name}={value!r}: must be a finite number in {limits}")

        for name, choices in (("schedule", SCHEDULES), ("activation", ACTIVATIONS), ("backend", BACKENDS),
                              ("optimizer", OPTIMIZERS)):
            if getattr(self, name) not in choices:
                raise FastnetError(f"setting {name}={getattr(self, name)!r}: must be one of {', '.join(choices)}")
        if isinstance(self.hidden, (int, np.integer)) and not isinstance(self.hidden, bool):
            self.hidden = (self.hidden,)
        if not isinstance(self.hidden, (tuple, list)) or not 1 <= len(self.hidden) <= MAX_HIDDEN_LAYERS:
            raise FastnetError(f"setting hidden={self.hidden!r}: must be 1 to {MAX_HIDDEN_LAYERS} layer widths")
        for width in self.hidden:
            whole("hidden", width, 1)
        self.hidden = tuple(int(width) for width in self.hidden)
        if self.weight_decay is None:
            self.weight_decay = DEFAULT_WEIGHT_DECAY[self.optimizer]
        if self.momentum is None:
            self.momentum = DEFAULT_MOMENTUM[self.optimizer]
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            whole(name, getattr(self, name), low)
        if self.learning_rate is not None:
            real("learning_rate", 0.0, FLOAT32_MAX, low_inclusive=False)  # the kernels take it as a float32
            if np.float32(self.learning_rate) == 0:
                raise FastnetError(f"setting learning_rate={self.learning_rate!r}: it is 0 as the float32 the "
                                   "kernels take, and nothing would train")
        real("momentum", 0.0, 1.0)
        real("weight_decay", 0.0)
        rate = DEFAULT_LEARNING_RATE[self.optimizer] if self.learning_rate is None else self.learning_rate  # (at most)
        if rate * self.weight_decay >= 1:  # each step scales the weights by 1 - lr x decay, or less
            raise FastnetError(f"setting weight_decay={self.weight_decay:g}: at learning rate {rate:g} "
                               f"each step would scale the weights by {1 - rate * self.weight_decay:g}, "
                               f"wiping them out; it must be under 1 / learning rate ({1 / rate:.3g})")
        real("beta1", 0.0, 1.0)
        real("beta2", 0.0, 1.0)
        real("epsilon", 0.0, low_inclusive=False)
        if self.nesterov is None:
            self.nesterov = self.optimizer == "sgd" and self.momentum > 0
        if not isinstance(self.nesterov, bool):
            raise FastnetError(f"setting nesterov={self.nesterov!r}: must be true or false")
        if not (self.augment is None or isinstance(self.augment, bool)):
            raise FastnetError(f"setting augment={self.augment!r}: must be true, false or none (where the data "
                               "are images that are mostly blank)")
        if self.optimizer == "adam" and self.momentum != 0:
            raise FastnetError("setting momentum: it is SGD's; Adam's is beta1")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise FastnetError("setting nesterov: Nesterov momentum needs optimizer sgd and a momentum above 0")

    def as_dict(self) -> dict:
        return asdict(self)

    def optimizer_at(self, learning_rate: float) -> Optimizer:
        """The optimiser's settings for the kernels, at this learning rate."""
        return Optimizer(self.optimizer, learning_rate, self.momentum, self.nesterov, self.weight_decay,
                         self.beta1, self.beta2, self.epsilon)

    def describe(self) -> str:
        """The optimiser in words: 'lr 0.05 (cosine), momentum 0.9 (Nesterov), weight decay 5e-05' or 'adam, lr
        0.001 ...'."""
        rate = f"{self.learning_rate:g}" if self.learning_rate is not None else \
            "the data's default" if self.optimizer == "sgd" else f"{DEFAULT_LEARNING_RATE[self.optimizer]:g}"
        if self.optimizer == "adam":
            return (f"adam, lr {rate} ({self.schedule}), betas {self.beta1:g} {self.beta2:g}, "
                    f"weight decay {self.weight_decay:g} (decoupled)")
        return (f"lr {rate} ({self.schedule}), momentum {self.momentum:g}"
                + (" (Nesterov)" if self.nesterov else "") + f", weight decay {self.weight_decay:g}")


def check_data(inputs: np.ndarray, labels: np.ndarray, n_classes: int, what: str = "training") -> None:
    """The checks every dataset passes before it reaches the kernels, which do not check their indices:
    inputs a C-contiguous (N, D) array of uint8 pixels or finite float32 features, labels N integers in
    [0, n_classes)."""
    if not 2 <= n_classes <= 256:
        raise FastnetError(f"{n_classes} classes: fastnet trains 2 to 256 classes (one class cannot be learned)")
    if not (isinstance(inputs, np.ndarray) and inputs.dtype in (np.uint8, np.float32) and inputs.ndim == 2
            and inputs.flags.c_contiguous and inputs.shape[1] >= 1):
        raise FastnetError(f"{what} inputs must be a C-contiguous uint8 or float32 array (N, D), not "
                           f"{getattr(inputs, 'dtype', type(inputs).__name__)} {getattr(inputs, 'shape', '')}")
    if not (isinstance(labels, np.ndarray) and labels.dtype.kind in "ui" and labels.shape == (len(inputs),)):
        raise FastnetError(f"{what} labels must be {len(inputs)} integers, one per input, not "
                           f"{getattr(labels, 'dtype', type(labels).__name__)} {getattr(labels, 'shape', '')}")
    if len(inputs) == 0:
        raise FastnetError(f"no {what} inputs")
    if inputs.dtype == np.float32 and not np.isfinite(inputs).all():
        raise FastnetError(f"{what} inputs contain NaN or infinity; fill or drop those values first")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise FastnetError(f"{what} labels must be class numbers 0 to {n_classes - 1}; found "
                           f"{int(labels.min())} to {int(labels.max())}")


def data_fingerprint(inputs: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    """What a checkpoint records of its training data, so that it is never resumed on other data."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(inputs.dtype.name.encode())
    digest.update(memoryview(inputs).cast("B"))
    digest.update(np.ascontiguousarray(labels, np.int64).tobytes())
    return {"images": len(inputs), "inputs": inputs.shape[1], "classes": n_classes, "digest": digest.hexdigest()}


@dataclass
class EpochStats:
    epoch: int
    learning_rate: float
    loss: float  # mean cross-entropy over the epoch, each batch before its update
    train_accuracy: float  # during the epoch: each batch scored before its update (free to measure)
    test_accuracy: float
    seconds: float  # training only, evaluation excluded
    images_per_second: float


def learning_rate_at(config: TrainConfig, epoch: int) -> float:
    """The learning rate for epoch (0-based): constant, or cosine from the base rate down towards 0."""
    if config.schedule == "constant":
        return config.learning_rate
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))


def accuracy(backend, network: Network, inputs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of inputs whose most probable class is the label."""
    probs = np.empty((len(inputs), network.layer_sizes[-1]), np.float32)
    backend.predict(probs, inputs, network.params, network.activation_code)
    return float((probs.argmax(axis=1) == labels).mean())


def check_size(config: TrainConfig, sizes: tuple[int, ...], n_train: int | None,
               flag: Callable[[str], str] = lambda name: f"setting {name}",
               advice: str = "choose fewer hidden units") -> None:
    """Refuse, before anything is allocated, a batch larger than the data (n_train images; None: not known yet)
    or a network that cannot fit; flag names a setting in the message (the command line's flag, say)."""
    if n_train is not None and config.batch_size > n_train:
        raise FastnetError(f"{flag('batch_size')} {config.batch_size:,} is larger than the {n_train:,} training "
                           f"images; use {n_train:,} or fewer")
    weights = sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
    # Weights, their moments (up to two) and a blocked copy of each, a gradient buffer, the batch's buffers.
    needed = 4 * (7 * weights + 3 * config.batch_size * (sum(sizes[1:]) + 64 * len(sizes)))
    check_fits(needed, f"{flag('hidden')} {','.join(map(str, config.hidden))} with {flag('batch_size')} "
                       f"{config.batch_size:,} on {sizes[0]:,} inputs", advice)


def _image_shaped(inputs: np.ndarray, input_shape: tuple[int, ...] | None) -> bool:
    """Whether inputs are images of input_shape (H, W, C), not plain features."""
    return input_shape is not None and len(input_shape) == 3 and int(np.prod(input_shape)) == inputs.shape[1]


def augmentable(inputs: np.ndarray, input_shape: tuple[int, ...] | None) -> bool:
    """Whether inputs are images that are mostly blank: what augmentation works on."""
    return _image_shaped(inputs, input_shape) and bool(is_sparse(inputs))


def with_augment(config: TrainConfig, inputs: np.ndarray, input_shape: tuple[int, ...] | None) -> TrainConfig:
    """config with augment decided where it was left to the data (None): on for images that are mostly blank."""
    if config.augment is not None:
        return config
    return replace(config, augment=augmentable(inputs, input_shape))


def mean_squared_length(inputs: np.ndarray) -> float:
    """The mean over rows of the sum of their inputs' squares, each input times its scale (input_scale)."""
    if len(inputs) == 0:
        return 0.0
    chunks = np.array_split(inputs, max(1, inputs.size // (1 << 20)))  # summed in float64 a chunk at a time
    total = sum(float(np.einsum("ij,ij->", chunk, chunk, dtype=np.float64)) for chunk in chunks)
    return total * input_scale(inputs.dtype) ** 2 / len(inputs)


def default_learning_rate(optimizer: str, inputs: np.ndarray) -> float:
    """The optimiser's default learning rate for these training inputs (DEFAULT_LEARNING_RATE): SGD's scaled
    down in proportion for inputs longer than SGD_DEFAULT_HOLDS_TO, to two significant figures."""
    length = mean_squared_length(inputs) if optimizer == "sgd" else 0.0
    shrink = SGD_DEFAULT_HOLDS_TO / length if math.isfinite(length) and length > SGD_DEFAULT_HOLDS_TO else 1.0
    rate = float(f"{DEFAULT_LEARNING_RATE[optimizer] * shrink:.2g}")
    if np.float32(rate) == 0:
        raise FastnetError(f"the inputs are too large to train on (a mean squared row length of {length:.3g}): "
                           "scale them to about unit size")
    return rate


def with_learning_rate(config: TrainConfig, inputs: np.ndarray) -> TrainConfig:
    """config with its learning rate decided where it was left to the data (None): default_learning_rate."""
    if config.learning_rate is not None:
        return config
    return replace(config, learning_rate=default_learning_rate(config.optimizer, inputs))


def check_augmentable(config: TrainConfig, inputs: np.ndarray, input_shape: tuple[int, ...] | None) -> None:
    """Refuse augmentation where it cannot apply: on inputs that are not images, or images that are not mostly
    blank (the transform works on the ink index)."""
    if not config.augment:
        return
    if not _image_shaped(inputs, input_shape):
        raise FastnetError("augmentation transforms images: these inputs are plain features (no image shape); "
                           "train without --augment")
    if not is_sparse(inputs):
        raise FastnetError("augmentation works on images that are mostly blank (strokes on a plain background); "
                           "these are mostly ink or colour: train without --augment")


def epoch_augmentation(config: TrainConfig, rng: np.random.Generator, count: int,
                       input_shape: tuple[int, ...] | None, epoch: int) -> Augment | None:
    """Epoch `epoch`'s random transforms (from 0), one per image, drawn after its shuffle (so a resumed run draws
    the same): a share TRANSFORMED of them, none in the run's final epochs (common.plain_final_epochs, still
    through the augmented kernel: the identity is a copy); None without augmentation."""
    if not config.augment:
        return None
    final = epoch >= config.epochs - plain_final_epochs(config.epochs)
    return affine_matrices(rng, count, tuple(input_shape), 0.0 if final else TRANSFORMED)


def warm_up(backend, config: TrainConfig, inputs: np.ndarray, labels: np.ndarray, n_classes: int,
            child_environment: dict | None = None, input_shape: tuple[int, ...] | None = None) -> float:
    """Compile (or load from cache) every kernel training will call; returns the seconds it took.

    Runs them on copies of a few real rows with the real argument types (sparse or dense as the whole data is
    read), so that the timed epochs contain no compilation. With child_environment, a second process shares
    the compile (numba_backend.compile_on_both_cores).
    """
    start = time.perf_counter()
    config = with_augment(config, inputs, input_shape)
    count = min(len(inputs), 2 * config.batch_size)
    few_inputs, few_labels = inputs[:count].copy(), labels[:count].copy()
    sizes = (inputs.shape[1], *config.hidden, n_classes)
    network = Network.initialise(sizes, config.activation, np.random.default_rng(0))
    optimizer = config.optimizer_at(0.0)
    sparse = is_sparse(inputs)
    helper = None
    if child_environment is not None:  # on the other core, if there is anything to compile
        helper = backend.compile_on_both_cores(sizes, network.activation_code, inputs.dtype.name, sparse,
                                               config.batch_size, optimizer,
                                               input_shape if config.augment else None, child_environment)
    backend.train_epoch(network.params, new_state(network.params, optimizer),
                        backend.prepare(few_inputs, sparse=sparse), few_labels,
                        np.arange(count, dtype=np.int64), config.batch_size, optimizer, network.activation_code,
                        augment=epoch_augmentation(config, np.random.default_rng(0), count, input_shape, 0))
    if helper is not None:
        helper.wait()  # whatever became of it, accuracy() below compiles or loads the kernel
    accuracy(backend, network, few_inputs, few_labels)
    return time.perf_counter() - start


class ProgressBar:
    """A progress line on a terminal that appears only once an epoch has run for a second. Not in logs: where
    the stream is no terminal it stays silent, and the one line per epoch says it all."""

    def __init__(self, total: int, label: str, stream=None):
        self.total, self.label = total, label
        self.stream = stream if stream is not None else sys.stderr
        self.start = self.last = time.perf_counter()
        self.shown = False
        self.enabled = self.stream.isatty()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.start < 1.0 or now - self.last < 0.2:
            return
        self.last, self.shown = now, True
        filled = 30 * done // self.total
        print(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} "
              f"{done / (now - self.start):,.0f} img/s", end="", file=self.stream, flush=True)

    def close(self) -> None:
        if self.shown:
            print(file=self.stream, flush=True)


def train(config: TrainConfig, train_set: tuple[np.ndarray, np.ndarray],
          test_set: tuple[np.ndarray, np.ndarray] | None, n_classes: int,
          on_epoch: Callable[[EpochStats], None] = lambda stats: None, *,
          resume: Checkpoint | None = None, checkpoint_path: Path | None = None,
          stop: np.ndarray | None = None, input_shape: tuple[int, ...] | None = None
          ) -> tuple[Network, list[EpochStats]]:
    """Train a network on train_set (inputs, labels); returns it and one EpochStats per epoch.

    Test accuracy is measured on test_set after each epoch (NaN without one).

    The same config and data give bit-identical weights, whatever the number of
    threads, and so does a run stopped (stop[0] = 1, from new_stop_flag()) and
    continued from its checkpoint (resume). With checkpoint_path, a checkpoint is
    written after every epoch and when stopped; a stop raises Interrupted.
    Augmentation (config.augment True, or None: where the data are images mostly blank) needs the images'
    input_shape (H, W, C).
    """
    backend = get_backend(config.backend)
    inputs, labels = train_set
    check_data(inputs, labels, n_classes)
    if test_set is not None:
        check_data(*test_set, n_classes, "test")
    if resume is not None:  # what was decided from the data when the run began: the checkpoint says
        if config.augment is None:
            config = replace(config, augment=bool(resume.config.get("augment")))
        if config.learning_rate is None:
            config = replace(config, learning_rate=resume.config.get("learning_rate"))
    config = with_learning_rate(with_augment(config, inputs, input_shape), inputs)
    check_augmentable(config, inputs, input_shape)
    n_batches = -(-len(inputs) // config.batch_size)
    fingerprint = data_fingerprint(inputs, labels, n_classes) if resume is not None or checkpoint_path else None
    rng = np.random.default_rng(config.seed)
    if resume is not None:
        resume.check_resumable(config, fingerprint, n_batches)
        network, state, history = resume.network, resume.optimizer_state, [EpochStats(**h) for h in resume.history]
        rng.bit_generator.state = resume.rng_state
    else:
        network = Network.initialise((inputs.shape[1], *config.hidden, n_classes), config.activation, rng)
        state, history = new_state(network.params, config.optimizer_at(config.learning_rate)), []
    data = backend.prepare(inputs)

    def save(epoch, next_batch, rng_state, loss_sum=0.0, correct=0):
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, Checkpoint(config.as_dict(), network, state, epoch, next_batch,
                                                        rng_state, loss_sum, correct, [asdict(h) for h in history],
                                                        fingerprint))

    for epoch in range(len(history), config.epochs):
        rng_state = rng.bit_generator.state  # before the shuffle: a resumed run draws the same order
        order = rng.permutation(len(inputs))
        augment = epoch_augmentation(config, rng, len(inputs), input_shape, epoch)
        continuing = resume is not None and epoch == resume.epoch
        first_batch, loss_sum, correct = (resume.next_batch, resume.loss_sum, resume.correct) if continuing else (0, 0.0, 0)
        learning_rate = learning_rate_at(config, epoch)
        progress = ProgressBar(len(inputs), f"epoch {epoch + 1}")
        start = time.perf_counter()
        loss, hits, next_batch = backend.train_epoch(network.params, state, data, labels, order, config.batch_size,
                                                     config.optimizer_at(learning_rate), network.activation_code,
                                                     progress=progress, stop=stop, first_batch=first_batch,
                                                     augment=augment)
        seconds = time.perf_counter() - start
        progress.close()
        loss_sum, correct = loss_sum + loss, correct + hits
        done = min((next_batch - first_batch) * config.batch_size, len(inputs))
        if not (math.isfinite(loss_sum) and network.all_finite()) or loss / max(done, 1) > diverged_loss(n_classes):
            raise Diverged(epoch + 1, learning_rate)
        if next_batch < n_batches:
            save(epoch, next_batch, rng_state, loss_sum, correct)
            raise Interrupted(epoch + 1, next_batch, checkpoint_path)
        stats = EpochStats(epoch + 1, learning_rate, loss_sum / len(inputs), correct / len(inputs),
                           accuracy(backend, network, *test_set) if test_set is not None else math.nan,
                           seconds, done / seconds)
        history.append(stats)
        save(epoch + 1, 0, rng.bit_generator.state)
        on_epoch(stats)
    return network, history


def diverged_loss(n_classes: int) -> float:
    """A mean epoch loss above this is divergence: ten times that of guessing uniformly (ln K each image).

    Saturated sigmoids keep the weights finite at absurd learning rates (--lr 1000 gives ~78 per image),
    so NaN alone misses it; a first epoch on a small, inky dataset can reach 4x guessing and recover.
    """
    return 10.0 * math.log(n_classes)


class Diverged(FastnetError):
    def __init__(self, epoch: int, learning_rate: float):
        super().__init__(f"training diverged in epoch {epoch} at learning rate {learning_rate:g} (the loss or "
                         "weights became NaN or infinite, or the loss far worse than guessing); nothing was saved; "
                         "try a smaller --lr")


class Interrupted(Exception):
    """Training was stopped at a batch boundary; the checkpoint (if any) continues it exactly."""

    def __init__(self, epoch: int, next_batch: int, checkpoint_path: Path | None):
        super().__init__(f"stopped in epoch {epoch} before batch {next_batch + 1}")
        self.checkpoint_path = checkpoint_path
