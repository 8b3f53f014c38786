"""Image-folder datasets, as the original project had them: one subfolder per class.

    DIR/train/<class>/*.png and DIR/test/<class>/*.png,   or   DIR/<class>/*.png

Class names are the sorted subfolder names (digits or anything else). Every
image Pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP, ...), in any mode, becomes
one uint8 image of the size asked for (28x28 unless told), grayscale or RGB:
transparency composited onto white (fastnet.preprocess.grayscale, colour),
resized with Pillow's area-averaging BOX filter when shrinking and bicubic when
growing, without keeping the aspect ratio. Nothing else is changed: the images
train as they are, like MNIST's. A row holds an image's pixels in (height,
width, channel) order. Hidden files and non-images are passed over;
what cannot be read (unreadable images, a FIFO named like one, a folder that
cannot be listed, a link that loops) is skipped and listed on every load
(strict=True makes it an error).

Decoding runs in one process per core, and the result is cached in one file
beside the dataset (.fastnet-cache.npz), keyed on every file's name, size,
modification time, mode and owner: adding, removing or changing any image, or
who may read it, rebuilds it; a damaged cache is rebuilt too. What else decides
whether a file reads (an ACL, a file mended in place with its time kept) the key
cannot see, so the skipped images are tried again on every load, and the cache
rebuilt when one reads now.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from .errors import FastnetError
from .files import read_npz, write_atomically, write_npz
from .images import decode_all, image_files, path_text, plural, skip_line
from .memory import check_fits
from .preprocess import Prep

CACHE_NAME = ".fastnet-cache.npz"


def class_folders(root: Path) -> list[Path]:
    """The class subfolders of root, sorted by name; a clear error if there are none."""
    if not root.is_dir():
        raise FastnetError(f"{root}: no such folder")
    try:
        folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                         key=lambda p: p.name)
    except OSError as error:
        raise FastnetError(f"{root}: cannot list the folder ({error.strerror or error})") from None
    if not folders:
        raise FastnetError(f"{root}: no class folders; expected {root}/<class>/<image files> "
                           f"(or {root}/train/<class>/ and {root}/test/<class>/)")
    return folders


def _fingerprint(files: list[str], root: Path) -> str:
    """A digest of every file's path (relative to root), size, modification time, mode and owner: what
    decides what it holds and whether it can be read."""
    digest = hashlib.sha256()
    skip = len(str(root)) + 1
    for path in files:
        try:
            status = os.stat(path)
            facts = f"{status.st_size}\0{status.st_mtime_ns}\0{status.st_mode}\0{status.st_uid}\0{status.st_gid}"
        except OSError as error:  # gone or unreachable since it was listed: decoding will skip it
            facts = f"error {error.errno}"
        digest.update(os.fsencode(path[skip:]) + f"\0{facts}\n".encode())  # any bytes: names need not be UTF-8
    return digest.hexdigest()


def _read_cache(path: Path, key: str, n_files: int, row_size: int):
    """The cached (images, labels, classes, failed), failed being [index in the files, reason] of each image
    that did not decode, or None where the cache is missing, damaged, foreign or stale: then it is rebuilt.
    Labels are checked against the classes: the kernels do not check indices."""
    try:
        cache = read_npz(path, ("key", "images", "labels", "classes", "skipped"), "dataset cache", max_bytes=None)
        if str(cache["key"]) != key:
            return None
        images, labels = cache["images"], cache["labels"]
        classes, failed = json.loads(str(cache["classes"])), json.loads(str(cache["skipped"]))
        valid = (images.dtype == np.uint8 and images.ndim == 2 and images.shape[1] == row_size
                 and labels.dtype == np.uint8 and labels.shape == (len(images),)
                 and isinstance(classes, list) and all(isinstance(name, str) for name in classes)
                 and isinstance(failed, list) and len(images) + len(failed) == n_files
                 and all(isinstance(item, list) and len(item) == 2 and type(item[0]) is int
                         and 0 <= item[0] < n_files and isinstance(item[1], str) for item in failed)
                 and (labels.size == 0 or int(labels.max()) < len(classes)))
        return (np.ascontiguousarray(images), labels, classes, failed) if valid else None
    except Exception:  # missing, damaged or foreign: rebuild it
        return None


def _report_skipped(root: Path, skipped: list[tuple[str, str]], loaded: int) -> None:
    """The list of what was skipped, on every load (a cached one too: the files are still there)."""
    for path, reason in skipped:
        print(skip_line(path, reason), file=sys.stderr)
    if skipped:
        print(f"{root}: {len(skipped):,} skipped (listed above), {plural(loaded, 'image')} loaded", file=sys.stderr)


def _refuse_if_strict(root: Path, skipped: list[tuple[str, str]], strict: bool) -> None:
    """With strict, anything skipped is an error."""
    if skipped and strict:
        path, reason = skipped[0]
        raise FastnetError(f"{root}: {len(skipped):,} unreadable, e.g. {path_text(path)}: {reason} (without --strict "
                           "they are skipped)")


def load_folder(root: str | Path, strict: bool = False, cache: bool = True, progress: bool = True,
                prep: Prep = Prep("resize")) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """images (N, prep.row_size) uint8, labels (N,) uint8 and class names of a class-per-folder dataset (prep:
    the size and channels images are loaded at; 28x28 grayscale unless told)."""
    root = Path(root)
    folders = class_folders(root)
    classes = [path_text(folder.name) for folder in folders]  # a class name is text, whatever the folder's bytes
    if len(classes) > 256:
        raise FastnetError(f"{root}: {len(classes)} class folders; fastnet handles at most 256 classes")
    files, labels, skipped = [], [], []
    for label, folder in enumerate(folders):
        found, unreadable = image_files(folder, within=root)
        if not found:
            warnings.warn(f"{folder}: empty class folder (no images"
                          + (f"; {len(unreadable):,} skipped)" if unreadable else ")"), stacklevel=2)
        files += found
        labels += [label] * len(found)
        skipped += unreadable
    _refuse_if_strict(root, skipped, strict)  # before the work of decoding
    if not files:
        _report_skipped(root, skipped, 0)
        raise FastnetError(f"{root}: no images in its class folders ({', '.join(classes)})")
    key = _fingerprint(files, root) + json.dumps([classes, strict, list(prep)])
    cache_path = root / CACHE_NAME
    cached = _read_cache(cache_path, key, len(files), prep.row_size) if cache else None
    if cached is not None and cached[2] == classes:
        images, cached_labels, _, failed = cached
        retried = [files[i] for i, _ in failed]
        failures = decode_all(retried, prep)[1] if retried else []
        if len(failures) == len(retried):  # nothing reads that did not: the cache holds
            _report_skipped(root, skipped + failures, len(images))
            return images, cached_labels, classes
    # The decoded rows, and the copy that leaves out the images that cannot be read (a cache, read above, holds one).
    check_fits(2 * len(files) * prep.row_size, f"{root}: {len(files):,} images at {prep.width}x{prep.height}"
               + (" colour" if prep.channels == 3 else ""), "choose a smaller image size (--image-size)")
    images, failures = decode_all(files, prep, progress=f"decoding {root}" if progress else "")
    _refuse_if_strict(root, failures, strict)
    position = {path: i for i, path in enumerate(files)}
    failed = [[position[path], reason] for path, reason in failures]
    keep = np.ones(len(files), bool)
    keep[[i for i, _ in failed]] = False
    images, labels = np.ascontiguousarray(images[keep]), np.asarray(labels, np.uint8)[keep]
    _report_skipped(root, skipped + failures, len(images))
    if cache:
        try:
            write_atomically(cache_path, lambda file: write_npz(file, {
                "key": np.str_(key), "images": images, "labels": labels, "classes": np.str_(json.dumps(classes)),
                "skipped": np.str_(json.dumps(failed))}))
        except FastnetError:
            pass  # a read-only dataset still loads; it just is not cached
    return images, labels, classes


def has_train_and_test(root: Path) -> bool:
    """Whether root is a DIR/train/<class>/ + DIR/test/<class>/ dataset."""
    return (root / "train").is_dir() and (root / "test").is_dir()


def load_dataset(root: str | Path, val_split: float = 0.0, strict: bool = False, seed: int = 0,
                 prep: Prep = Prep("resize")):
    """((train images, labels), (test images, labels), class names) of a folder dataset.

    With DIR/train and DIR/test both present, those; else DIR's class folders,
    with a val_split fraction held out (seeded) as the test set."""
    root = Path(root)
    if has_train_and_test(root):
        train_images, train_labels, classes = load_folder(root / "train", strict, prep=prep)
        test_images, test_labels, test_classes = load_folder(root / "test", strict, prep=prep)
        if test_classes != classes:
            raise FastnetError(f"{root}: train/ and test/ have different class folders "
                               f"({', '.join(classes)} vs {', '.join(test_classes)})")
        return (train_images, train_labels), (test_images, test_labels), classes
    images, labels, classes = load_folder(root, strict, prep=prep)
    if not 0.0 < val_split < 1.0:
        raise FastnetError(f"{root} has no train/ and test/ folders: give --val-split (e.g. 0.1) to hold out "
                           "a share of its images for testing")
    order = np.random.default_rng(seed).permutation(len(images))
    held = max(1, int(round(val_split * len(images))))
    if held >= len(images):
        raise FastnetError(f"--val-split {val_split:g} of {root}'s {len(images)} images leaves none to train on; "
                           "use a smaller --val-split")
    test, train = np.sort(order[:held]), np.sort(order[held:])
    return (images[train], labels[train]), (images[test], labels[test]), classes
