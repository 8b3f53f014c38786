"""The first layer's input, as the Numba kernels read it: the ink index of mostly-zero inputs, or the dense rows.

Most of an MNIST digit is zero (81% of its pixels), and so is most of any image of strokes on a blank
background, whether as uint8 pixels or as floats a user scaled to [0, 1]. For such inputs `prepare` lists once
where each row is nonzero and the values there, side by side, and the first layer touches only those rows of
W1: a shuffled batch then costs one cache miss per image and array, not one per pixel, and there is never a
float copy of the data. Inputs with fewer zeros (colour photos, standardised features) are read as they are.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .intrinsics import append_nonzero64, prefetch
from .jit import ieee_jit, inline_jit

SPARSE_FROM = 0.5  # share of zero inputs from which the first layer reads only the nonzero ones


class InkIndex(NamedTuple):
    """Per row n, its nonzero inputs in order: their positions pixels[start[n]:start[n+1]] (uint16, or uint32
    for more than 65,536 inputs) and their values (the inputs' dtype, uint8 or float32) at the same places."""

    start: np.ndarray
    pixels: np.ndarray
    values: np.ndarray


class Dense(NamedTuple):
    """Rows read as they are: (N, D) uint8 or float32, C-contiguous."""

    inputs: np.ndarray


def position_dtype(n_inputs: int) -> type:
    return np.uint16 if n_inputs <= 1 << 16 else np.uint32


def is_sparse(inputs: np.ndarray) -> bool:
    """Whether the first layer should read only the nonzero inputs (SPARSE_FROM)."""
    return _sparse_by_count(inputs, np.count_nonzero(inputs))


def _sparse_by_count(inputs: np.ndarray, nonzero: int) -> bool:
    return bool(inputs.size > 0 and nonzero <= (1 - SPARSE_FROM) * inputs.size)


def prepare(inputs: np.ndarray, *, sparse: bool | None = None) -> InkIndex | Dense:
    """The training data as the Numba kernels read it: its ink index if it is mostly zeros (or sparse says so:
    a few rows read as the whole data is), else the rows.

    Compiled, one pass to count each row's ink (which also decides sparse) and one to list it: 2-3x the speed
    of ink_index's numpy.
    """
    if sparse is not None and not sparse:
        return Dense(inputs)
    start = np.zeros(len(inputs) + 1, np.int64)
    _count_ink(inputs, start)
    np.cumsum(start, out=start)
    if sparse is None and not _sparse_by_count(inputs, int(start[-1])):
        return Dense(inputs)
    # room for append_ink's whole words past the last row's ink
    room = int(start[-1]) + inputs.shape[1] + 64
    pixels, values = np.empty(room, position_dtype(inputs.shape[1])), np.empty(room, inputs.dtype)
    _list_ink(inputs, start, pixels, values)
    return InkIndex(start, pixels[:start[-1]], values[:start[-1]])


@ieee_jit
def _count_ink(inputs, start):
    """start[n + 1] = how many inputs of row n are nonzero (NaN included, as the listing below counts it: both
    compare by IEEE rules, not fastmath's, which may take NaN for zero in one loop and not in the other)."""
    for n in range(inputs.shape[0]):
        row = inputs[n]
        count = 0
        for p in range(row.size):
            count += row[p] != 0
        start[n + 1] = count


@ieee_jit
def _list_ink(inputs, start, pixels, values):
    """Every row's ink at start[n] (the counts summed), by prediction's append_ink (8-input words)."""
    for n in range(inputs.shape[0]):
        append_ink(inputs[n], pixels, values, start[n], None)


def ink_index(inputs: np.ndarray, chunk: int = 4096) -> InkIndex:
    """The ink index of inputs (N, D), whatever their share of zeros, in numpy: prepare's reference twin.

    A chunk of rows at a time, so the temporaries stay a few MB.
    """
    n_rows, n_inputs = inputs.shape
    start = np.zeros(n_rows + 1, np.int64)
    for first in range(0, n_rows, chunk):
        start[first + 1:first + chunk + 1] = np.count_nonzero(inputs[first:first + chunk], axis=1)
    np.cumsum(start, out=start)
    pixels = np.empty(start[-1], position_dtype(n_inputs))
    values = np.empty(start[-1], inputs.dtype)
    positions = np.arange(n_inputs, dtype=pixels.dtype)
    for first in range(0, n_rows, chunk):
        block = inputs[first:first + chunk]
        ink = block != 0  # selected in row-major order: each row's inputs in increasing order
        lo, hi = start[first], start[min(first + chunk, n_rows)]
        pixels[lo:hi] = np.broadcast_to(positions, block.shape)[ink]
        values[lo:hi] = block[ink]
    return InkIndex(start, pixels, values)


@inline_jit
def ink_span(ink, row):
    """Where row's entries lie in the ink index, first and end, as unsigned integers: Numba adds a
    negative-index check to every access with a signed index, which slowed the loops over them by ~5%."""
    start = ink[0]
    return np.uint64(start[row]), np.uint64(start[row + 1])


@inline_jit
def four_inputs(ink, t, scale):
    """Ink entries t..t+3 (t unsigned): their positions and their values times scale."""
    _, pixels, values = ink
    t1, t2, t3 = t + np.uint64(1), t + np.uint64(2), t + np.uint64(3)
    return (pixels[t], pixels[t1], pixels[t2], pixels[t3], values[t] * scale, values[t1] * scale,
            values[t2] * scale, values[t3] * scale)


@inline_jit
def prefetch_row(ink, row):
    """Start loading a row's ink entries, to be read a little later (one cache line in 32 positions)."""
    start, pixels, values = ink
    first, end = start[row], start[row + 1]
    for t in range(first, end, 32):
        prefetch(pixels, t)
    for t in range(first, end, 64 // values.itemsize):
        prefetch(values, t)
    prefetch(pixels, end - 1)
    prefetch(values, end - 1)


@inline_jit
def append_ink(row, pixels, values, count, vector_compress):
    """Write row's nonzero inputs (positions and values) at pixels[count:] and values[count:]; returns the new
    count.

    Either 64 inputs per vector compress (intrinsics.append_nonzero64; vector_compress True, uint8 rows with
    uint16 positions only), or (None) 8 at a time: blank 8-input words, most of them, are skipped whole, and
    within the others every input is written and the count advances on ink (no branch). Either way the buffers
    need room for the whole row and 64 places more.
    """
    done = 0
    if vector_compress is not None:
        while done + 64 <= row.size:
            count = append_nonzero64(row, done, pixels, values, count)
            done += 64
    else:
        while done + 8 <= row.size:
            if ((row[done] != 0) | (row[done + 1] != 0) | (row[done + 2] != 0) | (row[done + 3] != 0)  # no branch
                    | (row[done + 4] != 0) | (row[done + 5] != 0) | (row[done + 6] != 0) | (row[done + 7] != 0)):
                for p in range(done, done + 8):
                    pixels[count], values[count] = p, row[p]
                    count += row[p] != 0
            done += 8
    for p in range(done, row.size):
        pixels[count], values[count] = p, row[p]
        count += row[p] != 0
    return count
