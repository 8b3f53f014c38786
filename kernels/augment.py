"""Augmentation inside the epoch: each image, as the epoch reaches it, through its own random affine transform
(common.Augment), from the ink index into a batch's own ink index that the first layer then reads.

The transform maps each output pixel back into the original and reads it bilinearly there (numpy_backend's
augment_images is the reference). Only output pixels that can have ink are visited: those whose source lies
within a pixel of the original's ink, found by mapping the ink's bounding box forward. A digit's ~150 ink
pixels then cost a scatter into a zeroed scratch image, ~500 bilinear reads and a clean-up: no float copy of
the data, no Python per image. An image whose transform is the identity (left as it is: common.TRANSFORMED)
has its ink copied.

The batch's index: image n of a batch slot s (0 or 1: batch b is written into slot b % 2 while the other
holds the batch before, whose backward still reads it) owns a fixed run of H * W * C entries from
(s * batch + n) * H * W * C; start[2k] is where run k begins and start[2k + 1] where its entries end, so the
first layer's kernels read image k as row 2k (ink.ink_span) and need no change.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .common import Augment
from .ink import InkIndex
from .jit import llvm_inline_jit


class Augmented(NamedTuple):
    """An epoch's augmentation as the kernels take it (module docstring): the transforms (N, 6) by position in
    the order, the batches' ink index (two slots), a zeroed scratch image per worker ((H + 2) * (W + 2) * C
    float32: a zero border around the image), rows 0, 2, 4, ... to read the index with, for each input its
    place in the scratch and its pixel's column and line (integer division is slow), the images' shape, and
    whether values are rounded (uint8 pixels)."""

    matrices: np.ndarray
    ink: InkIndex
    sources: np.ndarray
    local_rows: np.ndarray
    scratch_at: np.ndarray
    column: np.ndarray
    line: np.ndarray
    height: int
    width: int
    channels: int
    rounding: bool


def new_augmented(augment: Augment, batch_size: int, n_workers: int, ink: InkIndex) -> Augmented:
    """The buffers for an epoch with augment, for batches of batch_size images from ink."""
    height, width, channels = augment.shape
    run = height * width * channels
    runs = 2 * batch_size
    start = np.zeros(2 * runs + 1, np.int64)
    start[0:-1:2] = start[1::2] = np.arange(runs, dtype=np.int64) * run  # every run empty until written
    start[-1] = runs * run
    batches = InkIndex(start, np.zeros(runs * run, ink.pixels.dtype), np.zeros(runs * run, ink.values.dtype))
    sources = np.zeros((n_workers, (height + 2) * (width + 2) * channels), np.float32)
    line, column, channel = np.indices((height, width, channels)).reshape(3, -1)
    scratch_at = ((line + 1) * (width + 2) + column + 1) * channels + channel
    matrices = np.ascontiguousarray(augment.matrices, np.float32)
    return Augmented(matrices, batches, sources, np.arange(0, 2 * runs, 2, dtype=np.int64),
                     scratch_at.astype(np.int64), column.astype(np.int64), line.astype(np.int64), height, width,
                     channels, ink.values.dtype == np.uint8)


@llvm_inline_jit
def _within(a, b, low, high, limit):
    """The whole numbers x in [0, limit) for which low < a x + b < high might hold, as (first, end): a
    pixel wider on each side than the exact interval (the caller tests each x), empty where none."""
    if a == np.float32(0.0):
        return (0, limit) if low < b < high else (0, 0)
    lo, hi = (low - b) / a, (high - b) / a
    if a < np.float32(0.0):
        lo, hi = hi, lo
    return _whole_range(lo, hi, limit)


@llvm_inline_jit
def _whole_range(lo, hi, limit):
    """The whole numbers in [0, limit) within a pixel of (lo, hi), as (first, end); lo and hi are clamped to
    [-1, limit] first, so that the casts stay in range."""
    lo = min(max(lo, np.float32(-1.0)), np.float32(limit))
    hi = min(max(hi, np.float32(-1.0)), np.float32(limit))
    return max(0, np.int64(lo)), min(limit, np.int64(hi) + 2)


@llvm_inline_jit
def transform_image(ink, row, matrix, augmented, source, run):
    """Write image row of ink, through matrix (6,), into run `run` of augmented.ink; source is a zeroed scratch
    image, left zeroed."""
    start, pixels, values = ink
    width, channels = augmented.width, augmented.channels
    scratch_at, column, line = augmented.scratch_at, augmented.column, augmented.line
    out_start, out_pixels, out_values = augmented.ink
    padded = (width + 2) * channels
    first, end = start[row], start[row + 1]
    m0, m1, m2, m3, m4, m5 = matrix[0], matrix[1], matrix[2], matrix[3], matrix[4], matrix[5]
    one, zero = np.float32(1.0), np.float32(0.0)
    if (m0 == one and m1 == zero and m3 == zero and m4 == one and m2 == np.float32(np.int32(m2))
            and m5 == np.float32(np.int32(m5))):
        # A whole-pixel shift, the identity among them (common.affine_matrices): its ink moved by whole pixels,
        # what falls outside dropped, exactly what reading it bilinearly gives (weights of exactly 0 and 1),
        # without the scratch image and the reads. (Output pixel (x, y) reads input (x + m2, y + m5).)
        dx, dy = -np.int64(m2), -np.int64(m5)
        shift = (dy * width + dx) * channels
        count = np.uint64(out_start[2 * run])
        for t in range(first, end):
            p = pixels[t]
            x, y = column[p] + dx, line[p] + dy
            out_pixels[count], out_values[count] = p + shift, values[t]  # written always, kept if inside
            count += np.uint64((np.uint64(x) < np.uint64(width)) & (np.uint64(y) < np.uint64(augmented.height)))
        out_start[2 * run + 1] = np.int64(count)
        return
    x_lo, x_hi, y_lo, y_hi = width, -1, augmented.height, -1
    for t in range(first, end):  # the image into the scratch, and its ink's bounding box
        p = pixels[t]
        source[scratch_at[p]] = np.float32(values[t])
        x_lo, x_hi = min(x_lo, column[p]), max(x_hi, column[p])
        y_lo, y_hi = min(y_lo, line[p]), max(y_hi, line[p])
    count = np.uint64(out_start[2 * run])
    if x_hi >= 0:
        # Sources within a pixel of the ink box: beyond, all four pixels read are zero. Such an output pixel
        # lies in the box around the forward images of that box's corners (the forward map: matrix inverted).
        sx_lo, sx_hi = np.float32(x_lo - 1), np.float32(x_hi + 1)
        sy_lo, sy_hi = np.float32(y_lo - 1), np.float32(y_hi + 1)
        det = m0 * m4 - m1 * m3
        oy_lo, oy_hi = np.float32(1e30), np.float32(-1e30)
        for corner in range(4):
            sx = (sx_lo if corner & 1 == 0 else sx_hi) - m2
            sy = (sy_lo if corner & 2 == 0 else sy_hi) - m5
            oy = (m0 * sy - m3 * sx) / det
            oy_lo, oy_hi = min(oy_lo, oy), max(oy_hi, oy)
        y_first, y_end = _whole_range(oy_lo, oy_hi, augmented.height)
        top, right = np.float32(augmented.height), np.float32(width)
        for y in range(y_first, y_end):
            fy = np.float32(y)
            bx, by = m1 * fy + m2, m4 * fy + m5
            # this line's x with source x and source y in the ink box (each a pixel wide of it)
            a_first, a_end = _within(m0, bx, sx_lo, sx_hi, width)
            b_first, b_end = _within(m3, by, sy_lo, sy_hi, width)
            for x in range(max(a_first, b_first), min(a_end, b_end)):
                fx = np.float32(x)
                sx, sy = m0 * fx + bx, m3 * fx + by
                # The pixel read is clamped into the image and the weights into [0, 1]: a source outside
                # (-1, W) x (-1, H) then reads the zero border, as it should. (Unsigned index arithmetic: Numba
                # checks signed indices for wrapping around, which keeps loops slow.)
                # floor(sx) + 1, the scratch having a border (through int32: float to uint64 takes many steps)
                ix = np.int32(min(max(sx, -one), right - one) + one)
                iy = np.int32(min(max(sy, -one), top - one) + one)
                wx = min(max(sx - np.float32(ix - np.int32(1)), zero), one)
                wy = min(max(sy - np.float32(iy - np.int32(1)), zero), one)
                ix, iy = np.uint64(ix), np.uint64(iy)
                at = iy * np.uint64(padded) + ix * np.uint64(channels)
                below = at + np.uint64(padded)
                pixel = np.uint64((y * width + x) * channels)
                for c in range(np.uint64(channels)):
                    value = ((source[at + c] * (one - wx) + source[at + np.uint64(channels) + c] * wx) * (one - wy)
                             + (source[below + c] * (one - wx) + source[below + np.uint64(channels) + c] * wx) * wy)
                    if augmented.rounding:
                        value = np.float32(np.int32(value + np.float32(0.5)))
                    out_pixels[count] = pixel + c  # written always, kept if not zero
                    out_values[count] = value
                    count += np.uint64(value != zero)
    out_start[2 * run + 1] = np.int64(count)
    for t in range(first, end):  # the scratch back to zeros
        source[scratch_at[pixels[t]]] = np.float32(0.0)


@llvm_inline_jit
def transform_images(ink, order, first, end, augmented, source, first_run):
    """The images at positions first..end-1 of order, each through the transform at its position,
    into runs first_run, first_run + 1, ... of augmented.ink, with the scratch image source: a worker's share of
    a batch in the epoch, the first batch before it, and tests. Compiled on its own and inlined by LLVM into the
    epoch worker, as the layers are (jit.py), and so are the functions above, into it: inlined in Numba's IR
    instead, they took ~0.25 s longer to compile, for the same code."""
    for k in range(first, end):
        transform_image(ink, order[k], augmented.matrices[k], augmented, source, first_run + k - first)
