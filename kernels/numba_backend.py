"""The fast one: the same maths as numpy_backend.py, as explicit loops JIT-compiled by Numba.

float32 throughout (float32 literals, float32 arrays), fastmath so that the inner
loops over hidden units vectorise, cache=True so the compile is paid once.

Dimension legend: N batch, D inputs (784), H hidden units, K classes.

Why it is fast, and what each choice bought, is in docs/design.md; the docstrings
below say what a reader of each function needs. In short: the first layer reads
only each image's ink (prepare), hidden units live in cache-line-aligned blocks of
BLOCK that each thread owns whole (no races, bit-identical for any thread count),
running sums stay in registers (intrinsics.stack_floats), and a whole epoch is one
compiled call per thread, the threads meeting twice per batch (threads.py).
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import carray, njit

from .intrinsics import (append_nonzero64, float32_from_bits, has_vector_compress, load_acquire, nonzero_bits32,
                         prefetch, stack_floats, trailing_zeros)
from .threads import (SOLO_AT, STOP_AT, new_control, new_stop_flag, publish, run_workers, thread_count,
                      wait_for)

SIGMOID, RELU = 0, 1
INPUT_SCALE = np.float32(1.0 / 255.0)
BLOCK = 64
# Worker 0 goes on alone (_epoch_worker) once it has napped in more than one batch in SOLO_EVERY, judged over 16
# batches or more after the first SOLO_WARM_UP (whose naps, while caches and cores warm up, say nothing).
SOLO_EVERY = 4
SOLO_WARM_UP = 32
PIXEL_MAJOR_FROM = 16  # batches of this many images or more add their W1 gradient pixel by pixel; image by
# image is as fast or faster in smaller ones

jit = njit(cache=True, fastmath=True, nogil=True, error_model="numpy")
# Helpers are inlined (in Numba's IR) into the functions called from Python, so each of those
# carries one fixed copy of them. As separate functions, every caller linked its own optimised
# copy and the JIT bound calls to whichever loaded first: with fastmath reassociating sums
# differently in each copy, a freshly compiled run and a cached run differed in the last bits.
inline_jit = njit(cache=True, fastmath=True, nogil=True, error_model="numpy", inline="always")


class InkIndex(NamedTuple):
    """Per image n, its pixels with ink, in order: their positions pixels[start[n]:start[n+1]] and their
    values (uint8) at the same places in values. An image's whole input is read from one short run of
    each, so a batch in shuffled order costs one cache miss per image and array, not one per pixel."""

    start: np.ndarray
    pixels: np.ndarray
    values: np.ndarray


def prepare(images: np.ndarray, chunk: int = 4096) -> InkIndex:
    """The training data as this backend reads it: the images' ink index.

    numpy, a chunk of rows at a time, so the temporaries stay a few MB.
    """
    n_images, n_inputs = images.shape
    start = np.zeros(n_images + 1, np.int64)
    for first in range(0, n_images, chunk):
        start[first + 1:first + chunk + 1] = np.count_nonzero(images[first:first + chunk], axis=1)
    np.cumsum(start, out=start)
    pixels = np.empty(start[-1], np.uint16)
    values = np.empty(start[-1], np.uint8)
    positions = np.arange(n_inputs, dtype=np.uint16)
    for first in range(0, n_images, chunk):
        block = images[first:first + chunk]
        ink = block != 0  # selected in row-major order: each image's pixels in increasing order
        lo, hi = start[first], start[min(first + chunk, n_images)]
        pixels[lo:hi] = np.broadcast_to(positions, block.shape)[ink]
        values[lo:hi] = block[ink]
    return InkIndex(start, pixels, values)


# ---------------------------------------------------------------- blocked layout


class Blocked(NamedTuple):
    """Parameters (or velocities) with the hidden units in blocks of BLOCK, padding at zero."""

    W1: np.ndarray  # (blocks, D, BLOCK)
    b1: np.ndarray  # (blocks, BLOCK)
    W2: np.ndarray  # (blocks, K, BLOCK): W2 transposed
    b2: np.ndarray  # (K,)


CACHE_LINE = 128  # bytes: Apple's Arm cores' line; two of x86's 64-byte lines (fetched in pairs)


def aligned_zeros(shape) -> np.ndarray:
    """float32 zeros whose data starts on a cache line, so that every BLOCK-float row (256 bytes) is whole
    vectors in whole lines, and blocks owned by different threads never share a line. numpy aligns to 16 bytes
    and Numba to 32: at those, every vector load and store straddled two lines."""
    size = int(np.prod(shape))
    raw = np.zeros(size + CACHE_LINE // 4, np.float32)
    first = (-raw.ctypes.data % CACHE_LINE) // 4
    return raw[first:first + size].reshape(shape)


def _blocked(matrix, n_blocks):
    """(R, H) -> (blocks, R, BLOCK), cache-line aligned, the padding units at zero."""
    rows, n_hidden = matrix.shape
    blocks = aligned_zeros((n_blocks, rows, BLOCK))
    for blk in range(n_blocks):
        units = matrix[:, blk * BLOCK:(blk + 1) * BLOCK]
        blocks[blk, :, :units.shape[1]] = units
    return blocks


def _unblocked(array, n_hidden):
    """(blocks, R, BLOCK) -> (R, H)."""
    return array.transpose(1, 0, 2).reshape(array.shape[1], -1)[:, :n_hidden]


def to_blocks(params) -> Blocked:
    W1, b1, W2, b2 = params
    n_blocks = -(-W1.shape[1] // BLOCK)
    return Blocked(_blocked(W1, n_blocks), _blocked(b1[None, :], n_blocks).reshape(n_blocks, BLOCK),
                   _blocked(W2.T, n_blocks), b2.astype(np.float32))


def from_blocks(blocks: Blocked, params) -> None:
    W1, b1, W2, b2 = params
    n_hidden = W1.shape[1]
    W1[...] = _unblocked(blocks.W1, n_hidden)
    b1[...] = _unblocked(blocks.b1[:, None, :], n_hidden)[0]
    W2[...] = _unblocked(blocks.W2, n_hidden).T
    b2[...] = blocks.b2


# ---------------------------------------------------------------- one block of hidden units
# Each kernel below works on block `blk` of the hidden units, for a batch of images.
# Inner loops run over range(BLOCK), a constant from 0: LLVM unrolls them into four
# vector FMAs (with a variable signed start Numba adds a negative-index check that
# stops vectorisation; checked in the assembly).


# exp(-z) = 2^y with y = -z log2(e) = k + f, k = round(y), |f| <= 1/2: 2^f by its Taylor series to f^6
# (relative error 1.2e-7, float32's epsilon) and 2^k by writing k + 127 into a float's exponent bits.
# Unlike a call to libm's expf, LLVM vectorises this: 16 sigmoids per instruction sequence.
LOG2E = np.float32(1.4426950408889634)
EXP2_TAYLOR = tuple(np.float32(np.log(2.0) ** i / math.factorial(i)) for i in range(1, 7))


@inline_jit
def _sigmoid(z):
    """1 / (1 + exp(-z)), vectorisable (see EXP2_TAYLOR); z is clamped to +-87, where float32's exp ends."""
    c1, c2, c3, c4, c5, c6 = EXP2_TAYLOR
    y = min(max(-z, np.float32(-87.0)), np.float32(87.0)) * LOG2E
    k = np.floor(y + np.float32(0.5))
    f = y - k
    two_f = np.float32(1.0) + f * (c1 + f * (c2 + f * (c3 + f * (c4 + f * (c5 + f * c6)))))
    return np.float32(1.0) / (np.float32(1.0) + two_f * float32_from_bits((np.int32(k) + np.int32(127)) << 23))


@inline_jit
def _ink_span(ink, image):
    """Where image's entries lie in the ink index, first and end, as unsigned integers: Numba adds a
    negative-index check to every access with a signed index, which slowed the loops over them by ~5%."""
    start = ink[0]
    return np.uint64(start[image]), np.uint64(start[image + 1])


@inline_jit
def _four_ink_pixels(ink, t):
    """Ink entries t..t+3 (t unsigned): their pixel positions and their values scaled to [0, 1]."""
    _, pixels, values = ink
    t1, t2, t3 = t + np.uint64(1), t + np.uint64(2), t + np.uint64(3)
    return (pixels[t], pixels[t1], pixels[t2], pixels[t3], values[t] * INPUT_SCALE,
            values[t1] * INPUT_SCALE, values[t2] * INPUT_SCALE, values[t3] * INPUT_SCALE)


@inline_jit
def _prefetch_image(ink, image):
    """Start loading an image's ink entries, to be read a little later (one cache line in 32 pixels)."""
    start, pixels, values = ink
    first, end = start[image], start[image + 1]
    for t in range(first, end, 32):
        prefetch(pixels, t)
    for t in range(first, end, 64):
        prefetch(values, t)
    prefetch(pixels, end - 1)
    prefetch(values, end - 1)


@inline_jit
def _hidden_forward(hidden, ink, rows, W1, b1, relu, blk, width):
    """hidden[blk, n] = activation(x[rows[n]] @ W1[blk] + b1[blk]), ReLU or (relu None) sigmoid (see
    _relu_flag); units >= width (padding) = 0.

    Most of the forward time goes here. The sums build up in a stack scratch row,
    which LLVM keeps in four vector registers for the whole image.
    """
    _, pixels, values = ink
    W, h, b = W1[blk], hidden[blk], b1[blk]
    z = carray(stack_floats(BLOCK), BLOCK)
    for n in range(rows.size):
        image = rows[n]
        for j in range(BLOCK):
            z[j] = b[j]
        t, end = _ink_span(ink, image)
        while t + np.uint64(4) <= end:  # four ink pixels per pass over the row
            p0, p1, p2, p3, x0, x1, x2, x3 = _four_ink_pixels(ink, t)
            for j in range(BLOCK):
                z[j] += x0 * W[p0, j] + x1 * W[p1, j] + x2 * W[p2, j] + x3 * W[p3, j]
            t += np.uint64(4)
        while t < end:
            p, x = pixels[t], values[t] * INPUT_SCALE
            for j in range(BLOCK):
                z[j] += x * W[p, j]
            t += np.uint64(1)
        for j in range(BLOCK):
            if relu is None:
                h[n, j] = _sigmoid(z[j])
            else:
                h[n, j] = max(z[j], np.float32(0.0))
        for j in range(width, BLOCK):
            h[n, j] = np.float32(0.0)


@inline_jit
def _hidden_backward(dhidden, dlogits, hidden, W2, relu, blk):
    """dhidden[blk, n] = (dlogits[n] @ W2[blk]) * activation'(hidden[blk, n])."""
    dh, h, W = dhidden[blk], hidden[blk], W2[blk]
    d = carray(stack_floats(BLOCK), BLOCK)  # the image's sums, in registers (see _hidden_forward)
    for n in range(dlogits.shape[0]):
        for j in range(BLOCK):
            d[j] = np.float32(0.0)
        for k in range(dlogits.shape[1]):
            g = dlogits[n, k]
            for j in range(BLOCK):
                d[j] += g * W[k, j]
        for j in range(BLOCK):
            if relu is None:
                dh[n, j] = d[j] * (h[n, j] * (np.float32(1.0) - h[n, j]))
            else:
                dh[n, j] = d[j] if h[n, j] > np.float32(0.0) else np.float32(0.0)


@inline_jit
def _scale_add(target, scale, source, source_scale):
    """target = scale * target + source_scale * source, elementwise (2-D arrays of one shape)."""
    for r in range(target.shape[0]):
        for j in range(target.shape[1]):
            target[r, j] = scale * target[r, j] + source_scale * source[r, j]


@inline_jit
def _backward_update(rows, hidden, dhidden, dlogits, params, velocity, learning_rate, momentum, weight_decay, blk):
    """SGD update of hidden-unit block blk after _hidden_backward, but for W1's gradient (_add_w1_gradient_by_pixel
    or _by_image, next) and, with momentum, the step along the velocity (_move_by_velocity).

    Plain SGD adds -learning_rate * gradient straight into the weights; with
    momentum the gradient goes into the (decayed) velocity, which then moves
    the weights. dhidden[blk] is left scaled for W1's gradient. Weight decay
    (W1 and W2 only) is the one dense step, and runs only when asked for.
    Separate functions rather than one because Numba's inlining costs more than
    in proportion to a function's size (compile time: docs/design.md).
    """
    # The block's W1, W2 and b1, each a 2-D view (b1's a single row), so that the dense steps are one
    # loop for all three (ravel() would compile a generic function of its own).
    weights = (params.W1[blk], params.W2[blk], params.b1[blk:blk + 1])
    # velocity is None for plain SGD: Numba then compiles none of the momentum code (`is None` on an
    # argument is decided at compile time), which keeps the usual kernel's compile short.
    if velocity is None:  # w = (1 - learning_rate * weight_decay) * w (- the gradient, below)
        scale, target = -learning_rate, params
        for i in range(2 if weight_decay != np.float32(0.0) else 0):  # no decay on biases
            _scale_add(weights[i], np.float32(1.0) - learning_rate * weight_decay, weights[i], np.float32(0.0))
    else:  # v = momentum * v + weight_decay * w (+ the gradient, below)
        scale, target = np.float32(1.0), velocity
        velocities = (velocity.W1[blk], velocity.W2[blk], velocity.b1[blk:blk + 1])
        for i in range(3):
            _scale_add(velocities[i], momentum, weights[i], weight_decay if i < 2 else np.float32(0.0))
    Tb, T2 = target.b1[blk], target.W2[blk]
    dh, h = dhidden[blk], hidden[blk]
    g = carray(stack_floats(BLOCK), BLOCK)  # one row's gradient, summed over the batch in registers
    for k in range(dlogits.shape[1]):  # W2 (transposed): dW2[k, j] = sum_n dlogits[n, k] * hidden[n, j]
        for j in range(BLOCK):
            g[j] = np.float32(0.0)
        for n in range(rows.size):
            d = scale * dlogits[n, k]
            for j in range(BLOCK):
                g[j] += d * h[n, j]
        for j in range(BLOCK):
            T2[k, j] += g[j]
    for j in range(BLOCK):
        g[j] = np.float32(0.0)
    for n in range(rows.size):  # b1
        for j in range(BLOCK):
            dh[n, j] *= scale
            g[j] += dh[n, j]
    for j in range(BLOCK):
        Tb[j] += g[j]


@inline_jit
def _add_w1_gradient_by_pixel(T1, dh, ink, rows, pixel_ink):
    """T1[p] += sum_n x[rows[n], p] * dh[n] over the ink pixels p: W1's gradient, ink rows only.

    Pixel by pixel: each ink row's gradient is summed over the images in
    registers, then added to the row once. Most of the backward time goes here.
    pixel_ink (D, 32), all zero between batches, holds 32 images at a time
    transposed: pixel_ink[p, n] is image n's value at pixel p, so row p's
    nonzero bytes say which images have ink there.
    """
    _, pixels, values = ink
    row_sum = carray(stack_floats(BLOCK), BLOCK)
    for c in range(0, rows.size, 32):
        images, dh_part = rows[c:c + 32], dh[c:c + 32]
        for n in range(images.size):
            first, end = _ink_span(ink, images[n])
            for t in range(first, end):
                pixel_ink[pixels[t], n] = values[t]
        for p in range(T1.shape[0]):
            with_ink = nonzero_bits32(pixel_ink, p)  # one vector compare
            if with_ink == 0:
                continue
            for j in range(BLOCK):
                row_sum[j] = np.float32(0.0)
            while with_ink != 0:
                n = trailing_zeros(with_ink)
                with_ink &= with_ink - np.uint64(1)
                x = pixel_ink[p, n] * INPUT_SCALE
                for j in range(BLOCK):
                    row_sum[j] += x * dh_part[n, j]
            for j in range(BLOCK):
                T1[p, j] += row_sum[j]
            for n in range(32):
                pixel_ink[p, n] = 0


@inline_jit
def _add_w1_gradient_by_image(T1, dh, ink, rows):
    """The same sum image by image: each image adds its gradient into each of its ink rows. Faster in batches
    under PIXEL_MAJOR_FROM images."""
    _, pixels, values = ink
    g = carray(stack_floats(BLOCK), BLOCK)  # the image's dhidden, in registers (see _hidden_forward)
    for n in range(rows.size):
        for j in range(BLOCK):
            g[j] = dh[n, j]
        first, end = _ink_span(ink, rows[n])
        for t in range(first, end):
            p, x = pixels[t], values[t] * INPUT_SCALE
            for j in range(BLOCK):
                T1[p, j] += x * g[j]


@inline_jit
def _move_by_velocity(params, velocity, learning_rate, blk):
    """With momentum, w -= learning_rate * v for block blk's W1, W2 and b1."""
    weights = (params.W1[blk], params.W2[blk], params.b1[blk:blk + 1])
    velocities = (velocity.W1[blk], velocity.W2[blk], velocity.b1[blk:blk + 1])
    for i in range(3):
        _scale_add(weights[i], np.float32(1.0), velocities[i], -learning_rate)


@jit
def _backward_block(ink, rows, hidden, dhidden, dlogits, params, velocity, learning_rate, momentum, weight_decay,
                    relu, blk, pixel_ink, image_by_image):
    """Backward and update of block blk, the same calls _epoch_worker makes (keep the two in step): for
    backward(), below. Written out twice on purpose: inlined into the worker, this function made its compile
    markedly slower, and called from it un-inlined, fresh and cached kernels differed in the last bits."""
    _hidden_backward(dhidden, dlogits, hidden, params.W2, relu, blk)
    _backward_update(rows, hidden, dhidden, dlogits, params, velocity, learning_rate, momentum, weight_decay, blk)
    T1 = params.W1[blk] if velocity is None else velocity.W1[blk]
    if image_by_image is None:
        _add_w1_gradient_by_pixel(T1, dhidden[blk], ink, rows, pixel_ink)
    else:
        _add_w1_gradient_by_image(T1, dhidden[blk], ink, rows)
    if velocity is not None:
        _move_by_velocity(params, velocity, learning_rate, blk)


# ---------------------------------------------------------------- output layer (K is small, 10 for digits)


@inline_jit
def _output_forward(probs, hidden, W2, b2, lo, hi):
    """probs[n] = softmax(hidden[:, n] @ W2 + b2) for n in lo..hi-1, summing block by block in a fixed order."""
    n_classes = probs.shape[1]
    for n in range(lo, hi):
        p = probs[n]
        for k in range(n_classes):
            logit = b2[k]
            for blk in range(W2.shape[0]):
                for j in range(BLOCK):
                    logit += hidden[blk, n, j] * W2[blk, k, j]
            p[k] = logit
        largest = p[0]  # a loop, not p.max(): Numba would compile its generic max for this kernel
        for k in range(1, n_classes):
            largest = max(largest, p[k])
        total = np.float32(0.0)
        for k in range(n_classes):
            p[k] = np.exp(p[k] - largest)
            total += p[k]
        for k in range(n_classes):
            p[k] /= total


@inline_jit
def _output_backward(dlogits, probs, labels, rows, lo, hi):
    """dlogits[lo:hi] of the cross-entropy's mean over the batch (images rows, their labels labels[rows]);
    returns images lo..hi-1's summed loss and correct predictions."""
    n_classes = probs.shape[1]
    tiny = np.float32(1.1754944e-38)
    loss = 0.0
    correct = 0
    inv_rows = np.float32(1.0) / np.float32(rows.size)
    for n in range(lo, hi):
        label = labels[rows[n]]
        p = probs[n]
        loss -= np.log(max(p[label], tiny))
        best = 0  # np.argmax's first largest, as a loop (np.argmax would compile a generic function)
        for k in range(1, n_classes):
            if p[k] > p[best]:
                best = k
        correct += best == label
        for k in range(n_classes):
            dlogits[n, k] = p[k] * inv_rows
        dlogits[n, label] -= inv_rows
    return loss, correct


@inline_jit
def _update_output_bias(params, velocity, dlogits, learning_rate, momentum):
    """b2's SGD step (velocity None: plain SGD, see _backward_update)."""
    if velocity is None:
        for n in range(dlogits.shape[0]):
            for k in range(dlogits.shape[1]):
                params.b2[k] -= learning_rate * dlogits[n, k]
    else:
        b2, vb2 = params.b2, velocity.b2
        vb2 *= momentum
        for n in range(dlogits.shape[0]):
            for k in range(dlogits.shape[1]):
                vb2[k] += dlogits[n, k]
        b2 -= learning_rate * vb2


# ---------------------------------------------------------------- the epoch


def _w1_tiles(count, n_inputs, image_by_image):
    """count zeroed pixel_ink tiles (see _add_w1_gradient_by_pixel); empty where W1's gradient goes in image by
    image (image_by_image True), which does not use them."""
    return np.zeros((count, n_inputs if image_by_image is None else 0, 32), np.uint8)


def _epoch_buffers(n_blocks, batch_size, n_classes, n_inputs, n_workers, image_by_image):
    """hidden, dhidden, probs and dlogits for one batch, and each worker's pixel_ink tile.
    Allocated here: np.zeros inside the kernel would lengthen its compile."""
    return (aligned_zeros((n_blocks, batch_size, BLOCK)), aligned_zeros((n_blocks, batch_size, BLOCK)),
            np.empty((batch_size, n_classes), np.float32), np.empty((batch_size, n_classes), np.float32),
            _w1_tiles(n_workers, n_inputs, image_by_image))


# Two choices made when a kernel is compiled, not when it runs, as for `velocity`: where an argument is None,
# Numba drops the branch that `argument is None` rules out before compiling it (any other value, None's
# opposite included, compiles both ways); in the function called from Python, even before inlining the helpers
# that branch calls. The usual case (sigmoid, batches of 16 or more) passes None for both and so compiles
# only the code it runs.


def _relu_flag(activation: int) -> bool | None:
    """The kernels' activation argument: True for ReLU, None for sigmoid."""
    return True if activation == RELU else None


def _image_by_image(batch_size: int) -> bool | None:
    """The epoch's image_by_image argument: True for batches under PIXEL_MAJOR_FROM (W1's gradient then goes
    in by _add_w1_gradient_by_image), else None (_add_w1_gradient_by_pixel)."""
    return True if batch_size < PIXEL_MAJOR_FROM else None


@jit
def _epoch_worker(worker, n_workers, control, stop, ink, labels, order, params, velocity, buffers, n_hidden, batch_size,
                  learning_rate, momentum, weight_decay, relu, image_by_image, first_batch):
    """One worker's share of an epoch, from batch first_batch; returns (summed loss, correct, next batch).

    Worker w owns hidden-unit blocks w, w + n_workers, ... For each batch b it
    finishes batch b-1 (backward + update) and begins batch b (hidden layer) on
    its blocks, publishes step 2b+1 and waits for every worker's 2b+1; then it
    runs the output layer of batch b for its share of the images (the w-th of
    n_workers equal parts), publishes 2b+2 and waits for every worker's 2b+2:
    only then are all of dlogits written. Worker 0 then updates b2 (read again
    only after the next 2b+3).
    stop[0] != 0 asks for a stop: worker 0 then sets control[STOP_AT] to the
    batch after the one it has just done, before publishing 2b+2, so that every
    worker finishes that batch and stops there. (loss and correct are this
    worker's images'.)
    On a busy machine a worker that has lost its core holds up the others at
    every meeting. When worker 0 has had to nap (see threads.wait_for) in more
    than one batch in SOLO_EVERY (after SOLO_WARM_UP batches), it sets
    control[SOLO_AT] the same way: the others
    stop after that batch and worker 0 carries on with all the blocks and images.
    Each block and image is computed the same way whoever computes it, so the
    weights stay bit-identical.
    """
    hidden, dhidden, probs, dlogits, pixel_inks = buffers
    n_blocks = params.W1.shape[0]
    pixel_ink = pixel_inks[worker]  # this worker's (see _add_w1_gradient_by_pixel)
    end = -(-order.size // batch_size)
    loss_sum, correct = 0.0, 0
    active, naps = n_workers, 0  # workers sharing the batches (1 once worker 0 goes on alone); worker's naps
    for b in range(first_batch, end + 1):
        prev_rows = order[max(b - 1, 0) * batch_size:b * batch_size]
        rows = order[b * batch_size:(b + 1) * batch_size]
        for image in order[(b + 1) * batch_size:(b + 2) * batch_size]:  # ask for the batch after this one
            _prefetch_image(ink, image)
        for blk in range(worker, n_blocks, active):
            if b > first_batch:
                _hidden_backward(dhidden, dlogits[:prev_rows.size], hidden, params.W2, relu, blk)
                _backward_update(prev_rows, hidden, dhidden, dlogits[:prev_rows.size], params, velocity,
                                 learning_rate, momentum, weight_decay, blk)
                T1 = params.W1[blk] if velocity is None else velocity.W1[blk]  # see _backward_update
                if image_by_image is None:
                    _add_w1_gradient_by_pixel(T1, dhidden[blk], ink, prev_rows, pixel_ink)
                else:
                    _add_w1_gradient_by_image(T1, dhidden[blk], ink, prev_rows)
                if velocity is not None:
                    _move_by_velocity(params, velocity, learning_rate, blk)
            if b < end:
                _hidden_forward(hidden, ink, rows, params.W1, params.b1, relu, blk, min(BLOCK, n_hidden - blk * BLOCK))
        if b == end:
            break
        publish(control, worker + 1, 2 * b + 1)
        for other in range(active):
            naps += wait_for(control, other + 1, 2 * b + 1)
        lo, hi = rows.size * worker // active, rows.size * (worker + 1) // active
        _output_forward(probs, hidden, params.W2, params.b2, lo, hi)
        loss, hits = _output_backward(dlogits, probs, labels, rows, lo, hi)
        loss_sum += loss
        correct += hits
        if worker == 0:
            if load_acquire(stop, 0) != 0:
                control[STOP_AT] = b + 1
            judged = b - first_batch - SOLO_WARM_UP  # batches since the warm-up, whose naps are forgotten
            if judged == 0:
                naps = 0
            if active > 1 and judged >= 16 and naps * SOLO_EVERY > judged:
                control[SOLO_AT] = b + 1
        publish(control, worker + 1, 2 * b + 2)
        for other in range(active):
            naps += wait_for(control, other + 1, 2 * b + 2)
        if worker == 0:
            _update_output_bias(params, velocity, dlogits[:rows.size], learning_rate, momentum)
        if control[STOP_AT] >= 0:
            end = control[STOP_AT]
        if control[SOLO_AT] >= 0 and active > 1:
            if worker != 0:
                return loss_sum, correct, end
            active = 1
    return loss_sum, correct, end


def _workers_for(batch_size: int, n_blocks: int) -> int:
    """Threads worth using: at most one per block, and one for tiny batches (too little work to share)."""
    return 1 if batch_size < 4 else max(1, min(thread_count(), n_blocks))


def train_epoch(params, velocity, data: InkIndex, labels, order, batch_size, learning_rate, momentum, activation,
                weight_decay=0.0, progress=None, stop=None, first_batch=0):
    """One pass over data in the given order from batch first_batch, updating params in place.

    Returns (summed loss, correct predictions, next batch): next batch is the
    number of batches when the epoch is complete, less if stop (an array from
    new_stop_flag()) was raised: the batches before it are fully done. The epoch
    is one compiled call, so progress (if given) hears only of its end.
    """
    blocked = to_blocks(params)
    blocked_velocity = to_blocks(velocity) if np.float32(momentum) != 0 else None  # None: plain SGD
    n_blocks, n_hidden = blocked.W1.shape[0], params[0].shape[1]
    n_workers, image_by_image = _workers_for(batch_size, n_blocks), _image_by_image(batch_size)
    buffers = _epoch_buffers(n_blocks, batch_size, len(blocked.b2), blocked.W1.shape[1], n_workers, image_by_image)
    losses, hits, next_batches = zip(*run_workers(
        n_workers, _epoch_worker, n_workers, new_control(n_workers), new_stop_flag() if stop is None else stop, data,
        labels, order.astype(np.int64, copy=False), blocked, blocked_velocity, buffers, n_hidden, batch_size,
        np.float32(learning_rate), np.float32(momentum), np.float32(weight_decay), _relu_flag(activation),
        image_by_image, first_batch, wait_in_threads=stop is not None))
    loss_sum, correct, next_batch = sum(losses), sum(hits), next_batches[0]
    from_blocks(blocked, params)
    if blocked_velocity is not None:
        from_blocks(blocked_velocity, velocity)
    if progress is not None:
        progress(min(len(order), next_batch * batch_size))
    return float(loss_sum), int(correct), int(next_batch)


# ---------------------------------------------------------------- forward / backward / update alone
# The same kernels as the epoch uses, one batch at a time: for tests and benchmarks.


def forward(hidden, probs, images, params, activation):
    """hidden (N, H) and probs (N, K) from images (N, D) uint8."""
    blocked = to_blocks(params)
    n_blocks, n_hidden = blocked.W1.shape[0], hidden.shape[1]
    hidden_blocks = aligned_zeros((n_blocks, len(images), BLOCK))
    ink, rows = prepare(images), np.arange(len(images), dtype=np.int64)
    for blk in range(n_blocks):
        _hidden_forward(hidden_blocks, ink, rows, blocked.W1, blocked.b1, _relu_flag(activation), blk,
                        min(BLOCK, n_hidden - blk * BLOCK))
    _output_forward(probs, hidden_blocks, blocked.W2, blocked.b2, 0, len(probs))
    hidden[...] = _unblocked(hidden_blocks, n_hidden)


def backward(grads, hidden, probs, images, labels, params, activation):
    """grads = (dW1, db1, dW2, db2) of the batch-mean loss, after forward().

    Runs the training update itself with momentum 1, zero velocity and learning
    rate 0: the velocity then holds exactly the gradient and the weights stay put.
    """
    blocked = to_blocks(params)
    gradient = to_blocks([np.zeros_like(p, dtype=np.float32) for p in params])
    hidden_blocks = _blocked(hidden, blocked.W1.shape[0])
    dlogits = np.empty_like(probs)
    _output_backward(dlogits, probs, labels.astype(np.int64), np.arange(len(probs)), 0, len(probs))
    ink, rows = prepare(images), np.arange(len(images), dtype=np.int64)
    dhidden, relu, image_by_image = np.empty_like(hidden_blocks), _relu_flag(activation), _image_by_image(len(images))
    pixel_ink = _w1_tiles(1, images.shape[1], image_by_image)[0]  # all zero again after each block's use
    for blk in range(blocked.W1.shape[0]):
        _backward_block(ink, rows, hidden_blocks, dhidden, dlogits, blocked, gradient, np.float32(0.0),
                        np.float32(1.0), np.float32(0.0), relu, blk, pixel_ink, image_by_image)
    gradient = gradient._replace(b2=dlogits.sum(axis=0))
    from_blocks(gradient, grads)


def _one_row(array: np.ndarray) -> np.ndarray:
    """array as one row (1, size), a view (numpy refuses if that would need a copy, which would drop the
    update)."""
    row = array.view()
    row.shape = (1, array.size)
    return row


def sgd_update(params, grads, velocity, learning_rate, momentum, weight_decay=0.0):
    """SGD with (PyTorch-style) momentum and L2 weight decay on W1 and W2 (not the biases):
    g' = g + weight_decay * w;  v = momentum * v + g';  w -= learning_rate * v  (v = g' without momentum)."""
    rate, momentum = np.float32(learning_rate), np.float32(momentum)
    for weight, grad, v in zip(params, grads, velocity):
        decay = np.float32(weight_decay if weight.ndim == 2 else 0.0)
        weight, grad, v = _one_row(weight), _one_row(grad), _one_row(v)
        if momentum != 0:
            _scale_add(v, momentum, weight, decay)
            _scale_add(v, np.float32(1.0), grad, np.float32(1.0))
            _scale_add(weight, np.float32(1.0), v, -rate)
        else:
            _scale_add(weight, np.float32(1.0) - rate * decay, grad, -rate)


@inline_jit
def _append_ink(row, pixels, values, count, vector_compress):
    """Write row's ink pixels (positions and values) at pixels[count:] and values[count:]; returns the new count.

    Either 64 pixels per vector compress (intrinsics.append_nonzero64; vector_compress
    True), or (None) 8 at a time: blank 8-pixel words, most of them, are
    skipped whole, and within the others every pixel is written and the count
    advances on ink (no branch). Either way the buffers need room for the whole
    row and 64 places more.
    """
    done = 0
    if vector_compress is not None:
        while done + 64 <= row.size:
            count = append_nonzero64(row, done, pixels, values, count)
            done += 64
    else:
        while done + 8 <= row.size:
            if (row[done] | row[done + 1] | row[done + 2] | row[done + 3] | row[done + 4] | row[done + 5]
                    | row[done + 6] | row[done + 7]) != 0:
                for p in range(done, done + 8):
                    pixels[count], values[count] = p, row[p]
                    count += row[p] != 0
            done += 8
    for p in range(done, row.size):
        pixels[count], values[count] = p, row[p]
        count += row[p] != 0
    return count


@jit
def _predict_rows(probs, images, params, n_hidden, relu, lo, hi, hidden, vector_compress):
    """probs[lo:hi] for images[lo:hi], a group of hidden.shape[1] images at a time (hidden: this worker's
    own buffer). Most of prediction's time goes here."""
    n_inputs = images.shape[1]
    n_blocks, group = hidden.shape[0], hidden.shape[1]
    start = np.empty(group + 1, np.int64)
    pixels = np.empty(group * n_inputs + 64, np.uint16)
    values = np.empty(group * n_inputs + 64, np.uint8)
    rows = np.empty(group, np.int64)  # 0, 1, ... (np.arange would compile a generic function)
    for n in range(group):
        rows[n] = n
    for first in range(lo, hi, group):
        last = min(first + group, hi)
        start[0] = 0
        for n in range(last - first):  # the group's ink index
            start[n + 1] = _append_ink(images[first + n], pixels, values, start[n], vector_compress)
        ink = InkIndex(start, pixels, values)
        for blk in range(n_blocks):
            _hidden_forward(hidden, ink, rows[:last - first], params.W1, params.b1, relu, blk,
                            min(BLOCK, n_hidden - blk * BLOCK))
        _output_forward(probs[first:last], hidden, params.W2, params.b2, 0, last - first)


@functools.cache
def _vector_compress() -> bool | None:
    """True where prediction lists ink by vector compress (intrinsics.append_nonzero64), else None: Numba decides
    `is None` on an argument at compile time, so elsewhere the intrinsic is never even compiled. Asked once, when
    first predicting: the probe takes some 40 ms that training need not pay."""
    return True if has_vector_compress() else None


def predict(probs, images, params, activation):
    """probs (N, K) for images (N, D) uint8; threads take contiguous ranges of images."""
    images = np.ascontiguousarray(images)
    n_workers = max(1, min(thread_count(), len(images) // 256))
    bounds = np.linspace(0, len(images), n_workers + 1).astype(np.int64)
    blocked, n_hidden, relu = to_blocks(params), params[0].shape[1], _relu_flag(activation)

    def work(worker):
        hidden = aligned_zeros((blocked.W1.shape[0], 64, BLOCK))
        _predict_rows(probs, images, blocked, n_hidden, relu, bounds[worker], bounds[worker + 1], hidden,
                      _vector_compress())

    run_workers(n_workers, work)


# ---------------------------------------------------------------- compiling on both cores


def compile_prediction() -> None:
    """Compile (or load from the cache) the prediction kernel, for the argument types every caller uses."""
    params = [np.zeros((28 * 28, BLOCK), np.float32), np.zeros(BLOCK, np.float32), np.zeros((BLOCK, 10), np.float32),
              np.zeros(10, np.float32)]
    predict(np.empty((1, 10), np.float32), np.zeros((1, 28 * 28), np.uint8), params, SIGMOID)


def start_compiling_prediction() -> subprocess.Popen | None:
    """On an empty cache, compile the prediction kernel into it from a second process, on the other core,
    while this one compiles the epoch: Numba compiles one function at a time per process. Returns the
    process to wait for, or None where there is nothing to gain (cached already, one thread, or a Numba
    whose cache layout this does not know: then the kernel is simply compiled here, when first used)."""
    try:
        cached = Path(_predict_rows._cache._cache_file._index_path).exists()  # Numba internals, hence the guard
    except AttributeError:
        return None
    if cached or thread_count() < 2:
        return None
    from fastnet import _child_environment

    try:
        return subprocess.Popen([sys.executable, "-c", "from fastnet.kernels.numba_backend import compile_prediction; "
                                 "compile_prediction()"], env=_child_environment(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return None
