"""`python -m fastnet` end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def fastnet(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "fastnet", *map(str, args)], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_train_evaluate_and_no_training(tmp_path):
    out, plot = tmp_path / "params.npz", tmp_path / "error.png"
    result = fastnet("train", "--dry-run", "--out", out, "--plot", plot, "--seed", 5)
    assert result.returncode == 0, result.stderr
    assert "epoch   1/1" in result.stdout and "kernels compiled or loaded from cache in" in result.stdout
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size[0] > 300
    with np.load(out, allow_pickle=False) as archive:
        assert list(archive["layer_sizes"]) == [784, 128, 10]

    reports = []
    for command in (["evaluate", "--parameters", out], ["train", "--no-training", "--parameters", out]):
        result = fastnet(*command)
        assert result.returncode == 0, result.stderr
        first = result.stdout.splitlines()[0]
        percent, correct, total = re.search(r"MNIST test accuracy ([\d.]+)% \((\d+)/(\d+)\)", first).groups()
        assert int(total) == 10000 and float(percent) == round(100 * int(correct) / 10000, 2) and int(correct) > 5000
        reports.append(result.stdout)
    assert reports[0] == reports[1], "--no-training is evaluate, as the original spelled it"


@pytest.mark.slow
def test_bench_prints_the_table_and_writes_json_and_plot(tmp_path):
    records_path, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    result = fastnet("bench", "--dry-run", "--batch-sizes", 128, "--threads", 1, "--rounds", 2, "--json",
                     records_path, "--plot", plot)
    assert result.returncode == 0, result.stderr
    assert "compile into an empty cache" in result.stdout and "images/s" in result.stdout
    assert "backend  batch  threads  s/epoch" in result.stdout
    assert "round 2/2: numpy, batch 128, 1 thread(s): " in result.stdout
    assert re.search(r"\n  numpy \(1 thread\(s\)\): [\d.]+x [\d.]+x, median [\d.]+x", result.stdout)
    records = {record["backend"]: record for record in json.loads(records_path.read_text())}
    assert sorted(records) == ["numba", "numpy"]
    for record in records.values():
        assert (record["batch_size"], record["threads"]) == (128, 1)
        assert record["seconds_per_epoch"] == min(record["round_seconds"]) and len(record["round_seconds"]) == 2
        assert record["images_per_second"] == pytest.approx(60_000 / record["seconds_per_epoch"])
        assert record["test_accuracy"] > 0.9
    # same initial weights, shuffles and maths: the same accuracy, whatever the speed
    assert records["numba"]["test_accuracy"] == pytest.approx(records["numpy"]["test_accuracy"], abs=0.002)
    with Image.open(plot) as image:
        assert image.format == "PNG"


def test_bench_rounds_take_systems_in_turn_and_report_medians(monkeypatch):
    """bench --rounds: every system measured once per round, in turn; each row the median round, each ratio the
    median of the rounds' ratios (not the ratio of medians); a peer that is not installed is asked once."""
    from fastnet import bench

    seconds = {"numba": [0.10, 0.30, 0.12], "numpy": [2.0, 1.2, 1.0], "torch": [2.0, 2.1, 1.0]}
    asked = []

    def measure(system, batch_size, threads, epochs, workload):
        asked.append(system)
        if system not in seconds:
            return None
        s = seconds[system][sum(1 for a in asked if a == system) - 1]
        return bench.Record(system, batch_size, threads, epochs, s, 60_000 / s, 1.0, 0.9, 100.0)

    monkeypatch.setattr(bench, "measure", measure)
    heard = []
    records = bench._measure_all([32], [2], 1, True, heard.append, 0, bench.Workload(), 3)
    assert asked == ["numba", "numpy", "torch", "sklearn", "jax"] + ["numba", "numpy", "torch"] * 2
    assert [r.backend for r in heard] == ["numba", "numpy", "torch"] * 3  # each measurement, as it is made
    rows = {r.backend: r for r in records}
    assert sorted(rows) == ["numba", "numpy", "torch"]
    assert rows["numba"].seconds_per_epoch == 0.12 and rows["numba"].round_seconds == [0.10, 0.30, 0.12]
    assert rows["numba"].speedup_over_numpy == pytest.approx(2.0 / 0.24)  # of 20, 4 and 8.3; not 1.2 / 0.12
    assert rows["numpy"].speedup_over_numpy == pytest.approx(1.0)
    text = bench.format_ratios(records)
    assert "batch 32, numba on 2 thread(s) (0.100 0.300 0.120 s) against:" in text
    assert "torch (2 thread(s)): 20.0x 7.0x 8.3x, median 8.3x" in text


def test_bench_leaves_out_a_broken_peer_and_keeps_the_rest(monkeypatch):
    """A peer whose measurement fails (torch's import raising OSError: a broken install) ended the whole bench
    with one error, and the numba and numpy rows already measured were lost."""
    from fastnet import bench
    from fastnet.errors import FastnetError

    def measure(system, batch_size, threads, epochs, workload):
        if system == "torch":
            raise FastnetError("bench: the torch measurement failed: OSError: libtorch_cpu.so: cannot open")
        if system in ("sklearn", "jax"):
            return None
        return bench.Record(system, batch_size, threads, epochs, 0.1, 600_000, 1.0, 0.9, 100.0)

    monkeypatch.setattr(bench, "measure", measure)
    with pytest.warns(UserWarning, match="torch measurement failed: OSError.*; torch left out"):
        records = bench._measure_all([32], [2], 1, True, lambda record: None, 0, bench.Workload(), 2)
    assert sorted(r.backend for r in records) == ["numba", "numpy"]

    def numpy_fails(system, *args):
        if system == "numpy":
            raise FastnetError("bench: the numpy measurement failed: MemoryError")
        return measure(system, *args)

    monkeypatch.setattr(bench, "measure", numpy_fails)  # fastnet's own systems failing still ends the bench
    with pytest.raises(FastnetError, match="numpy measurement failed"):
        bench._measure_all([32], [2], 1, False, lambda record: None, 0, bench.Workload(), 1)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists a process's children from Linux's /proc")
def test_bench_busy_spinners_end_with_the_bench_even_when_it_is_killed():
    """bench --busy N's spinning processes went on at 100% of a core, orphaned, after bench was SIGKILLed."""
    import signal
    import time

    code = ("import os, time\nfrom fastnet.bench import busy_processes\nwith busy_processes(1):\n"
            "    me = os.getpid()\n    print(open(f'/proc/{me}/task/{me}/children').read(), flush=True)\n"
            "    time.sleep(600)")
    bench = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                             stdout=subprocess.PIPE, text=True)
    spinner = int(bench.stdout.readline().split()[0])
    bench.send_signal(signal.SIGKILL)
    bench.wait(timeout=60)

    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] not in ("Z", "X")
        except (FileNotFoundError, ProcessLookupError):
            return False
    deadline = time.monotonic() + 30
    while running(spinner) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(spinner)


def test_bench_even_rounds_take_the_lower_middle_and_threads_count_once(monkeypatch):
    """With an even number of rounds the row is the faster of the middle two and the ratio the smaller (never an
    average that belongs to no round); a thread count given twice is measured once per round."""
    from fastnet import bench

    seconds = {"numba": [0.2, 0.1, 0.4, 0.3], "numpy": [1.0, 1.0, 1.0, 1.0]}
    asked = []

    def measure(system, batch_size, threads, epochs, workload):
        asked.append((system, threads))
        s = seconds[system][sum(1 for a in asked if a[0] == system) - 1]
        return bench.Record(system, batch_size, threads, epochs, s, 60_000 / s, 1.0, 0.9, 100.0)

    monkeypatch.setattr(bench, "measure", measure)
    records = bench._measure_all([32], [2, 2], 1, False, lambda record: None, 0, bench.Workload(), 4)
    assert asked == [("numba", 2), ("numpy", 2)] * 4
    numba = next(r for r in records if r.backend == "numba")
    assert numba.seconds_per_epoch == 0.2 and numba.speedup_over_numpy == pytest.approx(1 / 0.3)  # of 5, 10, 2.5, 3.3
    assert "numpy (2 thread(s)): 5.0x 10.0x 2.5x 3.3x, median 3.3x" in bench.format_ratios(records)


@pytest.mark.parametrize("flags, message", [
    (["--rounds", "0"], "argument --rounds: 0 is out of range: must be 1 to 100"),
    (["--rounds", "2", "--sklearn"], "bench --sklearn takes no --rounds"),
    (["--batch-sizes", "10" * 12], "must be 1 to 60,000")])  # was "compiling the kernels failed" (a huge array)
def test_bench_refuses_bad_flags_in_one_line(flags, message):
    result = fastnet("bench", *flags)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bench_sklearn_compares_the_two_estimators(tmp_path):
    result = fastnet("bench", "--sklearn", "--dry-run", "--json", tmp_path / "versus.json")
    assert result.returncode == 0, result.stderr
    assert "fastnet acc  sklearn acc  fastnet fit s  sklearn fit s" in result.stdout
    rows = json.loads((tmp_path / "versus.json").read_text())
    assert [row["dataset"][:6] for row in rows] == ["digits", "breast", "MNIST "]
    for row in rows:
        assert row["fastnet_accuracy"] > 0.85 and row["sklearn_accuracy"] > 0.85 and row["fastnet_seconds"] > 0
    refused = fastnet("bench", "--sklearn", "--plot", tmp_path / "p.png")
    assert refused.returncode == 1 and "--json" in refused.stderr and "Traceback" not in refused.stderr


def test_a_failing_bench_process_is_one_error_naming_what_failed():
    from fastnet.bench import _run_child
    from fastnet.errors import FastnetError

    with pytest.raises(FastnetError, match="^bench: the demo failed: ValueError: boom$"):
        _run_child(["-c", "raise ValueError('boom')"], dict(os.environ), "the demo")
    assert _run_child(["-c", "raise SystemExit(3)"], dict(os.environ), "the demo", success=(0, 3)).returncode == 3


def test_dry_run_writes_nothing_unless_asked(tmp_path):
    result = fastnet("train", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_dry_run_draws_its_images_from_every_class():
    """--dry-run kept the first 2,048 images: of a folder dataset, stored class by class, one or two classes, and
    the run then failed as if it had learned nothing."""
    from fastnet.cli import _dry_run_part

    labels = np.repeat(np.arange(3, dtype=np.uint8), 1000)  # as load_folder stores them
    images = np.arange(3000)[:, None]
    part = _dry_run_part((images, labels), 2048, seed=0)
    assert len(part[0]) == 2048 and set(part[1]) == {0, 1, 2} and min(np.bincount(part[1])) > 600
    assert np.all(np.diff(part[0][:, 0]) > 0) and np.array_equal(labels[part[0][:, 0]], part[1])  # stored order
    assert np.array_equal(_dry_run_part((images, labels), 2048, seed=0)[0], part[0])  # the seed's draw, again
    assert np.array_equal(_dry_run_part((images[:100], labels[:100]), 2048, seed=0)[0], images[:100])  # all


def test_shipped_parameters_evaluate_at_98_8_percent_or_better():
    result = fastnet("evaluate")
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("MNIST test accuracy ")[1].split("%")[0])
    assert accuracy >= 98.8


@pytest.mark.parametrize("flags,named", [
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--hidden", "0"], "--hidden"),
    (["--momentum", "1"], "--momentum"),
    (["--threads", "999"], "--threads"),
    (["--activation", "softplus"], "--activation"),
    (["--hidden", "128,0"], "--hidden"),
    (["--hidden", "many"], "--hidden"),
    (["--optimizer", "lbfgs"], "--optimizer"),
    (["--image-size", "0"], "--image-size"),
    (["--image-size", "32x"], "--image-size"),
    (["--epochs", "ten"], "--epochs"),
    (["--seed", "-1"], "--seed"),
    (["--batch-size", "1e20"], "--batch-size"),
    (["--lr", "inf"], "--lr"),
    (["--weight-decay", "inf"], "--weight-decay"),
    (["--epoch", "3"], "--epoch"),  # no abbreviations: it was taken for --epochs
    (["--optimizer", "adam", "--momentum", "0.5"], "--momentum is SGD's"),
    (["--momentum", "0", "--nesterov"], "--nesterov needs"),
    (["--weight-decay", "1e300"], "--weight-decay 1e+300: at learning rate 0.05"),  # was: "try a smaller --lr"
    (["--lr", "1e39"], "--lr 1e+39: must be a finite number"),  # past float32: numpy's overflow warnings, then that
    # flags a run would ignore (they were, silently)
    (["--resume", "run.checkpoint.npz", "--epochs", "50", "--lr", "9"], "--epochs, --lr would be ignored"),
    (["--resume", "run.checkpoint.npz", "--backend", "numba", "--checkpoint", "b.npz"], "--backend, --checkpoint"),
    (["--no-training", "--epochs", "5", "--out", "z.npz"], "--epochs, --out would be ignored"),
    (["--no-training", "--image-size", "64x48", "--color"], "--image-size, --color would be ignored"),
    (["--dry-run", "--parameters", "p.npz"], "--parameters is read only with --no-training"),
])
def test_bad_flags_get_one_line_naming_the_flag(flags, named, tmp_path):
    result = fastnet("train", *flags, cwd=tmp_path)  # (were one accepted, it would train there, not here)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr


def test_data_that_is_a_file_is_one_line_saying_so(tmp_path):
    """It said "seven.png/.fastnet-cache.npz: cannot look at it (Not a directory)"."""
    (tmp_path / "seven.png").write_bytes(b"an image, say")
    result = fastnet("train", "--data", "seven.png", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "--data seven.png: not a folder" in result.stderr, result.stderr


def test_no_training_with_other_data_is_one_line_not_mnist_accuracy(tmp_path):
    """--no-training with --data DIR reported MNIST's accuracy, as if it were DIR's."""
    result = fastnet("train", "--no-training", "--data", tmp_path, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "MNIST test accuracy" not in result.stdout
    assert "not on --data" in result.stderr and "python -m fastnet predict FOLDER" in result.stderr


def test_fetch_timeout_must_be_finite():
    result = fastnet("fetch", "--timeout", "inf")
    assert result.returncode == 2 and "--timeout" in result.stderr and result.stderr.count("\n") == 1


def folder_dataset(root: Path, classes: int, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize("case", ["batch larger than the data", "network larger than memory",
                                  "images larger than memory", "image size with MNIST", "val-split leaving nothing",
                                  "val-split with MNIST", "one class"])
def test_impossible_runs_are_refused_before_training_with_the_flag_named(case, tmp_path):
    """Each was a traceback, a 477 GiB allocation attempt, or (one class) a meaningless 100%."""
    data = folder_dataset(tmp_path / "data", 1 if case == "one class" else 2, 25)
    args, named = {
        "batch larger than the data": (["--batch-size", "1000000000"], "--batch-size"),
        "network larger than memory": (["--hidden", "100000000"], "--hidden"),
        # (refused before the images were decoded and cached: that took 85 s and 6 GB for 90 images)
        "images larger than memory": (["--data", data, "--val-split", "0.2", "--image-size", "4096", "--color"],
                                      "--image-size"),
        "val-split leaving nothing": (["--data", data, "--val-split", "0.9999"], "--val-split"),
        "val-split with MNIST": (["--val-split", "0.1"], "--val-split"),
        "image size with MNIST": (["--image-size", "4096", "--color"], "they are for image folders"),  # not memory
        "one class": (["--data", data, "--val-split", "0.2"], "class"),
    }[case]
    result = fastnet("train", *args, "--out", tmp_path / "p.npz", "--plot", tmp_path / "e.png")
    errors = [line for line in result.stderr.splitlines() if line.startswith("fastnet: error:")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert named in errors[0] and "epoch" not in result.stdout
    assert not (tmp_path / "p.npz").exists()
    if case == "images larger than memory":
        assert not (data / ".fastnet-cache.npz").exists()


def test_an_idx_folder_with_no_images_is_one_error(tmp_path):
    from fastnet.datasets import MNIST_FILES

    header = {3: b"\0\0\x08\x03" + (0).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2,
              1: b"\0\0\x08\x01" + (0).to_bytes(4, "big")}
    for images, labels in MNIST_FILES.values():
        (tmp_path / images).write_bytes(gzip.compress(header[3]))
        (tmp_path / labels).write_bytes(gzip.compress(header[1]))
    result = fastnet("train", "--data", tmp_path, "--out", tmp_path / "p.npz", "--plot", tmp_path / "e.png")
    assert result.returncode == 1 and result.stderr.startswith("fastnet: error:"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_run_that_ends_at_chance_says_so_and_saves_nothing(tmp_path):
    """--activation relu --lr 3 --momentum 0.99 ended at 8.7% with exit 0 and replaced the parameters."""
    out = tmp_path / "p.npz"
    result = fastnet("train", "--dry-run", "--activation", "relu", "--lr", "3", "--momentum", "0.99", "--out", out,
                     "--plot", tmp_path / "e.png")
    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("fastnet: error:")]
    assert len(errors) == 1 and ("chance" in errors[0] or "diverged" in errors[0]) and "smaller --lr" in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_resuming_without_saving_keeps_the_checkpoint(tmp_path, mnist_train):
    """--resume with --dry-run (and so no --out) ran to the end and deleted the checkpoint: the trained network
    was then nowhere. It stays in the checkpoint, and the output says so."""
    from fastnet.cli import DRY_RUN_IMAGES, _dry_run_part
    from fastnet.kernels.threads import new_stop_flag
    from fastnet.training import Interrupted, TrainConfig, train

    checkpoint, stop = tmp_path / "run.checkpoint.npz", new_stop_flag()
    dry_run_data = _dry_run_part(mnist_train, DRY_RUN_IMAGES[0], TrainConfig().seed)  # what --dry-run trains on
    with pytest.raises(Interrupted):
        train(TrainConfig(epochs=2), dry_run_data, None, 10, lambda stats: stop.__setitem__(0, 1),
              checkpoint_path=checkpoint, stop=stop)
    result = fastnet("train", "--resume", checkpoint, "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert checkpoint.exists() and f"kept in {checkpoint}" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.checkpoint.npz"]


def test_a_quick_run_at_chance_is_told_to_train_longer(tmp_path):
    """Two steps on a tiny folder end at chance whatever the learning rate: the advice says so."""
    for name, shade in (("dark", 40), ("light", 200)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(np.full((8, 8), shade + i, np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    result = fastnet("train", "--data", tmp_path / "data", "--val-split", "0.2", "--image-size", "8", "--epochs", 1,
                     "--batch-size", 16, "--lr", "1e-9", "--out", tmp_path / "p.npz", "--plot", tmp_path / "e.png")
    assert result.returncode == 1 and "chance" in result.stderr, result.stdout + result.stderr
    assert "steps were taken: train longer" in result.stderr and "smaller --lr" not in result.stderr


def test_unwritable_output_is_refused_before_training(tmp_path):
    result = fastnet("train", "--out", tmp_path / "missing-folder" / "p.npz")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "--out" in result.stderr
    assert "epoch" not in result.stdout


def test_bad_parameters_file_is_one_line_and_nonzero(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"garbage")
    result = fastnet("evaluate", "--parameters", tmp_path / "broken.npz")
    assert result.returncode == 1
    assert result.stderr.startswith("fastnet: error:") and result.stderr.count("\n") == 1


BLAS_THREADS = """
import numpy
from threadpoolctl import threadpool_info
from fastnet.cli import _set_threads
def blas_threads():
    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")
before = blas_threads()
_set_threads(1, "numpy")
print(before, blas_threads())
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to limit")
def test_threads_limits_the_blas_threads_of_the_numpy_backend():
    """--threads did not limit OpenBLAS: on a busy machine the numpy backend took 17 s an epoch, 1.15 s on one."""
    env = {key: value for key, value in os.environ.items() if not key.endswith("_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", BLAS_THREADS], env=dict(env, PYTHONPATH=str(ROOT)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    before, after = map(int, result.stdout.split())
    assert before > 1 and after == 1


def subcommands(parser):
    return next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction)).choices


def test_every_option_has_help_and_train_shows_the_defaults_a_run_uses(mnist_train):
    """`train --help` said `--weight-decay (default 0)` while runs used 5e-05, and several options had no help."""
    from fastnet.cli import HelpFormatter, build_parser, train_config
    from fastnet.training import DEFAULT_LEARNING_RATE, DEFAULT_WEIGHT_DECAY, with_learning_rate

    parser = build_parser()
    for name, command in subcommands(parser).items():
        for action in command._actions:
            assert action.help, f"{name} {'/'.join(action.option_strings) or action.dest} has no help"
    train = subcommands(parser)["train"]
    config = train_config(parser.parse_args(["train"]))
    fields = {"--epochs": "epochs", "--batch-size": "batch_size", "--momentum": "momentum",
              "--schedule": "schedule", "--activation": "activation", "--optimizer": "optimizer", "--seed": "seed",
              "--backend": "backend"}
    formatter = HelpFormatter("fastnet train")
    helps = {}
    for action in train._actions:
        if action.option_strings:
            helps[action.option_strings[0]] = formatter._get_help_string(action) % {"default": action.default}
    for flag, field in fields.items():
        assert helps[flag].endswith(f"(default: {getattr(config, field)})"), helps[flag]
    assert helps["--hidden"].endswith(f"(default: {','.join(map(str, config.hidden))})")
    for flag, optimizer_defaults in (("--lr", DEFAULT_LEARNING_RATE), ("--weight-decay", DEFAULT_WEIGHT_DECAY)):
        for optimizer, value in optimizer_defaults.items():  # what each optimiser's run uses, as the help says
            resolved = with_learning_rate(train_config(parser.parse_args(["train", "--optimizer", optimizer])),
                                          mnist_train[0])  # as a run on MNIST decides it
            assert f"{value:g} for {optimizer}" in helps[flag]
            assert {"--lr": resolved.learning_rate, "--weight-decay": resolved.weight_decay}[flag] == value
    shown = " ".join(fastnet("train", "--help").stdout.split())
    assert "(default: 5e-05 for sgd" in shown and "sgd's scaled down where input rows are longer than MNIST's" in shown


def test_with_no_parameters_named_the_shipped_model_is_used_and_named(tmp_path):
    """Outside the checkout, `predict x.png` failed: the trained model was not installed, nor looked for."""
    from fastnet.parameters import shipped_path

    result = fastnet("evaluate", "--confusion", tmp_path / "c.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{shipped_path()}: 784-128-10")
    assert f"confusion matrix: {tmp_path / 'c.png'}" in result.stdout and (tmp_path / "c.png").exists()
    (tmp_path / "parameters.npz").write_bytes(shipped_path().read_bytes())
    assert fastnet("evaluate", cwd=tmp_path).stdout.startswith("parameters.npz: 784-128-10")


SWALLOWED = """
import signal, sys
from fastnet import cli
sys.unraisablehook = cli._quit_if_interrupted

class Callback:  # what C code calling back into Python does with an exception it cannot pass on
    def __del__(self):
        raise cli.Stopped(signal.SIGTERM)

Callback()
print("went on", flush=True)
"""


def test_a_stop_signal_swallowed_by_a_callback_from_c_still_quits():
    """SIGTERM while Numba loaded the kernels was printed as 'Exception ignored' and predict went on to exit 0."""
    result = subprocess.run([sys.executable, "-c", SWALLOWED], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 143 and "went on" not in result.stdout, result
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("failure", ["full disk", "ctrl-c"])
def test_a_failed_save_says_the_command_that_saves_the_run(failure, tmp_path, monkeypatch, capsys):
    """A save that fails after the last epoch (a full disk; Ctrl-C while saving) leaves the network in the
    checkpoint, and the command printed saves it where this run would have: it left out --out and --plot (so it
    replaced ./parameters.npz), and --val-split and --strict (so it failed); Ctrl-C said nothing of it."""
    import fastnet.parameters
    from fastnet import cli

    for name, shade in (("dark", 40), ("light", 200)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(np.full((8, 8), shade + i, np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    out, plot = tmp_path / "runs" / "p.npz", tmp_path / "runs" / "e.png"
    out.parent.mkdir()
    save = fastnet.parameters.save

    def failing_save(path, parameters):
        if failure == "ctrl-c":
            raise KeyboardInterrupt
        raise cli.FastnetError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(fastnet.parameters, "save", failing_save)
    monkeypatch.chdir(tmp_path)
    status = cli.main(["train", "--data", "data", "--val-split", "0.25", "--strict", "--image-size", "8x6",
                       "--epochs", "20", "--batch-size", "8", "--out", str(out), "--plot", str(plot)])
    out_text, err = capsys.readouterr()
    assert "images (8x6), 2 classes" in out_text  # as --image-size takes it, width x height (it said 6x8)
    assert status == (130 if failure == "ctrl-c" else 1) and err.count("\n") == 1 and "Traceback" not in err, err
    checkpoint = out.with_name("p.checkpoint.npz")
    assert f"kept in {checkpoint}" in err and not out.exists()
    command = shlex.split("python -m fastnet " + err.split("python -m fastnet ", 1)[1].split(" saves it")[0])
    assert command[3:5] == ["train", "--resume"] and "--strict" in command
    for flag, value in (("--out", out), ("--plot", plot), ("--val-split", "0.25"), ("--image-size", "8x6")):
        assert command[command.index(flag) + 1] == str(value), command
    monkeypatch.setattr(fastnet.parameters, "save", save)
    assert cli.main(command[3:]) == 0, capsys.readouterr().err
    assert out.exists() and plot.exists() and not checkpoint.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "runs"]  # no ./parameters.npz
