"""Reader for the IDX format of the MNIST files (http://yann.lecun.com/exdb/mnist/), gzipped or not.

An IDX file is: two zero bytes, a type byte (0x08 = uint8), the number of
dimensions, each dimension as a big-endian uint32, then the data, row-major.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import numpy as np

from .errors import FastnetError

UNSIGNED_BYTE = 0x08
CHUNK = 1 << 20
DEFLATE_MAX_RATIO = 1032  # deflate never compresses better than this


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (.gz or raw): uint8, writable, C-contiguous.

    Decompresses straight into the final array, so a 47 MB file never exists twice.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        capacity = path.stat().st_size * (DEFLATE_MAX_RATIO if gzipped else 1)
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as file:
            return _read(file, str(path), capacity)
    except FileNotFoundError:
        raise FastnetError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as error:
        raise FastnetError(f"{path}: cannot read or decompress ({error}); replace it with a good copy") from None


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """The array stored in IDX bytes, checking the magic number, dimensions and size."""
    return _read(io.BytesIO(raw), name, len(raw))


def _read(file, name: str, capacity: int) -> np.ndarray:
    """Read an IDX stream; capacity bounds the bytes it can hold, so a lying header allocates nothing."""
    magic = file.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise FastnetError(f"{name}: not an IDX file (bad magic number {magic.hex() or 'empty'})")
    if magic[2] != UNSIGNED_BYTE:
        raise FastnetError(f"{name}: IDX element type 0x{magic[2]:02x} is not supported (only 0x08, unsigned bytes)")
    ndim = magic[3]
    dims = file.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise FastnetError(f"{name}: truncated IDX header ({4 + len(dims)} bytes for {ndim} dimensions)")
    shape = tuple(int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim))
    size = int(np.prod(shape, dtype=object))
    if size > capacity:
        raise FastnetError(f"{name}: truncated IDX file: header says shape {shape} ({size} bytes of data), "
                           f"more than the file can hold; replace it with a good copy")
    array = np.empty(size, np.uint8)
    view, got = memoryview(array), 0
    while got < size:  # in chunks: GzipFile.readinto of everything at once makes a full temporary copy
        count = file.readinto(view[got:got + CHUNK])
        if not count:
            break
        got += count
    extra = len(file.read(1))
    if got != size or extra:
        found = f"{got} bytes of data" if got != size else "more data than that"
        kind = "truncated" if got != size else "too long"
        raise FastnetError(f"{name}: {kind} IDX file: header says shape {shape} ({size} bytes of data), "
                           f"found {found}; replace it with a good copy")
    return array.reshape(shape)
