"""Reader for the IDX format of the MNIST files (http://yann.lecun.com/exdb/mnist/), gzipped or not.

An IDX file is: two zero bytes, a type byte (0x08 = uint8), the number of
dimensions, each dimension as a big-endian uint32, then the data, row-major.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .errors import FastnetError

UNSIGNED_BYTE = 0x08


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (.gz or raw), writable and C-contiguous, uint8."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise FastnetError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as error:
        raise FastnetError(f"{path}: cannot read or decompress ({error}); replace it with a good copy") from None
    return parse_idx(bytearray(raw), str(path))


def parse_idx(raw: bytearray, name: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes, checking the magic number, dimensions and size."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise FastnetError(f"{name}: not an IDX file (bad magic number {bytes(raw[:4]).hex() or 'empty'})")
    if raw[2] != UNSIGNED_BYTE:
        raise FastnetError(f"{name}: IDX element type 0x{raw[2]:02x} is not supported (only 0x08, unsigned bytes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise FastnetError(f"{name}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "too long"
        raise FastnetError(f"{name}: {kind} IDX file: header says shape {shape} ({expected} bytes), "
                           f"file has {len(raw)} bytes; replace it with a good copy")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)
