"""Finding and decoding image files as they lie on disk: FIFOs, link loops, unreadable folders, images that break
a decoder, and interruption while decoding. Only regular files are read; what cannot be read is listed, once."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastnet import images
from fastnet.errors import FastnetError
from fastnet.folders import load_folder
from fastnet.images import decode_all
from fastnet.preprocess import Prep, load_image

from .test_predict import ENV, ROOT, fastnet_cli

needs_posix = pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/proc/self/stat").exists(),
                                 reason="FIFOs, symbolic links and /proc are POSIX (Linux) features")


def digit_png(path: Path, value: int = 255) -> Path:
    array = np.zeros((28, 28), np.uint8)
    array[6:22, 12:16] = value  # a '1': MNIST-like, light on dark
    Image.fromarray(array).save(path)
    return path


def skip_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("skipped ")]


@needs_posix
def test_a_fifo_named_like_an_image_is_listed_as_skipped_and_never_opened(tmp_path, monkeypatch, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        digit_png(tmp_path / name / "good.png")
    os.mkfifo(tmp_path / "a" / "pipe.png")
    opened = []
    real_open = os.open

    def recording_open(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    images, labels, classes = load_folder(tmp_path, cache=False, progress=False)
    monkeypatch.undo()
    assert len(images) == 2 and classes == ["a", "b"]
    assert not [path for path in opened if path.endswith("pipe.png")]  # a reader would wait for a writer forever
    lines = skip_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "pipe.png" in lines[0] and "FIFO" in lines[0]

    result = fastnet_cli("predict", tmp_path)
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.startswith(str(tmp_path))]) == 2
    lines = skip_lines(result.stderr)
    assert len(lines) == 1 and lines[0].count("pipe.png") == 1 and "FIFO" in lines[0]


@needs_posix
def test_link_loops_are_followed_once_and_unreadable_folders_are_listed(tmp_path, monkeypatch, capsys):
    for name in ("3", "4"):
        (tmp_path / name / "sub").mkdir(parents=True)
        digit_png(tmp_path / name / "x.png")
        digit_png(tmp_path / name / "sub" / "y.png")
    os.symlink("..", tmp_path / "3" / "sub" / "up")  # 3/sub/up/sub/up/... never ends
    os.symlink("self.png", tmp_path / "3" / "self.png")  # a link to itself: ELOOP
    (tmp_path / "4" / "locked").mkdir()
    digit_png(tmp_path / "4" / "locked" / "z.png")

    result = fastnet_cli("predict", tmp_path)  # everything is readable here but self.png
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    rows = [line.split()[0] for line in result.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert len(rows) == len(set(rows)) == 5  # x, y in 3 and 4, and 4/locked/z: each once
    lines = skip_lines(result.stderr)
    assert len(lines) == 1 and "self.png" in lines[0] and "symbolic links" in lines[0]

    # root reads a folder whatever its mode: make 4/locked unreadable the way a user's would be
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    images, labels, classes = load_folder(tmp_path, cache=False, progress=False)
    assert len(images) == 4 and labels.tolist() == [0, 0, 1, 1]
    lines = skip_lines(capsys.readouterr().err)
    assert sorted(line.split(":")[0] for line in lines) == [f"skipped {tmp_path}/3/self.png",
                                                           f"skipped {tmp_path}/4/locked"]
    assert any("Permission denied" in line for line in lines)


@needs_posix
def test_a_folder_without_read_permission_is_listed(tmp_path, capsys):
    (tmp_path / "a" / "locked").mkdir(parents=True)
    digit_png(tmp_path / "a" / "x.png")
    digit_png(tmp_path / "a" / "locked" / "y.png")
    (tmp_path / "a" / "locked").chmod(0)
    try:
        if os.access(tmp_path / "a" / "locked", os.R_OK):
            pytest.skip("this user (root) reads a folder whatever its mode")
        images, _, _ = load_folder(tmp_path, cache=False, progress=False)
    finally:
        (tmp_path / "a" / "locked").chmod(0o755)
    assert len(images) == 1
    assert any("locked" in line and "Permission denied" in line for line in skip_lines(capsys.readouterr().err))


def lab_tiff(path: Path) -> Path:
    Image.new("LAB", (28, 28), (200, 128, 128)).save(path, "TIFF")
    return path


def png_with_broken_exif(path: Path) -> Path:
    """A PNG whose eXIf chunk is not TIFF data: Pillow's EXIF parser raises SyntaxError, not its usual OSError."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(buffer, "PNG", exif=b"Exif\0\0garbage")
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_an_image_that_breaks_the_decoder_is_skipped_not_fatal(tmp_path, workers):
    good = digit_png(tmp_path / "good.png")
    paths = [lab_tiff(tmp_path / "lab.tif"), png_with_broken_exif(tmp_path / "exif.png"), good]
    for i in range(150):  # more than one chunk, so that two processes decode
        os.link(good, tmp_path / f"copy{i}.png")
        paths.append(tmp_path / f"copy{i}.png")
    rows, failures = decode_all(paths, Prep("resize"), workers=workers)
    assert [(path.name, "not a readable image" in reason) for path, reason in failures] == [("exif.png", True)]
    assert (rows[0] == 200).all()  # LAB's lightness, as gray
    assert rows[2].any() and (rows[3:] == rows[2]).all()


def dying_on_crash_png(path, *args):
    """load_image, but the process dies (as if killed for memory) on crash.png."""
    if str(path).endswith("crash.png"):
        os.kill(os.getpid(), signal.SIGKILL)
    return load_image(path, *args)


def test_a_decoding_process_that_dies_is_one_error_not_a_hang(tmp_path, monkeypatch):
    good = digit_png(tmp_path / "good.png")
    paths = [good] * 150 + [good.rename(tmp_path / "crash.png")] + [digit_png(good)] * 150
    monkeypatch.setattr(images, "load_image", dying_on_crash_png)  # the forked workers have it too
    with pytest.raises(FastnetError, match=r"a decoding process died \(killed by SIGKILL\) on one of the 64 images"):
        decode_all(paths, workers=2)
    assert multiprocessing.active_children() == []  # every worker ended and reaped


def test_predict_skips_an_image_that_breaks_the_decoder(tmp_path):
    digit_png(tmp_path / "good.png")
    lab_tiff(tmp_path / "lab.tif")
    png_with_broken_exif(tmp_path / "exif.png")
    result = fastnet_cli("predict", tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "good.png" in result.stdout and "lab.tif" in result.stdout
    lines = skip_lines(result.stderr)
    assert len(lines) == 1 and "exif.png" in lines[0]


def processes_in_group(group: int) -> list[int]:
    """The processes (zombies too) of a process group, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # not a process, or gone
        if int(fields[2]) == group:  # fields after the name: state, ppid, pgrp
            found.append(int(entry.name))
    return found


@needs_posix
@pytest.mark.parametrize("signum, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGTERM, True)],
                         ids=["ctrl-c", "kill", "kill-group"])
def test_a_signal_while_decoding_ends_predict_cleanly(tmp_path, signum, to_group):
    """Ctrl-C reaches the whole process group, `kill` only fastnet: either way the decoding processes go, and
    fastnet ends with one line and 128 + the signal's number, whatever the moment."""
    canvas = np.full((1500, 1500), 255, np.uint8)
    canvas[300:1200, 700:800] = 0  # a big '1' on paper: each image takes some milliseconds to make a digit
    Image.fromarray(canvas).save(tmp_path / "0.png")
    for i in range(1, 600):  # links: hundreds of images for the price of one
        os.link(tmp_path / "0.png", tmp_path / f"{i}.png")
    process = subprocess.Popen([sys.executable, "-m", "fastnet", "predict", tmp_path], cwd=ROOT, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # a bound against a hang only: start-up loads the kernels first
        while len(processes_in_group(process.pid)) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.poll() is None, "predict ended before it started decoding in processes"
        time.sleep(0.2)  # decoding, in the worker processes
        (os.killpg if to_group else os.kill)(process.pid, signum)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 128 + signum, err
    assert err.strip() == "fastnet: interrupted", err
    assert processes_in_group(process.pid) == []  # no decoding process left behind, not even a zombie
