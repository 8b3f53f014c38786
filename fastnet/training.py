"""The training loop: shuffle, one compiled epoch, evaluate, report; repeat."""

from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .checkpoint import Checkpoint, save_checkpoint
from .errors import FastnetError
from .kernels import BACKENDS, get_backend
from .model import ACTIVATIONS, Network

SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig:
    epochs: int = 35
    batch_size: int = 32
    learning_rate: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 5e-5
    schedule: str = "cosine"
    hidden: int = 128
    activation: str = "sigmoid"
    seed: int = 0
    backend: str = "numba"

    def __post_init__(self):
        """Every setting is checked here, whoever made the config (flags, a checkpoint, the API): one bad value
        is one FastnetError naming it."""
        def whole(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise FastnetError(f"setting {name}={value!r}: must be a whole number, at least {low}")

        def real(name, low, high=math.inf, low_inclusive=True):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or \
                    not math.isfinite(value) or not (value >= low if low_inclusive else value > low) or value >= high:
                limits = f"{'[' if low_inclusive else '('}{low:g}, {high:g})"
                raise FastnetError(f"setting {name}={value!r}: must be a finite number in {limits}")

        whole("epochs", 1)
        whole("batch_size", 1)
        whole("hidden", 1)
        whole("seed", 0)
        real("learning_rate", 0.0, low_inclusive=False)
        real("momentum", 0.0, 1.0)
        real("weight_decay", 0.0)
        for name, choices in (("schedule", SCHEDULES), ("activation", ACTIVATIONS), ("backend", BACKENDS)):
            if getattr(self, name) not in choices:
                raise FastnetError(f"setting {name}={getattr(self, name)!r}: must be one of {', '.join(choices)}")

    def as_dict(self) -> dict:
        return asdict(self)


def check_data(images: np.ndarray, labels: np.ndarray, n_classes: int, what: str = "training") -> None:
    """The checks every dataset passes before it reaches the kernels, which do not check their indices:
    images a C-contiguous uint8 (N, D) array, labels N integers in [0, n_classes)."""
    if not 2 <= n_classes <= 256:
        raise FastnetError(f"{n_classes} classes: fastnet trains 2 to 256 classes (one class cannot be learned)")
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
            and images.flags.c_contiguous and images.shape[1] >= 1):
        raise FastnetError(f"{what} images must be a C-contiguous uint8 array (N, D), not "
                           f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}")
    if not (isinstance(labels, np.ndarray) and labels.dtype.kind in "ui" and labels.shape == (len(images),)):
        raise FastnetError(f"{what} labels must be {len(images)} integers, one per image, not "
                           f"{getattr(labels, 'dtype', type(labels).__name__)} {getattr(labels, 'shape', '')}")
    if len(images) == 0:
        raise FastnetError(f"no {what} images")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise FastnetError(f"{what} labels must be class numbers 0 to {n_classes - 1}; found "
                           f"{int(labels.min())} to {int(labels.max())}")


def data_fingerprint(images: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    """What a checkpoint records of its training data, so that it is never resumed on other data."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(memoryview(images).cast("B"))
    digest.update(np.ascontiguousarray(labels, np.int64).tobytes())
    return {"images": len(images), "inputs": images.shape[1], "classes": n_classes, "digest": digest.hexdigest()}


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


def accuracy(backend, network: Network, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images whose most probable class is the label."""
    probs = np.empty((len(images), network.W2.shape[1]), np.float32)
    backend.predict(probs, images, network.params, network.activation_code)
    return float((probs.argmax(axis=1) == labels).mean())


def warm_up(backend, config: TrainConfig, images: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Compile (or load from cache) every kernel training will call; returns the seconds it took.

    Runs them on copies of a few real images with the real argument types, so
    that the timed epochs contain no compilation.
    """
    start = time.perf_counter()
    count = min(len(images), 2 * config.batch_size)
    few_images, few_labels = images[:count].copy(), labels[:count].copy()
    network = Network.initialise(images.shape[1], config.hidden, n_classes, config.activation,
                                 np.random.default_rng(0))
    velocity = [np.zeros_like(p) for p in network.params]
    helper = backend.start_compiling_prediction()  # on the other core, if there is anything to compile
    backend.train_epoch(network.params, velocity, backend.prepare(few_images), few_labels,
                        np.arange(count, dtype=np.int64), config.batch_size, 0.0, config.momentum,
                        network.activation_code, weight_decay=config.weight_decay)
    if helper is not None:
        helper.wait()  # whatever became of it, accuracy() below compiles or loads the kernel
    accuracy(backend, network, few_images, few_labels)
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
          stop: np.ndarray | None = None) -> tuple[Network, list[EpochStats]]:
    """Train a network on train_set (images, labels); returns it and one EpochStats per epoch.

    Test accuracy is measured on test_set after each epoch (NaN without one).

    The same config and data give bit-identical weights, whatever the number of
    threads, and so does a run stopped (stop[0] = 1, from new_stop_flag()) and
    continued from its checkpoint (resume). With checkpoint_path, a checkpoint is
    written after every epoch and when stopped; a stop raises Interrupted.
    """
    backend = get_backend(config.backend)
    images, labels = train_set
    check_data(images, labels, n_classes)
    if test_set is not None:
        check_data(*test_set, n_classes, "test")
    n_batches = -(-len(images) // config.batch_size)
    fingerprint = data_fingerprint(images, labels, n_classes) if resume is not None or checkpoint_path else None
    rng = np.random.default_rng(config.seed)
    if resume is not None:
        resume.check_resumable(config, fingerprint, n_batches)
        network, velocity, history = resume.network, resume.velocity, [EpochStats(**h) for h in resume.history]
        rng.bit_generator.state = resume.rng_state
    else:
        network = Network.initialise(images.shape[1], config.hidden, n_classes, config.activation, rng)
        velocity, history = [np.zeros_like(p) for p in network.params], []
    data = backend.prepare(images)

    def save(epoch, next_batch, rng_state, loss_sum=0.0, correct=0):
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, Checkpoint(config.as_dict(), network, velocity, epoch, next_batch,
                                                        rng_state, loss_sum, correct, [asdict(h) for h in history],
                                                        fingerprint))

    for epoch in range(len(history), config.epochs):
        rng_state = rng.bit_generator.state  # before the shuffle: a resumed run draws the same order
        order = rng.permutation(len(images))
        continuing = resume is not None and epoch == resume.epoch
        first_batch, loss_sum, correct = (resume.next_batch, resume.loss_sum, resume.correct) if continuing else (0, 0.0, 0)
        learning_rate = learning_rate_at(config, epoch)
        progress = ProgressBar(len(images), f"epoch {epoch + 1}")
        start = time.perf_counter()
        loss, hits, next_batch = backend.train_epoch(network.params, velocity, data, labels, order, config.batch_size,
                                                     learning_rate, config.momentum, network.activation_code,
                                                     weight_decay=config.weight_decay, progress=progress, stop=stop,
                                                     first_batch=first_batch)
        seconds = time.perf_counter() - start
        progress.close()
        loss_sum, correct = loss_sum + loss, correct + hits
        done = min((next_batch - first_batch) * config.batch_size, len(images))
        if not (math.isfinite(loss_sum) and network.all_finite()) or loss / max(done, 1) > diverged_loss(n_classes):
            raise Diverged(epoch + 1, learning_rate)
        if next_batch < n_batches:
            save(epoch, next_batch, rng_state, loss_sum, correct)
            raise Interrupted(epoch + 1, next_batch, checkpoint_path)
        stats = EpochStats(epoch + 1, learning_rate, loss_sum / len(images), correct / len(images),
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
