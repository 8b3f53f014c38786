"""Datasets as people have them: image folders (any format and mode) and the decode cache."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastnet import folders
from fastnet.datasets import load_data
from fastnet.errors import FastnetError
from fastnet.export import export
from fastnet.folders import CACHE_NAME, load_dataset, load_folder
from fastnet.images import decode_all
from fastnet.parameters import load as load_parameters

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):  # a copy of tests/test_export.py's (module-scoped: made once per module anyway)
    folder = tmp_path_factory.mktemp("export") / "mnist"
    export(folder, splits=("test",))
    return folder


def not_decoding(*args, **kwargs):
    raise AssertionError("decoded again: the cache was not used")


def test_cache_is_used_and_invalidated(exported, tmp_path, monkeypatch):
    folder = tmp_path / "digits"
    shutil.copytree(exported / "test", folder, ignore=shutil.ignore_patterns(CACHE_NAME))
    first = load_folder(folder, progress=False)
    assert (folder / CACHE_NAME).exists()
    with monkeypatch.context() as patched:  # a wall-clock bound fails on a busy machine; decoding again does not
        patched.setattr(folders, "decode_all", not_decoding)
        second = load_folder(folder, progress=False)
    np.testing.assert_array_equal(first[0], second[0])

    changed = folder / "3" / sorted(os.listdir(folder / "3"))[0]
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(changed)  # a changed image
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = load_folder(folder, progress=False)
    assert len(third[0]) == len(first[0]) and not np.array_equal(third[0], first[0])

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "3" / "new.png")  # an added image
    assert len(load_folder(folder, progress=False)[0]) == len(first[0]) + 1
    (folder / "3" / "new.png").unlink()  # a removed image
    (folder / "4" / sorted(os.listdir(folder / "4"))[0]).unlink()
    assert len(load_folder(folder, progress=False)[0]) == len(first[0]) - 1

    (folder / CACHE_NAME).write_bytes(b"garbage")  # a damaged cache is rebuilt
    assert len(load_folder(folder, progress=False)[0]) == len(first[0]) - 1


def test_a_dataset_whose_cache_cannot_be_written_still_loads(exported, tmp_path, monkeypatch):
    """A read-only dataset (simulated: root writes anywhere) loads without its cache; write_atomically's
    refusal is a FastnetError, which load_folder once let through as if it were fatal."""
    folder = tmp_path / "digits"
    shutil.copytree(exported / "test" / "3", folder / "3")
    shutil.copytree(exported / "test" / "7", folder / "7")

    def refused(path, write):
        raise FastnetError(f"cannot write {path}: Permission denied; nothing was written")
    monkeypatch.setattr(folders, "write_atomically", refused)
    images, labels, classes = load_folder(folder, progress=False)
    assert classes == ["3", "7"] and len(images) == len(labels) > 0
    assert not (folder / CACHE_NAME).exists()


def test_a_cache_over_a_gigabyte_is_read_back(exported, tmp_path, monkeypatch):
    """read_npz refuses entries over 1 GiB unless told otherwise; the cache, whose size is the dataset's, is
    told: else a big dataset's cache would be rebuilt, and written again, on every load. (1 GiB lowered.)"""
    folder = tmp_path / "digits"
    shutil.copytree(exported / "test" / "3", folder / "3")
    load_folder(folder, progress=False)
    real_read_npz = folders.read_npz
    monkeypatch.setattr(folders, "read_npz", lambda *args, max_bytes=1 << 30, **kwargs: real_read_npz(
        *args, max_bytes=None if max_bytes is None else 1000, **kwargs))
    monkeypatch.setattr(folders, "decode_all", not_decoding)
    assert len(load_folder(folder, progress=False)[0]) > 0


def save_any(path: Path, array: np.ndarray, mode: str, format: str) -> None:
    image = Image.fromarray(array).convert(mode if mode != "I;16" else "I")
    if mode == "I;16":
        image = Image.fromarray((np.asarray(image, np.uint16) * 257).astype(np.uint16))
    image.save(path, format)


def test_any_format_mode_and_size_with_any_class_names(tmp_path, capsys):
    rng = np.random.default_rng(0)
    formats = [("png", "PNG", "L"), ("jpg", "JPEG", "RGB"), ("bmp", "BMP", "RGB"), ("gif", "GIF", "P"),
               ("tif", "TIFF", "I;16"), ("webp", "WEBP", "RGBA"), ("png", "PNG", "1"), ("png", "PNG", "LA")]
    for name in ("cat", "dog", "bird"):
        (tmp_path / name).mkdir()
        for i, (suffix, fmt, mode) in enumerate(formats):
            size = (28, 28) if i % 2 else (int(rng.integers(10, 90)), int(rng.integers(10, 90)))
            save_any(tmp_path / name / f"{i}.{suffix}", rng.integers(0, 256, size, dtype=np.uint8), mode, fmt)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "cat" / ".hidden.png").write_bytes(b"\x89PNG hidden")
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / ".cache").mkdir()
    images, labels, classes = load_folder(tmp_path, progress=False)
    assert classes == ["bird", "cat", "dog"]
    assert images.shape == (3 * len(formats), 784) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [len(formats)] * 3
    assert "broken.png" in capsys.readouterr().err  # skipped and listed
    load_folder(tmp_path, progress=False)  # from the cache now: still listed
    assert "broken.png" in capsys.readouterr().err
    with pytest.raises(FastnetError, match="unreadable"):
        load_folder(tmp_path, strict=True, cache=False, progress=False)


def digit_png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((28, 28), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_skipped_image_is_tried_again_when_it_may_have_become_readable(tmp_path, monkeypatch, capsys):
    """The cache key sees names, sizes, times, modes and owners, not everything that decides whether a file
    reads: a skipped image is tried again on every load, and the dataset reloaded when it reads now."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "good.png").write_bytes(digit_png_bytes(100))
    fixed = digit_png_bytes(200)
    later = tmp_path / "b" / "later.png"
    later.write_bytes(b"\x89PNG broken".ljust(len(fixed), b"\0"))  # the same size as once it is fixed
    assert len(load_folder(tmp_path, progress=False)[0]) == 2
    assert "later.png" in capsys.readouterr().err
    with monkeypatch.context() as patched:  # unchanged: only the skipped image is decoded again
        tried = []
        patched.setattr(folders, "decode_all", lambda paths, *args, **kw: tried.extend(paths) or decode_all(paths, *args, **kw))
        assert len(load_folder(tmp_path, progress=False)[0]) == 2
    assert tried == [str(later)] and "later.png" in capsys.readouterr().err

    status = later.stat()
    later.write_bytes(fixed)  # mended in place, its size and time kept (cp --preserve, a restore): the key is
    os.utime(later, ns=(status.st_atime_ns, status.st_mtime_ns))  # unchanged
    images, labels, _ = load_folder(tmp_path, progress=False)
    assert len(images) == 3 and labels.tolist() == [0, 1, 1] and "later.png" not in capsys.readouterr().err


def test_the_cache_key_changes_with_what_makes_a_file_readable(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(digit_png_bytes(100))
    image = tmp_path / "a" / "x.png"
    mode, key = image.stat().st_mode, folders._fingerprint([str(image)], tmp_path)
    image.chmod(0)
    try:
        assert folders._fingerprint([str(image)], tmp_path) != key
        if not os.access(image, os.R_OK):  # not root, who reads it anyway
            assert len(load_folder(tmp_path, progress=False)[0]) == 1
    finally:
        image.chmod(mode)
    assert folders._fingerprint([str(image)], tmp_path) == key
    assert len(load_folder(tmp_path, progress=False)[0]) == 2


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are any bytes; others' are Unicode")
def test_file_names_that_are_not_utf8_load_and_are_listed(tmp_path, capsys):
    """Names as Latin-1 bytes crashed the cache key; a class folder's becomes a class name in text (\\xNN)."""
    folder = os.fsencode(tmp_path)
    for name in (b"a", b"\xe9t\xe9"):
        os.mkdir(folder + b"/" + name)
        with open(folder + b"/" + name + b"/caf\xe9.png", "wb") as file:
            file.write(digit_png_bytes(100))
    with open(folder + b"/a/\xff.png", "wb") as file:
        file.write(b"\x89PNG broken")
    for _ in range(2):  # decoded, then from the cache
        images, labels, classes = load_folder(tmp_path, progress=False)
        assert len(images) == 2 and classes == ["a", "\\xe9t\\xe9"]
        assert f"skipped {tmp_path}/a/\\xff.png: not a readable image" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_strict_refuses_what_cannot_be_read_before_decoding(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "good.png").write_bytes(digit_png_bytes(100))
    os.mkfifo(tmp_path / "b" / "pipe.png")
    monkeypatch.setattr(folders, "decode_all", not_decoding)
    with pytest.raises(FastnetError, match="pipe.png: is a FIFO"):
        load_folder(tmp_path, strict=True, progress=False)


def test_images_that_would_not_fit_in_memory_are_refused_before_decoding(tmp_path, monkeypatch):
    """`--image-size 4096 --color` decoded 90 images into 6 GB and cached them before anything refused them."""
    from fastnet import memory
    from fastnet.preprocess import Prep

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for n in range(5):
            (tmp_path / name / f"{n}.png").write_bytes(digit_png_bytes(100))
    monkeypatch.setattr(memory, "available_memory", lambda: 10 * 64 * 48 * 3 * 2 - 1)  # one byte short
    monkeypatch.setattr(folders, "decode_all", not_decoding)
    with pytest.raises(FastnetError, match="10 images at 64x48 colour needs about 180.0 KiB of memory, more than the "
                                           ".*; choose a smaller image size"):
        load_folder(tmp_path, progress=False, prep=Prep("resize", 48, 64, 3))
    assert not (tmp_path / CACHE_NAME).exists()
    monkeypatch.setattr(memory, "available_memory", lambda: 10 * 64 * 48 * 3 * 2)  # just enough
    monkeypatch.setattr(folders, "decode_all", decode_all)
    images, _, _ = load_folder(tmp_path, progress=False, prep=Prep("resize", 48, 64, 3))
    assert images.shape == (10, 64 * 48 * 3)
    monkeypatch.setattr(memory, "available_memory", lambda: 10 * 64 * 48 * 3 * 3 // 2)  # the cache's one copy fits
    monkeypatch.setattr(folders, "decode_all", not_decoding)
    assert np.array_equal(load_folder(tmp_path, progress=False, prep=Prep("resize", 48, 64, 3))[0], images)


def test_layout_errors_and_warnings(tmp_path):
    with pytest.raises(FastnetError, match="no class folders; expected"):
        load_folder(tmp_path)
    with pytest.raises(FastnetError, match="no such folder"):
        load_folder(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a" / "x.png")
    with pytest.warns(UserWarning, match="empty class folder"):
        load_folder(tmp_path, progress=False)
    with pytest.warns(UserWarning), pytest.raises(FastnetError, match="--val-split"):
        load_dataset(tmp_path)


def test_train_and_predict_on_a_folder_dataset_with_named_classes(tmp_path):
    """Three 'shapes' classes, trained with --val-split and predicted by name: nothing assumes digits."""
    rng = np.random.default_rng(1)
    data = tmp_path / "shapes"
    for name, draw in (("bar", lambda a: a.__setitem__((slice(4, 24), slice(12, 16)), 255)),
                       ("cross", lambda a: (a.__setitem__((slice(12, 16), slice(4, 24)), 255),
                                            a.__setitem__((slice(4, 24), slice(12, 16)), 255))),
                       ("ring", lambda a: (a.__setitem__((slice(6, 22), slice(6, 22)), 255),
                                           a.__setitem__((slice(10, 18), slice(10, 18)), 0)))):
        (data / name).mkdir(parents=True)
        for i in range(60):
            array = np.zeros((28, 28), np.uint8)
            draw(array)
            array = np.roll(array, rng.integers(-3, 4, 2), axis=(0, 1))
            Image.fromarray(array).resize((56, 56)).save(data / name / f"{i}.png")
    out = tmp_path / "shapes.npz"
    result = subprocess.run([sys.executable, "-m", "fastnet", "train", "--data", data, "--val-split", "0.2",
                             "--epochs", "15", "--lr", "0.5", "--out", out, "--plot", tmp_path / "e.png"],
                            env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    with np.load(out) as stored:
        assert list(stored["class_names"]) == ["bar", "cross", "ring"] and str(stored["preprocessing"]) == "resize"
    predicted = subprocess.run([sys.executable, "-m", "fastnet", "predict", data, "--parameters", out], env=ENV,
                               capture_output=True, text=True, timeout=600)
    assert predicted.returncode == 0, predicted.stderr
    accuracy = float(predicted.stdout.split("accuracy ")[1].split("%")[0])
    assert accuracy >= 90 and " ring " in predicted.stdout.replace("\n", " ")


def test_links_into_other_classes_are_skipped_not_read_twice(tmp_path, capsys):
    """`train/a/up -> ..` made every image of b/ and c/ train a second time, labelled a."""
    root = tmp_path / "shapes"
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((28, 28), 40 * i + ord(name) - 90, np.uint8)).save(root / name / f"{i}.png")
    os.symlink("..", root / "a" / "up")
    os.symlink("../b", root / "a" / "b_too")
    outside = tmp_path / "more_a"
    outside.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(outside / "9.png")
    os.symlink(outside, root / "a" / "more")  # a folder outside the dataset is the user's to add
    images, labels, classes = load_folder(root, cache=False, progress=False)
    assert classes == ["a", "b", "c"] and labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped")]
    assert sorted(line.split(":")[0] for line in skipped) == [f"skipped {root}/a/b_too", f"skipped {root}/a/up"]


def gray_of(rgb: tuple[int, int, int]) -> int:
    return int(np.asarray(Image.new("RGB", (1, 1), rgb).convert("L"))[0, 0])


def colours_of_one_gray(level: int = 128) -> list[tuple[int, int, int]]:
    """Three clearly different colours that Pillow's grayscale makes exactly level, as it does the background."""
    found = []
    for red, blue in ((230, 40), (40, 230), (140, 250)):  # reddish, bluish, purplish: green then sets the gray
        green = next(g for g in range(256) if gray_of((red, g, blue)) == level)
        found.append((red, green, blue))
    return found


def shapes_in_colours(root: Path, per_class: int, seed: int) -> None:
    """The same kind of random shapes in each class, drawn in the class's colour on a background of the same
    gray: only the colour tells the classes apart."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    for name, colour in zip(("red", "blue", "purple"), colours_of_one_gray()):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (16, 16), (128, 128, 128))
            x, y = rng.integers(0, 6, 2)
            box = (int(x), int(y), int(x + rng.integers(6, 11)), int(y + rng.integers(6, 11)))
            draw = ImageDraw.Draw(image)
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
            image.save(root / name / f"{i}.png")


@pytest.mark.slow
def test_colour_reaches_the_network(tmp_path):
    """With --color the classes are told apart; in grayscale every image is one flat gray, and training can
    only end at chance (which train calls an error rather than save)."""
    shapes_in_colours(tmp_path / "data" / "train", 100, seed=1)
    shapes_in_colours(tmp_path / "data" / "test", 30, seed=2)
    flags = ["train", "--data", tmp_path / "data", "--image-size", "16", "--hidden", "24", "--epochs", "30",
             "--optimizer", "adam", "--lr", "0.01", "--activation", "relu",
             "--plot", tmp_path / "e.png"]
    colour = subprocess.run([sys.executable, "-m", "fastnet", *map(str, flags), "--color", "--out",
                             tmp_path / "colour.npz"], env=ENV, capture_output=True, text=True, timeout=600)
    assert colour.returncode == 0, colour.stderr
    assert float(colour.stdout.split("test accuracy ")[-1].split("%")[0]) >= 99.0, colour.stdout
    assert list(load_parameters(tmp_path / "colour.npz").input_shape) == [16, 16, 3]
    gray = subprocess.run([sys.executable, "-m", "fastnet", *map(str, flags), "--out", tmp_path / "gray.npz"],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert gray.returncode == 1 and "training ended at chance accuracy" in gray.stderr, gray.stdout + gray.stderr
    assert not (tmp_path / "gray.npz").exists()


def test_digit_classes_get_mnist_preparation_only_when_their_images_look_like_mnist(tmp_path, mnist_test):
    """Classes 0/ 1/ 2/ of dark bars on light paper trained resized, but were saved as 'digit', so predict
    inverted, cropped and centred new images as training never had: 7.5% where training said 100%."""
    images, labels = mnist_test
    for name, paper in (("mnist-like", None), ("on-paper", 230)):
        for digit in range(3):
            folder = tmp_path / name / str(digit)
            folder.mkdir(parents=True)
            for i, image in enumerate(images[labels == digit][:5]):
                pixels = image.reshape(28, 28) if paper is None else np.full((28, 28), paper, np.uint8)
                if paper is not None:
                    pixels[4:24, 4 + 6 * digit:8 + 6 * digit] = 20 + i  # a dark bar: the class is its place
                Image.fromarray(pixels).save(folder / f"{i}.png")
    assert load_data(str(tmp_path / "mnist-like"), val_split=0.2).preprocessing == "digit"
    assert load_data(str(tmp_path / "on-paper"), val_split=0.2).preprocessing == "resize"
    assert load_data(str(tmp_path / "mnist-like"), val_split=0.2, image_size=(20, 20)).preprocessing == "resize"
