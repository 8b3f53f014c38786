"""Nothing lost on Ctrl-C, crash or divergence; resume gives the very same weights; memory and cache hold up."""

from __future__ import annotations

import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fastnet.checkpoint import load_checkpoint
from fastnet.errors import FastnetError
from fastnet.kernels import get_backend
from fastnet.kernels.common import Optimizer, affine_matrices, new_state
from fastnet.kernels.threads import new_stop_flag
from fastnet.parameters import load
from fastnet.training import Interrupted, TrainConfig, train

from fastnet.model import Network

from .conftest import new_network

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.mark.parametrize("backend_name,augmented", [("numba", False), ("numpy", False), ("numba", True)])
def test_a_stopped_epoch_continues_to_the_same_weights(backend_name, augmented, mnist_train):
    """Augmented, the continued epoch starts with its first batch's transforms in the other slot."""
    backend = get_backend(backend_name)
    images, labels = mnist_train
    data, order = backend.prepare(images), np.random.default_rng(0).permutation(len(images))[:640]
    augment = affine_matrices(np.random.default_rng(1), 640, (28, 28, 1)) if augmented else None
    optimizer = Optimizer("sgd", 0.5, momentum=0.0 if augmented else 0.9)  # (augmented: a variant compiled anyway)
    whole, parts = new_network(128), new_network(128)
    states = [new_state(whole.params, optimizer), new_state(parts.params, optimizer)]
    assert backend.train_epoch(whole.params, states[0], data, labels, order, 32, optimizer, 0, augment=augment)[2] == 20
    stop = new_stop_flag()
    stop[0] = 1
    loss, correct, next_batch = backend.train_epoch(parts.params, states[1], data, labels, order, 32, optimizer, 0,
                                                    stop=stop, augment=augment)
    assert next_batch == 1, "a raised stop flag should end the epoch after one batch"
    stop[0] = 0
    assert backend.train_epoch(parts.params, states[1], data, labels, order, 32, optimizer, 0, stop=stop,
                               first_batch=next_batch, augment=augment)[2] == 20
    for a, b in zip(whole.params + (states[0].first or []), parts.params + (states[1].first or [])):
        np.testing.assert_array_equal(a, b)
    assert states[0].step[0] == states[1].step[0] == 20


def dense_table(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """rows x 300 float32 features with no zeros (the dense first layer) and 10 classes they tell apart."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((rows, 300)).astype(np.float32)
    return table, (table[:, :10].argmax(axis=1)).astype(np.int64)


@pytest.mark.parametrize("backend_name,kind", [("numba", "sgd"), ("numpy", "sgd"), ("numba", "adam"),
                                               ("numpy", "adam"), ("numba", "augment")])
def test_interrupted_training_resumes_to_bit_identical_weights(backend_name, kind, mnist_train, mnist_test,
                                                               tmp_path):
    """SGD with momentum on MNIST pixels, and Adam (its moments and step count in the checkpoint) on a dense
    table with three hidden layers (the kernel test's dense case: no kernels of its own to compile)."""
    if kind in ("sgd", "augment"):  # augmented: each epoch's transforms drawn again on resuming
        small, test = tuple(a[:4000] for a in mnist_train), mnist_test
        config = TrainConfig(epochs=3, activation="sigmoid", momentum=0.0 if kind == "augment" else 0.5,
                             nesterov=False, learning_rate=0.3, backend=backend_name, augment=kind == "augment")
    else:
        small, test = dense_table(4000), dense_table(500, seed=1)
        config = TrainConfig(epochs=3, hidden=(130, 65, 30), activation="tanh", optimizer="adam",
                             weight_decay=0.01, batch_size=16, backend=backend_name)
    shape = (28, 28, 1)
    unbroken, _ = train(config, small, test, 10, input_shape=shape)
    stop = new_stop_flag()
    checkpoint = tmp_path / "run.checkpoint.npz"

    def stop_after_first_epoch(stats):
        stop[0] = 1

    with pytest.raises(Interrupted) as interrupted:
        train(config, small, test, 10, stop_after_first_epoch, checkpoint_path=checkpoint, stop=stop,
              input_shape=shape)
    assert interrupted.value.checkpoint_path == checkpoint
    state = load_checkpoint(checkpoint)
    assert (state.epoch, state.next_batch) == (1, 1)  # stopped in epoch 2 after its first batch
    if kind == "augment":  # augmentation left to the data on resuming: the checkpoint's, which needs the shape
        with pytest.raises(FastnetError, match="augmentation transforms images"):
            train(replace(config, augment=None), small, test, 10, resume=state)
    resumed, history = train(config, small, test, 10, resume=state, checkpoint_path=checkpoint, input_shape=shape)
    assert len(history) == 3
    for a, b in zip(unbroken.params, resumed.params):
        np.testing.assert_array_equal(a, b)


def start_training(*flags, cwd):
    return subprocess.Popen([sys.executable, "-m", "fastnet", "train", *map(str, flags)], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process, text, timeout=300):
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if text in line:
            return
        assert time.monotonic() < deadline, f"no line with {text!r} in time"
    raise AssertionError(f"the process ended before printing {text!r}")


def test_ctrl_c_saves_a_checkpoint_and_resume_reproduces_an_unbroken_run(tmp_path):
    """A run stopped with Ctrl-C and resumed writes the very bytes an unbroken run writes.

    Both runs are made here, on this machine: fastmath sums depend on the vector width of the CPU the
    kernels were compiled for, so the shipped parameters.npz is reproducible only on a CPU like the one
    that made it (tests/test_readme.py checks it by its accuracy instead)."""
    flags = ("--epochs", "8", "--plot", tmp_path / "error.png")
    unbroken = tmp_path / "unbroken.npz"
    result = subprocess.run([sys.executable, "-m", "fastnet", "train", *map(str, flags), "--out", unbroken],
                            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "parameters.npz"
    process = start_training(*flags, "--out", out, cwd=tmp_path)
    wait_for_line(process, "epoch   2/")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "resume with: python -m fastnet train --resume" in stderr and "Traceback" not in stderr
    checkpoint = tmp_path / "parameters.checkpoint.npz"
    assert 2 <= load_checkpoint(checkpoint).epoch < 8 and not out.exists()
    resumed = subprocess.run([sys.executable, "-m", "fastnet", "train", "--resume", checkpoint, "--out", out,
                              "--plot", tmp_path / "error.png"], cwd=tmp_path, env=ENV, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == unbroken.read_bytes()
    assert not checkpoint.exists(), "a finished run should remove its checkpoint"


@pytest.mark.parametrize("name,status", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_stop_like_ctrl_c(name, status, tmp_path):
    """They ended training at once, with no checkpoint of the epoch in progress. The command printed to resume
    is quoted for a shell: the folder's name has a space."""
    folder = tmp_path / "my runs"
    folder.mkdir()
    out, plot, checkpoint = folder / "p.npz", folder / "e.png", folder / "p.checkpoint.npz"
    process = start_training("--epochs", "8", "--out", out, "--plot", plot, cwd=tmp_path)
    wait_for_line(process, "epoch   1/")
    process.send_signal(getattr(signal, name))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert f"{name}: stopping at the end of this batch" in stderr and "Traceback" not in stderr
    command = stderr.split("resume with: ")[1].splitlines()[0]
    assert shlex.split(command) == ["python", "-m", "fastnet", "train", "--resume", str(checkpoint), "--out",
                                    str(out), "--plot", str(plot)]
    assert load_checkpoint(checkpoint).epoch >= 1
    assert sorted(p.name for p in folder.iterdir()) == ["p.checkpoint.npz"]


def test_second_ctrl_c_quits_at_once_leaving_only_complete_files(tmp_path):
    out = tmp_path / "parameters.npz"
    out.write_bytes((ROOT / "parameters.npz").read_bytes())
    process = start_training("--out", out, "--plot", tmp_path / "error.png", cwd=tmp_path)
    wait_for_line(process, "epoch   1/")
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130
    assert out.read_bytes() == (ROOT / "parameters.npz").read_bytes(), "the old parameters must survive"
    checkpoint = tmp_path / "parameters.checkpoint.npz"
    if checkpoint.exists():
        load_checkpoint(checkpoint)  # complete, whichever version it is


SAVE_FOREVER = """
import sys
import numpy as np
from fastnet.model import Network
from fastnet.parameters import Parameters, save
versions = [Network.initialise((784, 128, 10), "sigmoid", np.random.default_rng(seed)) for seed in (1, 2)]
save(sys.argv[1], Parameters(versions[1], [str(d) for d in range(10)]))
print("ready", flush=True)
i = 0
while True:
    save(sys.argv[1], Parameters(versions[i % 2], [str(d) for d in range(10)]))
    i += 1
"""


def test_sigkill_while_saving_never_leaves_a_broken_file(tmp_path):
    """20 kills at random moments of a loop saving two versions in turn: the file is always there, one of them,
    whole. (Each process saves once before it is ready: on a slow disk none of the loop's saves might finish
    within the kill's delay, and the test would check nothing.)"""
    path = tmp_path / "parameters.npz"
    expected = [Network.initialise((784, 128, 10), "sigmoid", np.random.default_rng(seed)).weights[0]
                for seed in (1, 2)]
    rng = random.Random(0)
    for _ in range(20):
        process = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(path)], env=ENV, stdout=subprocess.PIPE,
                                   text=True)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.15))
        process.kill()
        process.wait()
        W1 = load(path).network.weights[0]
        assert any(np.array_equal(W1, e) for e in expected)


def test_divergence_stops_with_advice_and_keeps_the_old_parameters(tmp_path):
    out = tmp_path / "parameters.npz"
    out.write_bytes((ROOT / "parameters.npz").read_bytes())
    result = subprocess.run([sys.executable, "-m", "fastnet", "train", "--lr", "1000", "--epochs", "2", "--out", out,
                             "--plot", tmp_path / "error.png"], env=ENV, capture_output=True, text=True, timeout=600)
    errors = [line for line in result.stderr.splitlines() if line.startswith("fastnet: error:")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "diverged" in errors[0] and "smaller --lr" in errors[0]
    assert out.read_bytes() == (ROOT / "parameters.npz").read_bytes()
    assert not (tmp_path / "error.png").exists()


def read_only_package(tmp_path: Path) -> dict:
    """fastnet copied where its kernels' __pycache__ cannot be written, and the environment that runs it with a
    fresh home and no NUMBA_CACHE_DIR. Tests run as root here, and root may write anywhere, so each __pycache__
    is made a plain file: no process can create cache files inside it."""
    package = tmp_path / "site" / "fastnet"
    shutil.copytree(ROOT / "fastnet", package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "kernels", package / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data" / "mnist", package / "mnist")
    for folder in (package, package / "kernels"):
        (folder / "__pycache__").write_text("not a folder")
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(tmp_path / "site"), HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    return env


def test_read_only_package_folder_uses_a_user_cache(tmp_path):
    """As a user who cannot write beside the installed kernels: Numba must cache elsewhere and still run."""
    env = read_only_package(tmp_path)
    result = subprocess.run([sys.executable, "-m", "fastnet", "train", "--dry-run"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert any(Path(env["HOME"]).rglob("*.nbi")), "the kernels should have been cached under the user's home"


def test_with_nowhere_to_cache_the_kernels_compile_uncached_and_say_so(tmp_path):
    """A service account: the package read-only, no NUMBA_CACHE_DIR, no writable home. Numba's cache=True then
    raised at import ("no locator available"), and every command, --help too, was a traceback."""
    env = read_only_package(tmp_path)
    Path(env["XDG_CACHE_HOME"]).write_text("not a folder")
    result = subprocess.run([sys.executable, "-m", "fastnet", "train", "--dry-run"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("fastnet: warning: no writable folder for Numba's cache") and \
        "set NUMBA_CACHE_DIR to a writable folder" in result.stderr, result.stderr


def test_peak_memory_while_training_stays_under_300_mb(tmp_path):
    """One full epoch on MNIST from a warm kernel cache (the figure the README reports)."""
    code = ("import sys; from fastnet.cli import main; from fastnet.bench import peak_rss_mb; "
            "status = main(['train', '--epochs', '1', '--out', sys.argv[1], '--plot', sys.argv[2]]); "
            "print(status, peak_rss_mb())")
    for run in range(2):  # the first run may compile (LLVM's memory is not training's)
        result = subprocess.run([sys.executable, "-c", code, tmp_path / f"p{run}.npz", tmp_path / f"e{run}.png"],
                                env=ENV, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0 and result.stdout.split()[-2] == "0", result.stderr
    peak_mb = float(result.stdout.split()[-1])
    assert peak_mb <= 300, f"peak RSS {peak_mb:.0f} MB"
