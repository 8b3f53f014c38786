"""Prediction: probabilities for raw inputs, a group of 64 rows at a time per thread.

Inputs that are mostly zeros get their ink listed per group (ink.append_ink: one vector compress per 64
pixels where the compile target has one) and go through the first layer's sparse forward; others are read as
they are. Each thread takes a contiguous range of rows and has its own buffers.
"""

from __future__ import annotations

import functools

import numpy as np

from .common import input_scale
from .epoch import activation_flags, deep_flag
from .ink import InkIndex, append_ink, is_sparse, position_dtype
from .intrinsics import has_vector_compress
from .jit import jit
from .layers import first_forward_dense, first_forward_sparse, gather_forward, output_forward
from .layout import BLOCK, aligned_zeros, to_blocks
from .threads import run_workers, thread_count

GROUP = 64  # rows per pass through the layers


@jit
def _predict_rows(probs, inputs, params, widths, relu, tanh, deep, lo, hi, hidden, rows, listing, vector_compress,
                  scale):
    """probs[lo:hi] for inputs[lo:hi], GROUP rows at a time (hidden, rows, listing: this worker's own buffers;
    listing None: read the rows densely). Most of prediction's time goes here."""
    n_hidden = len(hidden)
    for first in range(lo, hi, GROUP):
        count = min(first + GROUP, hi) - first
        if listing is None:
            for n in range(count):
                rows[n] = first + n
            for blk in range(hidden[0].shape[0]):
                first_forward_dense(hidden[0], inputs, rows[:count], params.W1, params.b[0], relu, tanh, blk,
                                    min(BLOCK, widths[0] - blk * BLOCK), scale)
        else:
            start, pixels, values = listing
            start[0] = 0
            for n in range(count):  # the group's ink index
                rows[n] = n
                start[n + 1] = append_ink(inputs[first + n], pixels, values, start[n], vector_compress)
            ink = InkIndex(start, pixels, values)
            for blk in range(hidden[0].shape[0]):
                first_forward_sparse(hidden[0], ink, rows[:count], params.W1, params.b[0], relu, tanh, blk,
                                     min(BLOCK, widths[0] - blk * BLOCK), scale)
        # np.int64(0), not 0: a literal 0 is a type of its own, for which gather_forward and output_forward would
        # be compiled again, where now they share the epoch worker's compile (its shares of images start anywhere).
        zero = np.int64(0)
        if deep is not None:
            for i in range(1, n_hidden):
                gather_forward(hidden[i], hidden[i - 1], params.W[i - 1], params.b[i], relu, tanh, zero, count)
        output_forward(probs[first:first + count], hidden[n_hidden - 1], params.W[n_hidden - 1], params.b_out, zero,
                       count)


@functools.cache
def _vector_compress() -> bool | None:
    """True where prediction lists ink by vector compress (intrinsics.append_nonzero64), else None: Numba decides
    `is None` on an argument at compile time, so elsewhere the intrinsic is never even compiled. Asked once, when
    first predicting: the probe takes some 40 ms that training need not pay."""
    return True if has_vector_compress() else None


def _listing(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Buffers for one group's ink index: room for every input of GROUP rows, and 64 places more."""
    size = GROUP * inputs.shape[1] + 64
    return (np.empty(GROUP + 1, np.int64), np.empty(size, position_dtype(inputs.shape[1])),
            np.empty(size, inputs.dtype))


def predict(probs, inputs, params, activation):
    """probs (N, K) for inputs (N, D) uint8 or float32; threads take contiguous ranges of rows."""
    inputs = np.ascontiguousarray(inputs)
    n_workers = max(1, min(thread_count(), len(inputs) // 256))
    bounds = np.linspace(0, len(inputs), n_workers + 1).astype(np.int64)
    blocked = to_blocks(params)
    widths = np.array([w.shape[1] for w in params[0:-2:2]], np.int64)
    relu, tanh = activation_flags(activation)
    deep = deep_flag(params)
    sparse = is_sparse(inputs)
    compress = _vector_compress() if sparse and inputs.dtype == np.uint8 and inputs.shape[1] <= 1 << 16 else None
    scale = np.float32(input_scale(inputs.dtype))

    def work(worker):
        hidden = tuple(aligned_zeros((len(b), GROUP, BLOCK)) for b in blocked.b)
        _predict_rows(probs, inputs, blocked, widths, relu, tanh, deep, bounds[worker], bounds[worker + 1], hidden,
                      np.empty(GROUP, np.int64), _listing(inputs) if sparse else None, compress, scale)

    run_workers(n_workers, work)
