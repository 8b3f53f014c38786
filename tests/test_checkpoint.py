"""Checkpoints and datasets are untrusted input: no field of theirs may reach the kernels unchecked.

The kernels do not check their indices (Numba has no bounds checks), so a crafted
checkpoint or dataset cache crashed the process (a segfault, heap corruption) or
trained on garbage. Every case here must end in one FastnetError, before any kernel runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastnet.checkpoint import load_checkpoint
from fastnet.errors import FastnetError
from fastnet.files import write_npz
from fastnet.folders import CACHE_NAME, load_folder
from fastnet.kernels.threads import new_stop_flag
from fastnet.training import Interrupted, TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
CONFIG = TrainConfig(epochs=3, batch_size=32, learning_rate=0.3, momentum=0.5, hidden=16)


@pytest.fixture(scope="module")
def small_mnist(mnist_train):
    return tuple(np.ascontiguousarray(a[:640]) for a in mnist_train)


@pytest.fixture(scope="module")
def stopped_run(small_mnist, tmp_path_factory):
    """A real checkpoint: CONFIG stopped in epoch 2 after its first batch."""
    path = tmp_path_factory.mktemp("run") / "run.checkpoint.npz"
    stop = new_stop_flag()

    def stop_now(stats):
        stop[0] = 1

    with pytest.raises(Interrupted):
        train(CONFIG, small_mnist, None, 10, stop_now, checkpoint_path=path, stop=stop)
    return path


def edited(source: Path, target: Path, edit) -> Path:
    """A copy of the checkpoint at source with its JSON state changed by edit(state)."""
    with np.load(source) as archive:
        arrays = dict(archive)
    state = json.loads(str(arrays["state"]))
    edit(state)
    arrays["state"] = np.str_(json.dumps(state))
    with open(target, "wb") as file:
        write_npz(file, arrays)
    return target


def setter(*keys, value):
    def edit(state):
        for key in keys[:-1]:
            state = state[key]
        state[keys[-1]] = value
    return edit


def resume(path: Path, data, n_classes=10):
    checkpoint = load_checkpoint(path)
    return train(TrainConfig(**checkpoint.config), data, None, n_classes, resume=checkpoint)


EDITS = {
    "next_batch -100": setter("next_batch", value=-100),
    "next_batch -5000": setter("next_batch", value=-5000),
    "next_batch -1": setter("next_batch", value=-1),
    "next_batch past the data": setter("next_batch", value=10**9),
    "next_batch a string": setter("next_batch", value="3"),
    "epoch 10^6": setter("epoch", value=10**6),
    "epoch -3": setter("epoch", value=-3),
    "unknown schedule": setter("config", "schedule", value="sideways"),
    "batch_size 0": setter("config", "batch_size", value=0),
    "batch_size -4": setter("config", "batch_size", value=-4),
    "epochs as a string": setter("config", "epochs", value="35"),
    "unknown backend": setter("config", "backend", value="cuda"),
    "extra config key": setter("config", "dropout", value=0.5),
    "hidden unlike the weights": setter("config", "hidden", value=[17]),
    "layer sizes unlike the weights": setter("layer_sizes", value=[784, 16, 16, 10]),
    "layer sizes absurd": setter("layer_sizes", value=[784] * 1000),
    "steps negative": setter("steps", value=-1),
    "moments the optimiser does not keep": setter("moments", value=["m_", "s_"]),
    "moments missing": setter("moments", value=[]),
    "optimizer unknown": setter("config", "optimizer", value="lbfgs"),
    "learning rate NaN": setter("config", "learning_rate", value=float("nan")),
    "learning rate null": setter("config", "learning_rate", value=None),  # (resumed at the data's default)
    "bad history entry": setter("history", value=[{"epoch": 1, "loss": "low"}]),
    "history too short": setter("history", value=[]),
    "rng_state not a state": setter("rng_state", value={"bit_generator": "PCG64", "state": 7}),
    "rng_state a number": setter("rng_state", value=42),
    "extra state key": setter("surprise", value=1),
    "loss_sum NaN": setter("loss_sum", value=float("nan")),
    "loss_sum beyond any loss": setter("loss_sum", value=1e308),
    "correct -1": setter("correct", value=-1),
    "correct more than the images done": setter("correct", value=10**6),
    "no data fingerprint": setter("data", value=None),
    "an older format": setter("format_version", value=1),
    "a newer format": setter("format_version", value=99),
}


@pytest.mark.parametrize("name", EDITS)
def test_crafted_checkpoint_fields_are_refused(name, stopped_run, small_mnist, tmp_path):
    path = edited(stopped_run, tmp_path / "crafted.npz", EDITS[name])
    with pytest.raises(FastnetError):
        resume(path, small_mnist)


def test_a_state_nested_too_deeply_is_refused(stopped_run, tmp_path):
    """JSON nested past Python's recursion limit was a RecursionError, which no caller expected."""
    with np.load(stopped_run) as archive:
        arrays = dict(archive)
    arrays["state"] = np.str_("[" * 100_000 + "]" * 100_000)
    with open(tmp_path / "deep.npz", "wb") as file:
        write_npz(file, arrays)
    with pytest.raises(FastnetError, match="not a usable fastnet checkpoint.*nested too deeply"):
        load_checkpoint(tmp_path / "deep.npz")


def test_negative_adam_second_moments_are_refused(tmp_path):
    """Adam takes their square root: a damaged file would make the resumed run diverge, and its advice (a smaller
    --lr) could not help, as a resumed run keeps its settings."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((64, 5)).astype(np.float32)  # the feature-table fit test's kernels
    path, stop = tmp_path / "adam.checkpoint.npz", new_stop_flag()
    with pytest.raises(Interrupted):
        train(TrainConfig(epochs=2, hidden=16, optimizer="adam"), (table, (table[:, 0] > 0).astype(np.int64)),
              None, 2, lambda stats: stop.__setitem__(0, 1), checkpoint_path=path, stop=stop)
    load_checkpoint(path)  # valid as written
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["s_W1"] = -arrays["s_W1"] - 1
    with open(path, "wb") as file:
        write_npz(file, arrays)
    with pytest.raises(FastnetError, match="second moments are negative"):
        load_checkpoint(path)


def test_the_untouched_checkpoint_resumes(stopped_run, small_mnist, tmp_path):
    """The other half of the test above: the same path with no edit trains on (the edits are what fails)."""
    network, history = resume(edited(stopped_run, tmp_path / "same.npz", lambda state: None), small_mnist)
    assert len(history) == CONFIG.epochs and network.all_finite()


def test_a_resumed_run_keeps_its_learning_rate_where_the_config_leaves_it_to_the_data(stopped_run, small_mnist):
    """The learning rate decided when the run began (CONFIG's 0.3; MNIST's default would be 0.05) goes on, as
    augment does: the same weights as resuming with the whole config."""
    checkpoint = load_checkpoint(stopped_run)
    left_to_the_data = train(TrainConfig(**dict(checkpoint.config, learning_rate=None)), small_mnist, None, 10,
                             resume=load_checkpoint(stopped_run))
    whole = resume(stopped_run, small_mnist)
    assert [s.learning_rate for s in left_to_the_data[1]] == [s.learning_rate for s in whole[1]]
    assert all(np.array_equal(a, b) for a, b in zip(left_to_the_data[0].params, whole[0].params))


def test_a_checkpoint_is_not_resumed_on_other_data_of_the_same_shape(stopped_run, small_mnist, mnist_train):
    other_images = tuple(np.ascontiguousarray(a[640:1280]) for a in mnist_train)
    relabelled = (small_mnist[0], np.ascontiguousarray(small_mnist[1][::-1]))
    for data in (other_images, relabelled):
        with pytest.raises(FastnetError, match="other training data"):
            resume(stopped_run, data)


def test_a_crafted_checkpoint_gives_one_error_line_from_the_command_line(stopped_run, tmp_path):
    """next_batch -100 segfaulted the process (exit 139) before the checks."""
    path = edited(stopped_run, tmp_path / "crafted.checkpoint.npz", EDITS["next_batch -100"])
    result = subprocess.run([sys.executable, "-m", "fastnet", "train", "--resume", path, "--out", tmp_path / "p.npz",
                             "--plot", tmp_path / "e.png"], env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("fastnet: error:") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "p.npz").exists()


@pytest.mark.parametrize("labels", [np.array([0, 1, 250]), np.array([0, 1, -1]), np.array([0, 1, 10])])
def test_labels_outside_the_classes_never_reach_the_kernels(labels, small_mnist):
    images = np.ascontiguousarray(small_mnist[0][:3])
    with pytest.raises(FastnetError, match="labels must be class numbers"):
        train(TrainConfig(epochs=1, batch_size=1), (images, labels.astype(np.int64)), None, 10)


def make_folder_dataset(root: Path, classes=("a", "b", "c"), per_class=4) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_dataset_cache_with_rewritten_labels_is_rebuilt(tmp_path):
    """Labels 250 in a 3-class cache whose key still matched crashed training (heap corruption, exit 134)."""
    root = make_folder_dataset(tmp_path / "shapes")
    images, labels, classes = load_folder(root, progress=False)
    with np.load(root / CACHE_NAME) as archive:
        cache = dict(archive)
    cache["labels"] = np.full_like(cache["labels"], 250)
    with open(root / CACHE_NAME, "wb") as file:
        write_npz(file, cache)
    again, again_labels, _ = load_folder(root, progress=False)
    np.testing.assert_array_equal(again_labels, labels)
    np.testing.assert_array_equal(again, images)
