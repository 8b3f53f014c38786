"""One layer's forward, backward and update as explicit loops: the fast twin of numpy_backend's layers.

Legend in common.py, storage in layout.py. Each function works on one block of BLOCK units of a hidden layer
(the first layer's forward and update, every later layer's backward and update: the thread that owns the block
calls it), or on a share of a batch's images (every later layer's forward, one thread per share).
Each is compiled on its own and inlined by LLVM into the epoch worker and prediction (jit.llvm_inline_jit);
the small helpers they call (activate, the optimisers' rules) are inlined in Numba's IR (jit.inline_jit).

Inner loops run over range(BLOCK), a constant from 0: LLVM unrolls them into vector FMAs (with a variable
signed start Numba adds a negative-index check that stops vectorisation; checked in the assembly). Running
sums over a block's units live in a scratch row on the stack (intrinsics.stack_floats), which LLVM keeps in
vector registers; in an ordinary array they would be stored and loaded again every few inputs, as LLVM cannot
rule out that they alias the weights.

Some arguments are None or True, decided when a kernel is compiled: the activation (relu, tanh; both None:
sigmoid) and the optimiser (see Step). Numba drops the branch that `argument is None` rules out before
compiling it, so a kernel holds only the code its run uses.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import carray

from .ink import four_inputs, ink_span
from .intrinsics import float32_from_bits, stack_floats, sum_lanes, trailing_zeros
from .jit import inline_jit, llvm_inline_jit
from .layout import BLOCK

TILE_IMAGES, TILE_UNITS = 4, 2  # images x units whose later layers' sums share their loads (dot_tile)
TILE_SUMS = TILE_IMAGES * TILE_UNITS
LANES = 16  # partial sums per dot product in dot_tile: one AVX-512 register (two AVX2 ones)
TILE_PARTIALS = TILE_SUMS * LANES
TILE = 32  # images whose first-layer gradient is summed pixel by pixel at a time (see first_gradient_by_pixel)


class Step(NamedTuple):
    """An optimiser's settings as the kernels take them (common.Optimizer says the maths), float32. Beside them
    the kernels take the moments, in blocks: velocity (SGD's, or Adam's first moment; None for plain SGD) and
    second (Adam's; else None), and two flags, one True and the other None: additive, where the gradient is
    simply added (plain SGD, momentum), adaptive for Nesterov SGD and Adam (a rule per weight). Two, not one
    flag and its else branch: Numba drops a branch only where the argument it tests is None, and a True flag's
    else branch would be compiled too (several seconds of compile across the kernels)."""

    learning_rate: np.float32
    momentum: np.float32  # SGD's momentum, or Adam's beta1
    weight_decay: np.float32
    beta2: np.float32
    epsilon: np.float32


class Tile(NamedTuple):
    """A TILE of images' ink transposed, per worker (first_gradient_by_pixel): bit n of masks[p] is set where image
    n has ink at pixel p, and values[p, n] is its value there (elsewhere values are stale, never read). The masks
    are all zero between uses: each pixel's is cleared as it is walked."""

    values: np.ndarray  # (D, TILE), the ink's dtype
    masks: np.ndarray  # (D,) uint32


# ---------------------------------------------------------------- activations

# exp(-z) = 2^y with y = -z log2(e) = k + f, k = round(y), |f| <= 1/2: 2^f by its Taylor series to f^6
# (relative error 1.2e-7, float32's epsilon) and 2^k by writing k + 127 into a float's exponent bits.
# Unlike a call to libm's expf, LLVM vectorises this: a vector of sigmoids per instruction sequence.
LOG2E = np.float32(1.4426950408889634)
EXP2_TAYLOR = tuple(np.float32(np.log(2.0) ** i / math.factorial(i)) for i in range(1, 7))


@inline_jit
def activate(z, relu, tanh):
    """The hidden layers' activation: ReLU, tanh (as 2 sigmoid(2z) - 1, which vectorises) or sigmoid,
    1 / (1 + exp(-z)) with exp as EXP2_TAYLOR says; z is clamped to +-87, where float32's exp ends. (One
    function, no helper of its own: each level of inlined helpers costs compile time out of proportion.)"""
    if relu is not None:
        return max(z, np.float32(0.0))
    x = np.float32(2.0) * z if tanh is not None else z
    c1, c2, c3, c4, c5, c6 = EXP2_TAYLOR
    y = min(max(-x, np.float32(-87.0)), np.float32(87.0)) * LOG2E
    k = np.floor(y + np.float32(0.5))
    f = y - k
    two_f = np.float32(1.0) + f * (c1 + f * (c2 + f * (c3 + f * (c4 + f * (c5 + f * c6)))))
    s = np.float32(1.0) / (np.float32(1.0) + two_f * float32_from_bits((np.int32(k) + np.int32(127)) << 23))
    return np.float32(2.0) * s - np.float32(1.0) if tanh is not None else s


@inline_jit
def backprop(d, h, relu, tanh):
    """d * activation'(z), written in terms of the activation's output h."""
    if relu is not None:
        return d if h > np.float32(0.0) else np.float32(0.0)
    if tanh is not None:
        return d * (np.float32(1.0) - h * h)
    return d * (h * (np.float32(1.0) - h))


# ---------------------------------------------------------------- the first layer: in blocks of its output units


@llvm_inline_jit
def first_forward_sparse(hidden, ink, rows, W1, b1, relu, tanh, blk, width, scale):
    """hidden[blk, n] = activation(x[rows[n]] @ W1[blk] + b1[blk]) from the ink index (x = values * scale);
    units >= width (padding) = 0.

    Most of the forward time goes here: four inputs per pass over a row of W1, the sums in registers.
    """
    _, pixels, values = ink
    W, h, b = W1[blk], hidden[blk], b1[blk]
    z = carray(stack_floats(BLOCK), BLOCK)
    for n in range(rows.size):
        for j in range(BLOCK):
            z[j] = b[j]
        t, end = ink_span(ink, rows[n])
        while t + np.uint64(4) <= end:
            p0, p1, p2, p3, x0, x1, x2, x3 = four_inputs(ink, t, scale)
            for j in range(BLOCK):
                z[j] += x0 * W[p0, j] + x1 * W[p1, j] + x2 * W[p2, j] + x3 * W[p3, j]
            t += np.uint64(4)
        while t < end:
            p, x = pixels[t], values[t] * scale
            for j in range(BLOCK):
                z[j] += x * W[p, j]
            t += np.uint64(1)
        for j in range(BLOCK):
            h[n, j] = activate(z[j], relu, tanh)
        for j in range(width, BLOCK):
            h[n, j] = np.float32(0.0)


@llvm_inline_jit
def first_forward_dense(hidden, inputs, rows, W1, b1, relu, tanh, blk, width, scale):
    """first_forward_sparse for inputs read as they are (N, D): every input, four per pass."""
    W, h, b = W1[blk], hidden[blk], b1[blk]
    n_inputs = np.uint64(inputs.shape[1])
    z = carray(stack_floats(BLOCK), BLOCK)
    for n in range(rows.size):
        x = inputs[rows[n]]
        for j in range(BLOCK):
            z[j] = b[j]
        i = np.uint64(0)
        while i + np.uint64(4) <= n_inputs:
            i1, i2, i3 = i + np.uint64(1), i + np.uint64(2), i + np.uint64(3)
            x0, x1, x2, x3 = x[i] * scale, x[i1] * scale, x[i2] * scale, x[i3] * scale
            for j in range(BLOCK):
                z[j] += x0 * W[i, j] + x1 * W[i1, j] + x2 * W[i2, j] + x3 * W[i3, j]
            i += np.uint64(4)
        while i < n_inputs:
            x0 = x[i] * scale
            for j in range(BLOCK):
                z[j] += x0 * W[i, j]
            i += np.uint64(1)
        for j in range(BLOCK):
            h[n, j] = activate(z[j], relu, tanh)
        for j in range(width, BLOCK):
            h[n, j] = np.float32(0.0)


@inline_jit
def fill_tile(tile, ink, images):
    """Tile the ink pixels of images (at most TILE of them): image n's value at pixel p in values[p, n], and bit n
    of masks[p] set."""
    _, pixels, values = ink
    for n in range(images.size):
        first, end = ink_span(ink, images[n])
        bit = np.uint32(1) << np.uint32(n)
        for t in range(first, end):
            p = pixels[t]
            tile.values[p, n] = values[t]
            tile.masks[p] |= bit


@inline_jit
def add_pixel_sum(row_sum, tile, p, dz, scale):
    """row_sum += sum_n values[p, n] * scale * dz[n] over the images with ink at pixel p (fill_tile), whose mask
    is then cleared; returns whether there were any."""
    with_ink = np.uint64(tile.masks[p])
    if with_ink == 0:
        return False
    while with_ink != 0:
        n = trailing_zeros(with_ink)
        with_ink &= with_ink - np.uint64(1)
        x = tile.values[p, n] * scale
        for j in range(BLOCK):
            row_sum[j] += x * dz[n, j]
    tile.masks[p] = np.uint32(0)
    return True


@inline_jit
def step_row(weight, m, s, g, r, step, corrections, second):
    """Nesterov SGD (second None: m its velocity) or Adam (m, s its moments) for row r of a block of W1, from
    the row's summed gradient g (BLOCK values), with the weights' decay."""
    for j in range(BLOCK):
        if second is None:
            nesterov_rule(weight, m, g[j], r, j, step, step.weight_decay)
        else:
            adam_rule(weight, m, s, g[j], r, j, step, step.weight_decay, corrections)


@llvm_inline_jit
def first_gradient_by_pixel(T1, dz, ink, rows, tile, scale):
    """T1[p] += sum_n x[rows[n], p] * dz[n] over the ink pixels p: W1's gradient (times whatever dz carries),
    ink rows only.

    Pixel by pixel: each ink row's gradient is summed over the images in
    registers, then added to the row once. Most of the backward time goes here.
    tile (a Tile) holds TILE images at a time transposed: its mask of pixel p
    says which images have ink there, a word read from L1 for each pixel.
    """
    row_sum = carray(stack_floats(BLOCK), BLOCK)
    for c in range(0, rows.size, TILE):
        fill_tile(tile, ink, rows[c:c + TILE])
        dz_part = dz[c:c + TILE]
        for p in range(T1.shape[0]):
            for j in range(BLOCK):
                row_sum[j] = np.float32(0.0)
            if add_pixel_sum(row_sum, tile, p, dz_part, scale):
                for j in range(BLOCK):
                    T1[p, j] += row_sum[j]


@llvm_inline_jit
def first_step_by_pixel(params, velocity, second, blk, gradient, dz, ink, rows, tile, scale, step, corrections):
    """Nesterov SGD (second None) or Adam for block blk of W1, its gradient summed pixel by pixel as in
    first_gradient_by_pixel and taken by the rule row by row as each row's sum is done: the update fused into
    the backward, with no pass of its own (every row takes its step, with ink in the batch or not). Batches
    over TILE images sum the chunks before the last in gradient (zero between batches, and left so)."""
    weight, m = params.W1[blk], velocity.W1[blk]
    s = m if second is None else second.W1[blk]  # (Nesterov has no second moment)
    row_sum = carray(stack_floats(BLOCK), BLOCK)
    for c in range(0, rows.size, TILE):
        fill_tile(tile, ink, rows[c:c + TILE])
        dz_part = dz[c:c + TILE]
        last = c + TILE >= rows.size
        for p in range(weight.shape[0]):
            for j in range(BLOCK):
                row_sum[j] = np.float32(0.0)
            inked = add_pixel_sum(row_sum, tile, p, dz_part, scale)
            if not last:
                if inked:
                    for j in range(BLOCK):
                        gradient[p, j] += row_sum[j]
                continue
            if c > 0:
                for j in range(BLOCK):
                    row_sum[j] = gradient[p, j] + row_sum[j]
                    gradient[p, j] = np.float32(0.0)
            step_row(weight, m, s, row_sum, p, step, corrections, second)


@llvm_inline_jit
def first_gradient_by_image(T1, dz, ink, rows, scale):
    """The same sum image by image: each image adds its gradient into each of its ink rows. Faster in batches
    under PIXEL_MAJOR_FROM (epoch.py) images."""
    _, pixels, values = ink
    g = carray(stack_floats(BLOCK), BLOCK)  # the image's dz, in registers
    for n in range(rows.size):
        for j in range(BLOCK):
            g[j] = dz[n, j]
        first, end = ink_span(ink, rows[n])
        for t in range(first, end):
            p, x = pixels[t], values[t] * scale
            for j in range(BLOCK):
                T1[p, j] += x * g[j]


@inline_jit
def dense_row_sum(row_sum, dz, inputs, rows, i, scale):
    """row_sum = sum_n x[rows[n], i] * scale * dz[n]: input i's row of W1's gradient."""
    for j in range(BLOCK):
        row_sum[j] = np.float32(0.0)
    for n in range(rows.size):
        x = inputs[rows[n], i] * scale
        for j in range(BLOCK):
            row_sum[j] += x * dz[n, j]


@llvm_inline_jit
def first_gradient_dense(T1, dz, inputs, rows, scale):
    """T1[i] += sum_n x[rows[n], i] * dz[n] for every input i, each row's sum in registers."""
    row_sum = carray(stack_floats(BLOCK), BLOCK)
    for i in range(T1.shape[0]):
        dense_row_sum(row_sum, dz, inputs, rows, i, scale)
        for j in range(BLOCK):
            T1[i, j] += row_sum[j]


@llvm_inline_jit
def first_step_dense(params, velocity, second, blk, dz, inputs, rows, scale, step, corrections):
    """Nesterov SGD (second None) or Adam for block blk of W1, each row's gradient summed as in
    first_gradient_dense and taken by the rule at once (first_step_by_pixel's fusion, for dense inputs)."""
    weight, m = params.W1[blk], velocity.W1[blk]
    s = m if second is None else second.W1[blk]
    row_sum = carray(stack_floats(BLOCK), BLOCK)
    for i in range(weight.shape[0]):
        dense_row_sum(row_sum, dz, inputs, rows, i, scale)
        step_row(weight, m, s, row_sum, i, step, corrections, second)


# ---------------------------------------------------------------- later layers: in blocks of their input units


@inline_jit
def dot_tile(sums, hidden_in, W, n0, n_end, k0, k_end):
    """sums[TILE_UNITS a + u] = the dot product of image n0 + a (hidden_in[., n], every block) with unit k0 + u
    (W[., k], every block, as stored), for a < TILE_IMAGES (4) and u < TILE_UNITS (2); sums is a pointer to
    TILE_SUMS floats (stack_floats). The eight share each load of a row: one dot product at a time loads two
    numbers per multiply-add, this tile 0.75. Each sum runs in LANES partial sums, a vector register, across
    all the blocks, and sum_lanes adds up the eight vectors at once at the end: reduced one by one, and after
    every block as LLVM did with scalar sums, the reductions took as long as the multiply-adds. An image from
    n_end or a unit from k_end repeats the last one before it: its sum is computed and not used."""
    n1, n2, n3 = min(n0 + 1, n_end - 1), min(n0 + 2, n_end - 1), min(n0 + 3, n_end - 1)
    k1 = min(k0 + 1, k_end - 1)
    partial_at = stack_floats(TILE_PARTIALS)
    partial = carray(partial_at, TILE_PARTIALS)  # sum s's partial sums at LANES s ..
    for i in range(TILE_PARTIALS):
        partial[i] = np.float32(0.0)
    for blk in range(W.shape[0]):
        x0, x1, x2, x3 = hidden_in[blk, n0], hidden_in[blk, n1], hidden_in[blk, n2], hidden_in[blk, n3]
        w0, w1 = W[blk, k0], W[blk, k1]
        for q in range(0, BLOCK, LANES):
            for j in range(LANES):
                partial[j] += x0[q + j] * w0[q + j]
                partial[LANES + j] += x0[q + j] * w1[q + j]
                partial[2 * LANES + j] += x1[q + j] * w0[q + j]
                partial[3 * LANES + j] += x1[q + j] * w1[q + j]
                partial[4 * LANES + j] += x2[q + j] * w0[q + j]
                partial[5 * LANES + j] += x2[q + j] * w1[q + j]
                partial[6 * LANES + j] += x3[q + j] * w0[q + j]
                partial[7 * LANES + j] += x3[q + j] * w1[q + j]
    sum_lanes(partial_at, sums, TILE_SUMS, LANES)


@inline_jit
def image_share(n_images, worker, n_workers):
    """Worker's images lo..hi of a batch in the later layers' forward: equal shares cut at multiples of
    TILE_IMAGES, so that an image's sums come from the same place in the same tile (dot_tile) whatever the
    number of workers."""
    lo = n_images * worker // n_workers // TILE_IMAGES * TILE_IMAGES
    if worker + 1 == n_workers:
        return lo, n_images
    return lo, n_images * (worker + 1) // n_workers // TILE_IMAGES * TILE_IMAGES


@llvm_inline_jit
def gather_forward(hidden_out, hidden_in, W, b, relu, tanh, lo, hi):
    """hidden_out[., n] = activation(hidden_in[., n] @ W + b) for images lo..hi-1 (lo a multiple of
    TILE_IMAGES: image_share), in tiles of images and units (dot_tile); padding units = 0."""
    n_out = W.shape[1]
    sums_at = stack_floats(TILE_SUMS)
    sums = carray(sums_at, TILE_SUMS)
    for n0 in range(lo, hi, TILE_IMAGES):
        images = min(TILE_IMAGES, hi - n0)
        for k0 in range(0, n_out, TILE_UNITS):
            dot_tile(sums_at, hidden_in, W, n0, hi, k0, n_out)
            for u in range(min(TILE_UNITS, n_out - k0)):
                k = k0 + u
                for a in range(images):
                    z = sums[TILE_UNITS * a + u] + b[k >> 6, k & 63]
                    hidden_out[k >> 6, n0 + a, k & 63] = activate(z, relu, tanh)
        for k in range(n_out, hidden_out.shape[0] * BLOCK):
            for a in range(images):
                hidden_out[k >> 6, n0 + a, k & 63] = np.float32(0.0)


@llvm_inline_jit
def output_forward(probs, hidden_in, W, b, lo, hi):
    """probs[n] = softmax(hidden_in[., n] @ W + b) for n in lo..hi-1 (lo as gather_forward's)."""
    n_classes = probs.shape[1]
    sums_at = stack_floats(TILE_SUMS)
    sums = carray(sums_at, TILE_SUMS)
    for n0 in range(lo, hi, TILE_IMAGES):
        images = min(TILE_IMAGES, hi - n0)
        for k0 in range(0, n_classes, TILE_UNITS):
            dot_tile(sums_at, hidden_in, W, n0, hi, k0, n_classes)
            for u in range(min(TILE_UNITS, n_classes - k0)):
                for a in range(images):
                    probs[n0 + a, k0 + u] = sums[TILE_UNITS * a + u] + b[k0 + u]
        for n in range(n0, n0 + images):
            p = probs[n]
            largest = p[0]  # a loop, not p.max(): Numba would compile its generic max for this kernel
            for k in range(1, n_classes):
                largest = max(largest, p[k])
            total = np.float32(0.0)
            for k in range(n_classes):
                p[k] = np.exp(p[k] - largest)
                total += p[k]
            for k in range(n_classes):
                p[k] /= total


@llvm_inline_jit
def output_backward(dlogits, probs, labels, rows, lo, hi):
    """dlogits[., n] (in blocks, as every layer's gradient) of the cross-entropy's mean over the batch (images
    rows, their labels labels[rows]) for n in lo..hi-1; returns those images' summed loss and correct ones."""
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
            dlogits[k >> 6, n, k & 63] = p[k] * inv_rows
        dlogits[label >> 6, n, label & 63] -= inv_rows
    return loss, correct


@llvm_inline_jit
def gather_backward(dz_in, dz_out, hidden_in, W, relu, tanh, blk, n_images):
    """dz_in[blk, n] = (dz_out[., n] @ W[blk]^T) * activation'(hidden_in[blk, n]): the gradient at block blk of
    the layer before, from this layer's (W in blocks of its input units, as stored)."""
    dz, h, Wb = dz_in[blk], hidden_in[blk], W[blk]
    d = carray(stack_floats(BLOCK), BLOCK)  # the image's sums, in registers
    for n in range(n_images):
        for j in range(BLOCK):
            d[j] = np.float32(0.0)
        for k in range(Wb.shape[0]):
            g = dz_out[k >> 6, n, k & 63]
            for j in range(BLOCK):
                d[j] += g * Wb[k, j]
        for j in range(BLOCK):
            dz[n, j] = backprop(d[j], h[n, j], relu, tanh)


# ---------------------------------------------------------------- updates
# The optimiser's choices are tested on the arguments velocity, second and adaptive themselves (never on a value
# computed from them), and each branch that could not be typed is guarded by a test that its argument is None:
# inside an inlined helper Numba drops a branch before typing it only where the argument tested is None.


@inline_jit
def scale_add(target, scale, source, source_scale):
    """target = scale * target + source_scale * source, elementwise (2-D arrays of one shape)."""
    for r in range(target.shape[0]):
        for j in range(target.shape[1]):
            target[r, j] = scale * target[r, j] + source_scale * source[r, j]


@inline_jit
def nesterov_rule(weight, v, g, r, j, step, decay):
    """Nesterov SGD for weight[r, j] with gradient g: g' = g + decay w, v = momentum v + g',
    w -= lr (g' + momentum v)."""
    g = g + decay * weight[r, j]
    v[r, j] = step.momentum * v[r, j] + g
    weight[r, j] -= step.learning_rate * (g + step.momentum * v[r, j])


@inline_jit
def bias_corrections(step, t):
    """Adam's (1 / (1 - beta1^t), 1 / (1 - beta2^t)) for step t, from 1 (the powers in float64)."""
    return (np.float32(1.0 / (1.0 - np.float64(step.momentum) ** t)),
            np.float32(1.0 / (1.0 - np.float64(step.beta2) ** t)))


@inline_jit
def adam_rule(weight, m, s, g, r, j, step, decay, corrections):
    """Adam with decoupled weight decay (common.Optimizer) for weight[r, j] with gradient g; corrections are
    1 / (1 - beta1^t) and 1 / (1 - beta2^t)."""
    first_correction, second_correction = corrections
    first = step.momentum * m[r, j] + (np.float32(1.0) - step.momentum) * g
    second = step.beta2 * s[r, j] + (np.float32(1.0) - step.beta2) * g * g
    m[r, j], s[r, j] = first, second  # the step below uses the registers: read back after the weight is
    # stored (which, as far as LLVM knows, may be the same memory), each would be loaded again
    weight[r, j] = weight[r, j] * (np.float32(1.0) - step.learning_rate * decay) - step.learning_rate * (
        first * first_correction) / (np.sqrt(second * second_correction) + step.epsilon)


@llvm_inline_jit
def rule_from_buffer(weight, m, s, gradient, step, decay, corrections, adam):
    """Nesterov (adam None) or Adam for every element of 2-D weight, its gradient summed in the buffer
    gradient, which it zeroes for the next batch."""
    for r in range(weight.shape[0]):
        for j in range(weight.shape[1]):
            if adam is None:
                nesterov_rule(weight, m, gradient[r, j], r, j, step, decay)
            else:
                adam_rule(weight, m, s, gradient[r, j], r, j, step, decay, corrections)
            gradient[r, j] = np.float32(0.0)


@llvm_inline_jit
def gather_update(params, velocity, second, additive, adaptive, i, dz_in, dz_out, hidden_in, step, corrections,
                  blk, n_images, scale_in_place):
    """The update of W[i][blk] (layer i+2's weights from block blk of the layer before) and of b[i][blk] (the
    layer before's biases there), after gather_backward has written dz_in[blk].

    Gradients: dW[blk][k] = sum_n dz_out[k, n] * hidden_in[blk, n], db[blk] = sum_n dz_in[blk, n], each summed
    in registers. With additive, plain SGD (velocity None) adds -lr times them straight into the weights
    and SGD with momentum into the velocity, which then moves the weights; with scale_in_place, dz_in[blk] is
    left multiplied by that factor (-lr, or 1), for the first layer's gradient, added the same way. With
    adaptive, Nesterov SGD (second None) or Adam takes each summed gradient as it is.
    """
    Wb, bb, dz, h = params.W[i][blk], params.b[i][blk:blk + 1], dz_in[blk], hidden_in[blk]
    g = carray(stack_floats(BLOCK), BLOCK)  # one row's gradient, summed over the batch in registers
    if additive is not None:
        if velocity is None:  # w = (1 - lr decay) w (- lr * the gradient, below)
            scale = -step.learning_rate
            if step.weight_decay != np.float32(0.0):
                scale_add(Wb, np.float32(1.0) - step.learning_rate * step.weight_decay, Wb, np.float32(0.0))
            target_W, target_b = Wb, bb
        else:  # v = momentum v + decay w (+ the gradient, below)
            scale = np.float32(1.0)
            target_W, target_b = velocity.W[i][blk], velocity.b[i][blk:blk + 1]
            scale_add(target_W, step.momentum, Wb, step.weight_decay)
            scale_add(target_b, step.momentum, bb, np.float32(0.0))
        for k in range(Wb.shape[0]):  # dW[k, j] = sum_n dz_out[k, n] * h[n, j]
            for j in range(BLOCK):
                g[j] = np.float32(0.0)
            for n in range(n_images):
                d = scale * dz_out[k >> 6, n, k & 63]
                for j in range(BLOCK):
                    g[j] += d * h[n, j]
            for j in range(BLOCK):
                target_W[k, j] += g[j]
        for j in range(BLOCK):
            g[j] = np.float32(0.0)
        for n in range(n_images):  # db
            if scale_in_place:
                for j in range(BLOCK):
                    dz[n, j] *= scale
                    g[j] += dz[n, j]
            else:
                for j in range(BLOCK):
                    g[j] += scale * dz[n, j]
        for j in range(BLOCK):
            target_b[0, j] += g[j]
        if velocity is not None:  # w -= lr v
            scale_add(Wb, np.float32(1.0), velocity.W[i][blk], -step.learning_rate)
            scale_add(bb, np.float32(1.0), velocity.b[i][blk:blk + 1], -step.learning_rate)
    if adaptive is not None:
        # The moments' blocks are taken once, here: taken per element, the views kept the loops scalar.
        mW, mb = velocity.W[i][blk], velocity.b[i][blk:blk + 1]
        if second is None:
            sW, sb = mW, mb  # (unused: Nesterov has no second moment)
        else:
            sW, sb = second.W[i][blk], second.b[i][blk:blk + 1]
        for k in range(Wb.shape[0]):
            for j in range(BLOCK):
                g[j] = np.float32(0.0)
            for n in range(n_images):
                d = dz_out[k >> 6, n, k & 63]
                for j in range(BLOCK):
                    g[j] += d * h[n, j]
            for j in range(BLOCK):
                if second is None:
                    nesterov_rule(Wb, mW, g[j], k, j, step, step.weight_decay)
                else:
                    adam_rule(Wb, mW, sW, g[j], k, j, step, step.weight_decay, corrections)
        for j in range(BLOCK):
            g[j] = np.float32(0.0)
        for n in range(n_images):
            for j in range(BLOCK):
                g[j] += dz[n, j]
        for j in range(BLOCK):
            if second is None:
                nesterov_rule(bb, mb, g[j], 0, j, step, np.float32(0.0))
            else:
                adam_rule(bb, mb, sb, g[j], 0, j, step, np.float32(0.0), corrections)


@llvm_inline_jit
def output_bias_update(params, velocity, second, additive, adaptive, dlogits, n_images, step, corrections):
    """b_out's step (SGD plain, with momentum, Nesterov or Adam); its gradient is sum_n dlogits[., n]."""
    b = params.b_out
    n_classes = b.shape[0]
    if additive is not None:
        if velocity is None:
            for n in range(n_images):
                for k in range(n_classes):
                    b[k] -= step.learning_rate * dlogits[k >> 6, n, k & 63]
        else:  # loops, not array expressions: each of those is a compile of its own
            v = velocity.b_out
            for k in range(n_classes):
                v[k] *= step.momentum
            for n in range(n_images):
                for k in range(n_classes):
                    v[k] += dlogits[k >> 6, n, k & 63]
            for k in range(n_classes):
                b[k] -= step.learning_rate * v[k]
    if adaptive is not None:
        row, m_row = b.reshape((1, n_classes)), velocity.b_out.reshape((1, n_classes))
        for k in range(n_classes):
            g = np.float32(0.0)
            for n in range(n_images):
                g += dlogits[k >> 6, n, k & 63]
            if second is None:
                nesterov_rule(row, m_row, g, 0, k, step, np.float32(0.0))
            else:
                adam_rule(row, m_row, second.b_out.reshape((1, n_classes)), g, 0, k, step, np.float32(0.0),
                          corrections)
