"""Finding image files and decoding them into 784-pixel rows, one process per core.

Shared by `predict` (MNIST-style digits) and folder datasets (plain 28x28). What cannot be read (a FIFO or
device named like an image, a link that loops or leads nowhere, a folder that cannot be listed, an image that
does not decode) is skipped and returned as (path, reason), the reason never repeating the path: skip_line
makes the line users see, path_text the way every output names a file.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .errors import FastnetError
from .files import _kind
from .preprocess import load_digit

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}


def path_text(path: str | os.PathLike) -> str:
    """path as text that can always be written: each byte of its name that is not UTF-8 (Linux allows any) as
    \\xNN, as Python writes such names on stderr. Every output (table, csv, json, skipped lines) names files
    this way, so they stay valid UTF-8 and agree with each other; only a name holding a backslash, 'x' and two
    hex digits as such could read the same."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def skip_line(path: str | os.PathLike, reason: str) -> str:
    """The line that lists a skipped file or folder."""
    return f"skipped {path_text(path)}: {reason}"


def plural(count: int, noun: str) -> str:
    """'1 image', '2 images'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def not_a_file(path: str | os.PathLike) -> str:
    """Why path, which is not a folder and not a regular file, is not read (OSError where it cannot be looked at)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a link to nothing (its target is missing)"
    return f"is {_kind(mode)}, not an image file; only regular files are read"


def image_files(folder: str | Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files under folder (recursive; each folder's files sorted by name, then its subfolders), hidden
    files and non-images passed over; and (path, reason) for each image name or folder that cannot be read.

    Only regular files are listed: a reader of a FIFO named like an image waits forever. A folder is searched
    once, however many links lead to it (found by device and inode): a link back up would never end. Plain
    strings and os.scandir: pathlib objects cost more than the listing itself for 70,000 files."""
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    searched: set[tuple[int, int]] = set()
    pending = [str(folder)]  # a stack, not recursion: a deep tree would exceed Python's recursion limit
    while pending:
        path = pending.pop()
        found, subfolders = [], []
        try:
            status = os.stat(path)
            if (status.st_dev, status.st_ino) in searched:
                continue  # reached again through a link: its images are listed once already
            searched.add((status.st_dev, status.st_ino))
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.is_dir():
                            subfolders.append(entry.path)
                        elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                            if entry.is_file():  # from the listing itself, without a stat, but for links
                                found.append(entry.path)
                            else:
                                skipped.append((entry.path, not_a_file(entry.path)))
                    except OSError as error:  # a link that loops, or leads where we may not look
                        skipped.append((entry.path, f"cannot look at it ({error.strerror or error})"))
        except OSError as error:
            skipped.append((path, f"cannot list the folder ({error.strerror or error})"))
            continue
        files += sorted(found)
        pending += sorted(subfolders, reverse=True)
    return files, skipped


def _decode_chunk(paths: list[str], invert: str, preprocessing: str) -> tuple[np.ndarray, list[tuple[int, str]]]:
    rows = np.zeros((len(paths), 784), np.uint8)
    failures = []
    for i, path in enumerate(paths):
        try:
            rows[i] = load_digit(path, invert, preprocessing)
        except Exception as error:  # Pillow's decoders raise many kinds on odd bytes: one image, not the run
            reason = str(error) if isinstance(error, FastnetError) else \
                f"not a readable image ({type(error).__name__}: {error})"
            failures.append((i, reason.removeprefix(f"{path}: ")))  # the caller names the file, once
    return rows, failures


def decode_all(paths: list, invert: str = "auto", preprocessing: str = "digit", workers: int | None = None,
               progress: str = "") -> tuple[np.ndarray, list[tuple[object, str]]]:
    """(N, 784) uint8 rows for paths (fastnet.preprocess.load_digit), and (path, reason) for each unreadable one
    (its row stays 0). With progress, a counter labelled so on stderr."""
    workers = workers or os.cpu_count() or 1
    names = [str(p) for p in paths]
    chunk = max(64, -(-len(names) // (workers * 8)))
    starts = range(0, len(names), chunk)
    jobs = ([names[s:s + chunk] for s in starts], [invert] * len(starts), [preprocessing] * len(starts))
    rows, failures, done = np.zeros((len(names), 784), np.uint8), [], 0
    if workers == 1 or len(starts) <= 1:  # nothing to share out (or nothing at all)
        results = map(_decode_chunk, *jobs)
        pool = None
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        results = pool.map(_decode_chunk, *jobs)
    try:
        for start, (part, fails) in zip(starts, results):
            rows[start:start + len(part)] = part
            failures += [(paths[start + i], reason) for i, reason in fails]
            done += len(part)
            if progress:
                print(f"\r{progress}: {done:,}/{len(names):,} images", end="", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if progress:
        print(file=sys.stderr)
    return rows, failures
