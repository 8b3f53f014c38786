"""fastnet sweep: the search space, the results file, and whole sweeps on Dask (a LocalCluster, and a real
scheduler with two worker processes, one killed mid-sweep), stopped and resumed. All on 127.0.0.1."""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastnet
from fastnet.datasets import MNIST_FILES, load_mnist
from fastnet.errors import FastnetError
from fastnet.sweep import (MAX_TRIALS, OPTIONS, Results, Space, _held_by_dask, _only_sweep_in, check_options,
                           local_cluster, read_toml)
from fastnet.trained import load
from fastnet.training import DEFAULT_LEARNING_RATE

from .test_idx import idx_bytes

pytest.importorskip("distributed")
pytestmark = pytest.mark.xdist_group("busy_or_timed")  # its clusters take every core: not beside serve's timings
ROOT = Path(__file__).resolve().parent.parent
ENV = fastnet._child_environment()


def fastnet_sweep(*args, cwd, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-m", "fastnet", "sweep", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory):
    """A folder of the four MNIST IDX files with 3,000 training and 1,000 test digits: trials of ~0.1 s at 25 epochs."""
    folder = tmp_path_factory.mktemp("small_mnist")
    for split, count in (("train", 3000), ("test", 1000)):
        images, labels = load_mnist(split)
        images_name, labels_name = MNIST_FILES[split]
        (folder / images_name).write_bytes(gzip.compress(idx_bytes(images[:count].reshape(-1, 28, 28)), 1))
        (folder / labels_name).write_bytes(gzip.compress(idx_bytes(labels[:count]), 1))
    return folder


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


# ---------------------------------------------------------------- the space and the results file


def test_grid_random_points_and_toml():
    space = Space.parse({"lr": "0.1,0.3,1", "hidden": "128,256-128", "epochs": "5"})
    trials, left_out = space.trials(None, 0)
    assert len(trials) == 6 and space.swept == ["lr", "hidden"] and not left_out
    assert {t["hidden"] for t in trials} == {(128,), (256, 128)} and all(t["epochs"] == 5 for t in trials)
    ranged = Space.parse({"lr": "1e-3:1", "batch-size": "16:128", "activation": "relu,tanh"})
    points = ranged.trials(8, seed=3)[0]
    assert points == ranged.trials(8, seed=3)[0] and points != ranged.trials(8, seed=4)[0]
    assert all(1e-3 <= p["learning_rate"] <= 1 and 16 <= p["batch_size"] <= 128 for p in points)
    assert all(isinstance(p["batch_size"], int) for p in points)
    with pytest.raises(FastnetError, match="a range is sampled only with --random"):
        ranged.trials(None, 0)
    nesterov = Space.parse({"momentum": "0,0.9", "nesterov": "true,false"})  # Nesterov needs momentum
    kept, left_out = nesterov.trials(None, 0)
    assert [(t["momentum"], t["nesterov"]) for t in kept] == [(0.0, False), (0.9, True), (0.9, False)]
    assert len(left_out) == 1 and "momentum=0.0 nesterov=True" in left_out[0]
    assert all(t["epochs"] == 35 and t["learning_rate"] is None for t in kept)  # train's: decided by the data
    with pytest.raises(FastnetError, match="no combination"):
        Space.parse({"optimizer": "adam", "momentum": "0.9"}).trials(None, 0)
    for texts, message in (({"lr": "-1"}, "learning_rate"), ({"hidden": "0"}, "hidden"),
                           ({"activation": "relu:tanh"}, "a range is for"), ({"lr": "1:0.1"}, "LOW < HIGH"),
                           ({"batch-size": "many"}, "batch-size")):
        with pytest.raises(FastnetError, match=message):
            Space.parse(texts)


def test_a_toml_file_gives_the_same_space(tmp_path):
    (tmp_path / "sweep.toml").write_text('random = 4\nthreads = 2\n[space]\nlr = [0.1, 1.0]\n'
                                         'hidden = ["64", "128-64"]\n')
    texts, options = read_toml(tmp_path / "sweep.toml")
    assert options == {"random": 4, "threads": 2}
    assert Space.parse(texts).trials(None, 0) == Space.parse({"lr": "0.1,1.0", "hidden": "64,128-64"}).trials(None, 0)
    (tmp_path / "bad.toml").write_text("[space]\nlearning = [1]\n")
    with pytest.raises(FastnetError, match="unknown setting 'learning'"):
        read_toml(tmp_path / "bad.toml")
    os.mkfifo(tmp_path / "pipe.toml")  # read_text() waited on it for ever
    with pytest.raises(FastnetError, match="pipe.toml: is a FIFO, not a sweep file"):
        read_toml(tmp_path / "pipe.toml")


def test_sweeps_of_more_than_max_trials_are_refused_before_they_are_planned():
    """--random 1000000000 planned its points (0.2 ms and memory each) in silence for hours."""
    with pytest.raises(FastnetError, match="random = 10001: at most 10,000 trials"):
        check_options({**OPTIONS, "random": MAX_TRIALS + 1})
    grid = Space.parse({"lr": ",".join(f"0.{i + 1}" for i in range(9)), "hidden": ",".join(map(str, range(1, 1200))),
                        "batch-size": "16,32"})
    with pytest.raises(FastnetError, match="a grid of 21,582 trials, more than 10,000"):
        grid.trials(None, 0)
    with pytest.raises(FastnetError, match="must name a folder"):
        check_options({**OPTIONS, "out": ""})
    # the most there may be, planned in about a second (repeated draws, at 4 digits, kept once by a set)
    assert MAX_TRIALS // 2 < len(Space.parse({"lr": "1e-3:1"}).trials(MAX_TRIALS, 0)[0]) < MAX_TRIALS


def test_a_second_sweep_into_the_same_folder_is_refused(tmp_path):
    """Two sweeps into one --out each rewrote results.csv without the other's trials; both exited 0."""
    with _only_sweep_in(tmp_path):
        with pytest.raises(FastnetError, match="another sweep is running into this folder"):
            with _only_sweep_in(tmp_path):
                pass
    with _only_sweep_in(tmp_path):  # free again once the first has ended
        pass


def test_results_are_rewritten_whole_and_read_back(tmp_path):
    path = tmp_path / "results.csv"
    results = Results(path, ["hidden", "learning_rate"])
    results.add(1, {"hidden": (64, 32), "learning_rate": 0.3}, {"status": "failed", "error": "it\nbroke, badly"})
    results.add(0, {"hidden": (64,), "learning_rate": 1.0}, {"status": "ok", "validation_accuracy": 0.9,
                                                              "train_accuracy": 0.95, "loss": 0.2, "seconds": 3.0})
    results.add(2, {"hidden": (32,), "learning_rate": 1.0}, {"status": "lost", "error": "KilledWorker"})
    again = Results(path, ["hidden", "learning_rate"])
    assert again.done({"hidden": (64,), "learning_rate": 1.0})
    assert again.done({"hidden": (64, 32), "learning_rate": 0.3})
    assert not again.done({"hidden": (64,), "learning_rate": 0.3})
    assert not again.done({"hidden": (32,), "learning_rate": 1.0})  # lost to its worker: runs again
    rows = read_rows(path)
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and rows[1]["hidden"] == "64-32"
    assert rows[1]["error"] == "it broke, badly" and not list(tmp_path.glob(".*"))  # no temporary left
    with pytest.raises(FastnetError, match="holds another sweep"):
        Results(path, ["momentum"])
    text = path.read_text()
    for old, new, message in (("0.9,", "abc,", "line 2: validation_accuracy 'abc' is not a number"),
                              ("\n1,", "\nx,", "line 3: trial 'x' is not a whole number"),
                              ("\n1,", "\n\u00b2,", "line 3: trial '\u00b2' is not a whole number"),
                              ("\n2,32,1.0,lost,,,,,,,KilledWorker", "\n2,32,1.0,ok",  # a row cut short
                               "line 4: validation_accuracy None is not a number"),
                              (",lost,", ",maybe,", "line 4: status 'maybe' is none of")):
        path.write_text(text.replace(old, new, 1))  # a results file edited by hand: one error, not a traceback
        with pytest.raises(FastnetError, match=message):
            Results(path, ["hidden", "learning_rate"])


# ---------------------------------------------------------------- whole sweeps


def test_a_sweep_on_a_local_cluster_records_every_trial_and_saves_the_best(small_mnist, tmp_path):
    with contextlib.ExitStack() as held:  # Dask's default HTTP port taken, as by another Dask (if free)
        with contextlib.suppress(OSError):
            held.enter_context(socket.create_server(("127.0.0.1", 8787)))
        result = fastnet_sweep("--data", small_mnist, "--lr", "0.03,0.1", "--hidden", "16,32", "--epochs", 3,
                               "--batch-size", "32,100000", "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0 and "in use" not in result.stderr + result.stdout, result.stderr
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert sorted(int(r["trial"]) for r in rows) == list(range(8))
    failed = [r for r in rows if r["status"] == "failed"]  # a batch larger than the data is that trial's error
    assert len(failed) == 4 and all("larger than the 2,700 training images" in r["error"] for r in failed)
    ok = [r for r in rows if r["status"] == "ok"]
    best = max(ok, key=lambda r: float(r["validation_accuracy"]))
    assert float(best["validation_accuracy"]) > 0.8 and all(r["worker"].startswith("tcp://127.0.0.1") for r in ok)
    assert f"best: trial {best['trial']} " in result.stdout and (tmp_path / "out" / "results.png").stat().st_size
    for worker in {r["worker"] for r in ok}:  # kernels loaded from the cache by a worker's first trial only
        loads = sorted(float(r["kernel_seconds"]) for r in ok if r["worker"] == worker)
        assert all(seconds < 0.5 for seconds in loads[:-1]), loads
    # The saved model predicts the test set as well as the sweep said, and records its settings.
    model = load(tmp_path / "out" / "parameters.npz")
    images, labels = load_mnist("test", small_mnist)
    measured = np.mean(model.predict_proba(images).argmax(axis=1) == labels)
    reported = float(result.stdout.split("test accuracy ")[1].split("%")[0])
    assert abs(100 * measured - reported) < 0.006 and model.network.hidden == (int(best["hidden"]),)
    again = fastnet_sweep("--data", small_mnist, "--lr", "0.03,0.1", "--hidden", "16,32", "--epochs", 3,
                          "--batch-size", "32,100000", "--out", tmp_path / "out", cwd=tmp_path)
    assert again.returncode == 0 and "8 already in" in again.stdout and "Dask" not in again.stdout
    other = fastnet_sweep("--data", small_mnist, "--lr", "0.03,0.1", "--validation", 0.2, "--out", tmp_path / "out",
                          cwd=tmp_path)
    assert other.returncode == 1 and "was scored with" in other.stderr and "validation 0.1 (now 0.2)" in other.stderr
    for damaged in ("[1]", "[" * 100_000):  # not the object sweep writes; nested past Python's recursion
        (tmp_path / "out" / "sweep.json").write_text(damaged)
        result = fastnet_sweep("--data", small_mnist, "--lr", "0.03,0.1", "--out", tmp_path / "out", cwd=tmp_path)
        assert result.returncode == 1 and "move" in result.stderr and "away to start afresh" in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr


def test_a_learning_rate_left_to_the_data_is_its_default_for_every_trial_and_the_retraining(tmp_path):
    """Trials train on part of the images and the best is retrained on all: one default rate for both, taken
    from all the training images (bright colour ones, longer than SGD's default holds to)."""
    from fastnet.datasets import load_data
    from fastnet.sweep import split_validation
    from fastnet.training import default_learning_rate

    rng = np.random.default_rng(0)
    for part, count in (("train", 40), ("test", 12)):
        for label in ("dark", "light"):
            (tmp_path / "data" / part / label).mkdir(parents=True)
            for n in range(count):  # each of its own brightness: a part's mean length is not the whole's
                level = rng.integers(128, 256) if label == "light" else rng.integers(0, 128)
                image = np.clip(rng.integers(-20, 21, (16, 16, 3)) + level, 0, 255).astype(np.uint8)
                Image.fromarray(image).save(tmp_path / "data" / part / label / f"{n}.png")
    command = ["--data", tmp_path / "data", "--image-size", 16, "--color", "--hidden", "4,8", "--optimizer",
               "sgd,adam", "--epochs", 1, "--workers", 1, "--out", tmp_path / "out"]
    result = fastnet_sweep(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    images, labels = load_data(str(tmp_path / "data"), image_size=(16, 16), color=True).train
    expected = {optimizer: default_learning_rate(optimizer, images) for optimizer in DEFAULT_LEARNING_RATE}
    assert expected["sgd"] < DEFAULT_LEARNING_RATE["sgd"] and expected["adam"] == DEFAULT_LEARNING_RATE["adam"]
    trials_part = split_validation(images, labels, 0.1, 0)[0][0]  # (the sweep's defaults: --validation 0.1, seed 0)
    assert default_learning_rate("sgd", trials_part) != expected["sgd"]  # so the rate's source shows
    rows = read_rows(tmp_path / "out" / "results.csv")
    assert sorted(float(r["learning_rate"]) for r in rows) == sorted(2 * list(expected.values())), rows
    with np.load(tmp_path / "out" / "parameters.npz", allow_pickle=False) as stored:
        retrained = json.loads(str(stored["training"]))
    assert retrained["learning_rate"] == expected[retrained["optimizer"]]
    again = fastnet_sweep(*command, cwd=tmp_path)
    assert again.returncode == 0 and "4 already in" in again.stdout, again.stdout + again.stderr
    fewer = fastnet_sweep(*[value if value != "sgd,adam" else "sgd" for value in command], cwd=tmp_path)
    assert fewer.returncode == 0 and "2 already in" in fewer.stdout, fewer.stdout + fewer.stderr  # a grid may shrink
    # A sweep.json from before the defaults followed the data: its trials ran at lr 0.05, not these.
    recorded = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert recorded["default_learning_rates"] == expected
    del recorded["default_learning_rates"]
    (tmp_path / "out" / "sweep.json").write_text(json.dumps(recorded))
    older = fastnet_sweep(*command, cwd=tmp_path)
    assert older.returncode == 1, older.stderr
    assert f"was scored with default learning rates sgd 0.05 (now {expected['sgd']!r})" in older.stderr
    assert older.stderr.count("\n") == 1 and "Traceback" not in older.stderr


def test_bad_sweeps_are_one_error_line(small_mnist, tmp_path):
    for arguments, message in ((["--lr", "1e-3:1"], "a range is sampled only with --random"),
                               ([], "give the settings to try"),
                               (["--lr", "0.1", "--scheduler", f"tcp://127.0.0.1:{free_port()}"],
                                "cannot reach the Dask scheduler"),
                               (["--lr", "0.1", "--scheduler", "garbage"], "cannot reach the Dask scheduler"),
                               (["--lr", "0.1", "--out", small_mnist / "train-images-idx3-ubyte.gz"],
                                "is a file, not a folder")):
        result = fastnet_sweep("--data", small_mnist, "--out", tmp_path / "out", *arguments, cwd=tmp_path)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    for option, message in (("random = 0", "at least 1"), ("random_seed = -1", "at least 0"),
                            ("threads = 0", "at least 1"), ("validation = 0", "in (0, 1)"), ("jobs = 2", "unknown")):
        (tmp_path / "bad.toml").write_text(f"{option}\n[space]\nlr = [0.1, 1]\n")
        result = fastnet_sweep("--data", small_mnist, "--config", tmp_path / "bad.toml", cwd=tmp_path)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, option


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_worker_killed_mid_sweep_loses_only_its_trial(small_mnist, tmp_path):
    """A real `dask scheduler` and one `dask worker`, killed with SIGKILL while it runs a trial; a second worker
    joins after that. The data died with the only worker that held it, so Dask must make it again: every trial
    is in the results exactly once, ok (with the data scattered, every trial was cancelled)."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    python_m = [sys.executable, "-m"]  # `dask scheduler` and `dask worker`, with this Python
    worker_command = [*python_m, "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard",
                      "--no-nanny", "--host", "127.0.0.1"]
    processes = [subprocess.Popen([*python_m, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
                                   str(port), "--no-dashboard"], env=ENV, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)]
    victim = subprocess.Popen(worker_command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes.append(victim)
    try:
        from distributed import Client

        out = tmp_path / "out"
        with Client(address, timeout=60) as watcher:  # first: the scheduler is up before the sweep connects
            sweep = subprocess.Popen([sys.executable, "-m", "fastnet", "sweep", "--data", str(small_mnist), "--lr",
                                      "0.01,0.05", "--hidden", "16,24", "--epochs", "300", "--scheduler", address,
                                      "--out", str(out)], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            deadline, running = time.monotonic() + 240, False
            while not running and time.monotonic() < deadline and sweep.poll() is None:
                running = any(str(key).startswith("run_trial")
                              for keys in watcher.processing().values() for key in keys)
                time.sleep(0.05)
            assert running, f"the worker ran no trial to be killed in: {sweep.poll()=}"
        victim.kill()  # SIGKILL
        assert victim.wait() == -signal.SIGKILL
        processes.append(subprocess.Popen(worker_command, env=ENV, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        stdout, stderr = sweep.communicate(timeout=300)
        assert sweep.returncode == 0, stderr
        rows = read_rows(out / "results.csv")
        assert sorted(int(r["trial"]) for r in rows) == list(range(4)), rows
        assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    finally:
        for process in processes:
            process.kill()
            process.wait()


def test_the_data_reaches_the_trials_without_a_warning_whatever_replication_does(recwarn):
    """The data travels in the task graph (Dask's size warning is expected there, not shown), and replicating it
    is only for speed: when it fails (the holder killed meanwhile fails the scheduler's assert) the sweep goes on."""
    from distributed import Client, LocalCluster

    data = {"train": np.arange(3_000_000, dtype=np.float32)}  # 12 MB: past Dask's 10 MB warning
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster, Client(cluster) as client:
        def broken(*args, **kwargs):
            raise AssertionError("assert ts.who_has is not None")

        client.replicate = broken
        held = _held_by_dask(client, data)
        np.testing.assert_array_equal(held.result()["train"], data["train"])
    assert not [w for w in recwarn if "large graph" in str(w.message)]


def log_an_error() -> None:
    import logging

    logging.getLogger("distributed.worker").error("Failed to communicate with scheduler during heartbeat.")


def test_dask_logs_nothing_into_a_sweeps_output(capfd):
    """A worker still running a trial when Ctrl-C closed the cluster logged an error with its traceback, which
    split the sweep's one-line stop message (seen once in CI); the sweep reports every trial's fate itself."""
    from distributed import Client

    with local_cluster(1) as cluster, Client(cluster) as client:
        client.run(log_an_error)
    assert "heartbeat" not in capfd.readouterr().err


def test_ctrl_c_keeps_the_results_and_the_same_command_resumes(small_mnist, tmp_path):
    # Trials long enough (~0.5 s each) that the sweep cannot end between the first result and Ctrl-C
    arguments = ["--data", small_mnist, "--lr", "0.2,0.4,0.6,0.8,1,1.2", "--epochs", 200, "--out", tmp_path / "out",
                 "--workers", 1]
    sweep = subprocess.Popen([sys.executable, "-m", "fastnet", "sweep", *map(str, arguments)], cwd=tmp_path, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "out" / "results.csv").exists() and time.monotonic() < deadline and sweep.poll() is None:
        time.sleep(0.05)
    os.killpg(sweep.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole group, the cluster's workers too
    stdout, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, stderr
    assert "resume with: python -m fastnet sweep --data" in stderr and "Traceback" not in stderr
    done = len(read_rows(tmp_path / "out" / "results.csv"))
    assert 1 <= done < 6
    again = fastnet_sweep(*arguments, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{done} already in" in again.stdout
    assert sorted(int(r["trial"]) for r in read_rows(tmp_path / "out" / "results.csv")) == list(range(6))


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # scikit-learn's note that max_iter ended the fit
def test_scikit_learn_searches_run_on_a_dask_cluster():
    """fastnet.MLPClassifier in GridSearchCV with joblib's Dask backend: the fits run on the cluster's workers."""
    import joblib
    from distributed import Client, get_task_stream
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), fastnet.MLPClassifier(max_iter=100, random_state=0))
    with local_cluster(2) as cluster, Client(cluster) as client:
        with joblib.parallel_backend("dask"), get_task_stream(client) as stream:
            search = GridSearchCV(pipeline, {"mlpclassifier__hidden_layer_sizes": [(8,), (16,), (32,)]}, cv=3)
            search.fit(X, y)
        workers = set(cluster.scheduler_info["workers"])
    assert search.best_score_ > 0.93 and len(search.cv_results_["params"]) == 3
    # on the cluster's workers (which of them is the scheduler's choice: joblib sends X to one, which it favours)
    assert stream.data and {task["worker"] for task in stream.data} <= workers
