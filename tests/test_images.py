"""Finding and decoding image files as they lie on disk: FIFOs, link loops, unreadable folders, images that break
a decoder, and interruption while decoding. Only regular files are read; what cannot be read is listed, once."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastnet.images import decode_all

from .test_predict import fastnet_cli


def digit_png(path: Path, value: int = 255) -> Path:
    array = np.zeros((28, 28), np.uint8)
    array[6:22, 12:16] = value  # a '1': MNIST-like, light on dark
    Image.fromarray(array).save(path)
    return path


def skip_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("skipped ")]


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
    rows, failures = decode_all(paths, preprocessing="resize", workers=workers)
    assert [(path.name, "not a readable image" in reason) for path, reason in failures] == [("exif.png", True)]
    assert (rows[0] == 200).all()  # LAB's lightness, as gray
    assert rows[2].any() and (rows[3:] == rows[2]).all()


def test_predict_skips_an_image_that_breaks_the_decoder(tmp_path):
    digit_png(tmp_path / "good.png")
    lab_tiff(tmp_path / "lab.tif")
    png_with_broken_exif(tmp_path / "exif.png")
    result = fastnet_cli("predict", tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "good.png" in result.stdout and "lab.tif" in result.stdout
    lines = skip_lines(result.stderr)
    assert len(lines) == 1 and "exif.png" in lines[0]
