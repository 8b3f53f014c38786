"""`fastnet fetch`: download the MNIST IDX files from public mirrors, verified, for `train --data DIR`.

fastnet ships MNIST, so this is for a fresh copy or another machine. Each file
is tried at each mirror in turn (with a timeout) until one verifies: the
SHA-256 of the decompressed bytes must be MNIST's (mirrors gzip differently,
the content is the same). Files are written atomically; a failed fetch leaves
nothing half-written.
"""

from __future__ import annotations

import gzip
import hashlib
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from .datasets import MNIST_FILES
from .errors import FastnetError
from .files import write_atomically

# The mirrors torchvision (datasets.MNIST) and TensorFlow Datasets (mnist) download from.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
SHA256 = {  # of the decompressed files
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MAX_BYTES = 64 << 20  # the largest file is 9.9 MB; refuse anything far bigger


def verified(name: str, data: bytes) -> bool:
    try:
        return hashlib.sha256(gzip.decompress(data)).hexdigest() == SHA256[name]
    except (OSError, EOFError, zlib.error):
        return False


def download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError("larger than any MNIST file")
    return data


def fetch(destination: str | Path, mirrors: list[str] | tuple[str, ...] = MIRRORS, timeout: float = 30.0,
          report=print) -> list[Path]:
    """Download and verify the four MNIST files into destination; returns their paths."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    names = [name for pair in MNIST_FILES.values() for name in pair]
    written = []
    for name in names:
        target = destination / name
        if target.exists() and verified(name, target.read_bytes()):
            report(f"{target}: already here and verified")
            written.append(target)
            continue
        tried = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                data = download(url, timeout)
            except (urllib.error.URLError, OSError, ValueError) as error:
                tried.append(f"{url}: {getattr(error, 'reason', error)}")
                continue
            if not verified(name, data):
                tried.append(f"{url}: wrong or damaged content (SHA-256 of the data does not match MNIST)")
                continue
            write_atomically(target, lambda file: file.write(data))
            report(f"{target}: downloaded from {mirror} and verified")
            written.append(target)
            break
        else:
            raise FastnetError(f"could not download {name} from any mirror ({'; '.join(tried)}); are you offline? "
                               "Check the connection or give another --mirror URL")
    return written
