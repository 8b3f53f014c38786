"""Training end to end on real MNIST, and determinism across thread counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pytest

from fastnet.kernels import epoch, numba_backend
from fastnet.kernels.common import Optimizer, new_state
from fastnet.kernels.threads import SLOT, SOLO_AT, new_control
from fastnet.model import Network
from fastnet.errors import FastnetError
from fastnet.training import (DEFAULT_LEARNING_RATE, SGD_DEFAULT_HOLDS_TO, ProgressBar, TrainConfig,
                              default_learning_rate, learning_rate_at, mean_squared_length, train, with_learning_rate)

ROOT = Path(__file__).resolve().parent.parent


def test_one_epoch_reaches_90_percent(mnist_train, mnist_test):
    network, history = train(TrainConfig(epochs=1), mnist_train, mnist_test, 10)
    assert history[0].test_accuracy >= 0.90
    assert history[0].train_accuracy >= 0.90
    assert 0 < history[0].loss < 1.0


def test_numpy_backend_learns_too(mnist_train, mnist_test):
    small = tuple(a[:6000] for a in mnist_train)
    _, history = train(TrainConfig(epochs=1, backend="numpy", batch_size=16), small, mnist_test, 10)
    assert history[0].test_accuracy >= 0.85


def test_cosine_schedule_decays_from_the_base_rate():
    config = TrainConfig(epochs=4, learning_rate=2.0)
    rates = [learning_rate_at(config, e) for e in range(4)]
    assert rates[0] == 2.0 and all(a > b > 0 for a, b in zip(rates, rates[1:]))
    assert learning_rate_at(TrainConfig(schedule="constant", learning_rate=0.3), 7) == 0.3


def test_sgds_default_learning_rate_follows_the_inputs_length(mnist_train):
    images = mnist_train[0][:5000]
    assert mean_squared_length(images) == pytest.approx(np.square(images / 255.0).sum(axis=1).mean(), rel=1e-9)
    assert mean_squared_length(images / np.float32(255)) == pytest.approx(mean_squared_length(images), rel=1e-6)
    longer = np.ones((10, int(5 * SGD_DEFAULT_HOLDS_TO)), np.float32)  # 5 times as long as the default holds to
    for optimizer, rate in DEFAULT_LEARNING_RATE.items():
        assert default_learning_rate(optimizer, mnist_train[0]) == rate  # MNIST's: the optimisers' own
        assert default_learning_rate(optimizer, longer[:0]) == rate
    assert TrainConfig().learning_rate is None and "lr the data's default" in TrainConfig().describe()
    assert "lr 0.001 " in TrainConfig(optimizer="adam").describe()
    sgd, adam = DEFAULT_LEARNING_RATE["sgd"], DEFAULT_LEARNING_RATE["adam"]
    assert default_learning_rate("sgd", longer) == pytest.approx(sgd / 5, rel=1e-12)
    assert default_learning_rate("adam", longer) == adam  # Adam's step does not grow with the inputs
    assert with_learning_rate(TrainConfig(), longer).learning_rate == pytest.approx(sgd / 5, rel=1e-12)
    assert with_learning_rate(TrainConfig(learning_rate=0.3), longer).learning_rate == 0.3  # given: kept
    with pytest.raises(FastnetError, match="inputs are too large to train on .* scale them to about unit size"):
        default_learning_rate("sgd", np.full((2, 4), 1e30, np.float32))  # a rate float32 holds only as 0
    with pytest.raises(FastnetError, match="it is 0 as the float32 the kernels take"):
        TrainConfig(learning_rate=1e-50)
    with pytest.raises(FastnetError, match="at learning rate 0.05 each step would scale the weights by -0.25"):
        TrainConfig(weight_decay=25)  # the default is at most the optimiser's own
    assert TrainConfig(optimizer="adam", weight_decay=25).weight_decay == 25


def colour_shapes(count: int, seed: int, side: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Circles, squares and triangles (labels 0, 1, 2) of random size, colour and place near the middle, on
    white: (count, side * side * 3) uint8 RGB images, as a user's first dataset of coloured shapes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    y, x = np.mgrid[0:side, 0:side]
    images = np.full((count, side, side, 3), 255, np.uint8)
    for image, label in zip(images, labels):
        r = rng.integers(side // 5, side // 3)
        dy, dx = y - side // 2 - rng.integers(-4, 5), x - side // 2 - rng.integers(-4, 5)
        inside = [dx * dx + dy * dy <= r * r, (abs(dx) <= r) & (abs(dy) <= r), (dy <= r) & (2 * abs(dx) <= dy + r)]
        image[inside[label]] = rng.integers(0, 256, 3)
    return images.reshape(count, -1), labels.astype(np.uint8)


def test_the_default_learning_rate_trains_large_colour_images():
    """At lr 0.05 (the default before it followed the inputs' length) these ended at the commonest class."""
    train_set, test_set = colour_shapes(900, 0), colour_shapes(300, 1)
    commonest = np.bincount(test_set[1]).max() / len(test_set[1])
    accuracies = {}
    for rate in (None, DEFAULT_LEARNING_RATE["sgd"]):
        _, history = train(TrainConfig(epochs=10, learning_rate=rate), train_set, test_set, 3,
                           input_shape=(32, 32, 3))
        accuracies[rate] = history[-1].test_accuracy
    assert accuracies[None] >= commonest + 0.15, accuracies
    assert accuracies[DEFAULT_LEARNING_RATE["sgd"]] <= commonest + 0.03, accuracies  # what the test guards against


TRAIN_AND_HASH = """
import hashlib, json, sys
import numpy as np
from fastnet.datasets import load_mnist
from fastnet.training import TrainConfig, train
import numba
settings = json.loads(sys.argv[1])
if settings.pop("dense", False):  # as tests/test_reliability.py's dense_table
    table = np.random.default_rng(0).standard_normal((4000, 300)).astype(np.float32)
    data = table, table[:, :10].argmax(axis=1).astype(np.int64)
else:
    images, labels = load_mnist("train")
    data = images[:8000], labels[:8000]
network, _ = train(TrainConfig(epochs=1, **settings), data, None, 10, input_shape=(28, 28, 1))
digest = hashlib.sha256(b"".join(p.tobytes() for p in network.params)).hexdigest()
print(numba.get_num_threads(), digest)
"""


@pytest.mark.parametrize("settings", [{"batch_size": 32},
                                      {"batch_size": 64, "activation": "sigmoid", "momentum": 0.9, "nesterov": False,
                                       "augment": False},
                                      {"dense": True, "hidden": [130, 65, 30], "activation": "tanh",
                                       "optimizer": "adam", "weight_decay": 0.01, "batch_size": 18}], ids=str)
def test_weights_are_bit_identical_for_one_and_two_threads(settings):
    """The default run (relu, Nesterov, augmented), the original's sigmoid network with classical momentum, and
    Adam with three hidden layers on dense inputs."""
    digests = set()
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads, PYTHONPATH=str(ROOT))
        result = subprocess.run([sys.executable, "-c", TRAIN_AND_HASH, json.dumps(settings)], env=env,
                                capture_output=True, text=True, timeout=600, check=True)
        count, digest = result.stdout.split()
        assert count == threads
        digests.add(digest)
    assert len(digests) == 1, "1 and 2 threads gave different weights"


@pytest.mark.skipif(numba.get_num_threads() < 2, reason="one thread: no one to go on without")
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_worker_0_going_on_alone_mid_epoch_gives_the_same_weights(momentum, monkeypatch, mnist_train):
    """On a busy machine worker 0 carries on alone (control[SOLO_AT]); a machine cannot be made busy on cue, so
    the test raises the flag before the epoch, as worker 0 would after its first batch."""
    images, labels = (np.ascontiguousarray(a[:3200]) for a in mnist_train)
    data, order = numba_backend.prepare(images), np.random.default_rng(0).permutation(len(images))
    networks, controls = [], []
    for solo in (False, True):
        network = Network.initialise((784, 128, 10), "sigmoid", np.random.default_rng(0))
        optimizer = Optimizer("sgd", 0.5, momentum=momentum)
        state = new_state(network.params, optimizer)

        def control_for(n_workers, solo=solo):
            control = new_control(n_workers)
            control[SOLO_AT] = 1 if solo else -1
            controls.append(control)
            return control

        monkeypatch.setattr(epoch, "new_control", control_for)
        numba_backend.train_epoch(network.params, state, data, labels, order, 32, optimizer, 0)
        networks.append(network)
    assert controls[1][2 * SLOT] == 2, "worker 1 should have stopped after the first batch (its step 2)"
    for together, alone in zip(*(n.params for n in networks)):
        np.testing.assert_array_equal(together, alone)


def test_freshly_compiled_and_cached_kernels_give_bit_identical_weights(tmp_path):
    """A first run compiles the kernels into an empty cache, the second loads them: same weights."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"), PYTHONPATH=str(ROOT))
    digests = [subprocess.run([sys.executable, "-c", TRAIN_AND_HASH, '{"batch_size": 32}'], env=env,
                              capture_output=True, text=True, timeout=600, check=True).stdout.split()[1]
               for _ in ("cold", "warm")]
    assert any((tmp_path / "numba-cache").rglob("*.nbc")), "the first run should have filled the cache"
    assert digests[0] == digests[1], "compiled and cached kernels gave different weights"


def test_same_seed_same_weights_other_seed_other_weights(mnist_train, mnist_test):
    small = tuple(a[:3000] for a in mnist_train)
    first, _ = train(TrainConfig(epochs=1, seed=3), small, mnist_test, 10)
    again, _ = train(TrainConfig(epochs=1, seed=3), small, mnist_test, 10)
    other, _ = train(TrainConfig(epochs=1, seed=4), small, mnist_test, 10)
    assert all(np.array_equal(a, b) for a, b in zip(first.params, again.params))
    assert not np.array_equal(first.weights[0], other.weights[0])


class FakeStream:
    def __init__(self, terminal: bool):
        self.terminal, self.text = terminal, ""

    def isatty(self):
        return self.terminal

    def write(self, text):
        self.text += text

    def flush(self):
        pass


@pytest.mark.parametrize("terminal", [True, False])
def test_the_progress_bar_shows_on_a_terminal_only(terminal, monkeypatch):
    """A log file got a progress bar's carriage returns mixed into its lines (and, on a busy machine, before
    the error line a test looked for)."""
    clock = iter([0.0, 5.0, 5.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    stream = FakeStream(terminal)
    bar = ProgressBar(1000, "epoch 1", stream)
    bar(500)
    bar.close()
    assert ("epoch 1 [" in stream.text) == terminal and (stream.text == "") != terminal
