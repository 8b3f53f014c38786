"""`python -m fastnet` end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import os
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

    for command in (["evaluate", "--parameters", out], ["train", "--no-training", "--parameters", out]):
        result = fastnet(*command)
        assert result.returncode == 0, result.stderr
        assert "MNIST test accuracy" in result.stdout and "(" in result.stdout


def test_bench_prints_the_table_and_writes_json_and_plot(tmp_path):
    records_path, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    result = fastnet("bench", "--batch-sizes", 128, "--threads", 1, "--json", records_path, "--plot", plot)
    assert result.returncode == 0, result.stderr
    assert "compile into an empty cache" in result.stdout and "images/s" in result.stdout
    assert "backend  batch  threads  s/epoch" in result.stdout
    records = {record["backend"]: record for record in json.loads(records_path.read_text())}
    assert sorted(records) == ["numba", "numpy"]
    for record in records.values():
        assert (record["batch_size"], record["threads"]) == (128, 1)
        assert record["images_per_second"] == pytest.approx(60_000 / record["seconds_per_epoch"])
        assert record["test_accuracy"] > 0.9
    # same initial weights, shuffles and maths: the same accuracy, whatever the speed
    assert records["numba"]["test_accuracy"] == pytest.approx(records["numpy"]["test_accuracy"], abs=0.002)
    with Image.open(plot) as image:
        assert image.format == "PNG"


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


def test_shipped_parameters_evaluate_at_98_3_percent_or_better():
    result = fastnet("evaluate")
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("MNIST test accuracy ")[1].split("%")[0])
    assert accuracy >= 98.3


@pytest.mark.parametrize("flags,named", [
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--hidden", "0"], "--hidden"),
    (["--momentum", "1"], "--momentum"),
    (["--threads", "999"], "--threads"),
    (["--activation", "tanh"], "--activation"),
    (["--epochs", "ten"], "--epochs"),
])
def test_bad_flags_get_one_line_naming_the_flag(flags, named):
    result = fastnet("train", *flags)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr


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
