"""How the Numba kernels store a network: hidden units in blocks of BLOCK, each block contiguous and aligned.

Threads own whole blocks of every hidden layer (block blk belongs to worker
blk % workers), so no two threads ever write one cache line, and every weight is
updated by one thread with the same operations in the same order whatever the
thread count: training is race-free and bit-identical for 1 or 2 threads.

    W1  (blocks of H_1, D, BLOCK)          the first layer, in blocks of its output units: the forward adds
                                           one input's row of BLOCK weights per input (sparse or dense)
    W   W_2 .. W_L, (blocks of H_{l-1}, fan_out, BLOCK)
                                           every later layer transposed, in blocks of its input units: the
                                           backward adds one output's row per output
    b   b_1 .. b_{L-1}, (blocks of H_l, BLOCK); b_out (K,)
Padding units (past H_l in the last block) have zero weights and zero activations, and stay so.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

BLOCK = 64  # units per block: four 16-float or eight 8-float vectors
CACHE_LINE = 128  # bytes: Apple's Arm cores' line; two of x86's 64-byte lines (fetched in pairs)


class Blocked(NamedTuple):
    """A network's parameters, or an optimiser's moments of the same shapes, in blocks (module docstring)."""

    W1: np.ndarray
    W: tuple
    b: tuple
    b_out: np.ndarray


def n_blocks(units: int) -> int:
    return -(-units // BLOCK)


def aligned_zeros(shape) -> np.ndarray:
    """float32 zeros whose data starts on a cache line, so that every BLOCK-float row (256 bytes) is whole
    vectors in whole lines, and blocks owned by different threads never share a line. numpy aligns to 16 bytes
    and Numba to 32: at those, every vector load and store straddled two lines."""
    size = int(np.prod(shape))
    raw = np.zeros(size + CACHE_LINE // 4, np.float32)
    first = (-raw.ctypes.data % CACHE_LINE) // 4
    return raw[first:first + size].reshape(shape)


def _blocked(matrix: np.ndarray) -> np.ndarray:
    """(R, H) -> (blocks, R, BLOCK), cache-line aligned, the padding units at zero."""
    rows, units = matrix.shape
    blocks = aligned_zeros((n_blocks(units), rows, BLOCK))
    for blk in range(blocks.shape[0]):
        part = matrix[:, blk * BLOCK:(blk + 1) * BLOCK]
        blocks[blk, :, :part.shape[1]] = part
    return blocks


def _unblocked(array: np.ndarray, units: int) -> np.ndarray:
    """(blocks, R, BLOCK) -> (R, H)."""
    return array.transpose(1, 0, 2).reshape(array.shape[1], -1)[:, :units]


def to_blocks(params: list[np.ndarray]) -> Blocked:
    """[W_1, b_1, ..., W_L, b_L] (W_l (fan_in, fan_out)) in blocks; copies."""
    weights, biases = params[0::2], params[1::2]
    return Blocked(_blocked(weights[0]), tuple(_blocked(w.T) for w in weights[1:]),
                   tuple(_blocked(b[None, :])[:, 0, :] for b in biases[:-1]), biases[-1].astype(np.float32))


def from_blocks(blocked: Blocked, params: list[np.ndarray]) -> None:
    """Write blocked back into params, in place."""
    weights, biases = params[0::2], params[1::2]
    weights[0][...] = _unblocked(blocked.W1, weights[0].shape[1])
    for weight, blocks in zip(weights[1:], blocked.W):
        weight[...] = _unblocked(blocks, weight.shape[0]).T
    for bias, blocks in zip(biases[:-1], blocked.b):
        bias[...] = blocks.reshape(-1)[:bias.size]
    biases[-1][...] = blocked.b_out
