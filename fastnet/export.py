"""`fastnet export DIR`: the shipped MNIST as DIR/train/<label>/*.png and DIR/test/<label>/*.png.

Written in parallel into a temporary folder beside DIR, renamed to DIR only
when complete: an interrupted export leaves no half-written dataset.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .datasets import MNIST_CLASSES, load_mnist
from .errors import FastnetError


def _write_pngs(folder: str, names: list[str], images: np.ndarray) -> int:
    for name, image in zip(names, images):
        Image.fromarray(image.reshape(28, 28)).save(os.path.join(folder, name), "PNG")
    return len(names)


def export(destination: Path, splits=("train", "test"), workers: int | None = None) -> int:
    """Write the splits as PNG folders under destination (which must not exist); returns images written."""
    destination = Path(destination)
    if destination.exists():
        raise FastnetError(f"{destination} already exists; choose a new folder (nothing was written)")
    if not destination.parent.is_dir():
        raise FastnetError(f"{destination.parent}: no such folder")
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial"))
    try:
        jobs = []
        for split in splits:
            images, labels = load_mnist(split)
            for label, name in enumerate(MNIST_CLASSES):
                (staging / split / name).mkdir(parents=True)
                rows = np.flatnonzero(labels == label)
                for start in range(0, len(rows), 1000):
                    chunk = rows[start:start + 1000]
                    jobs.append((str(staging / split / name), [f"{i:05d}.png" for i in chunk], images[chunk]))
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        written, total = 0, sum(len(j[1]) for j in jobs)
        with ProcessPoolExecutor(workers or os.cpu_count(), mp_context=multiprocessing.get_context(method)) as pool:
            for count in pool.map(_write_pngs, *zip(*jobs)):
                written += count
                print(f"\rexport: {written:,}/{total:,} images", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written
