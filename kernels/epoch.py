"""A whole training epoch as one compiled call per thread: the epoch worker, and train_epoch that runs it.

Worker w owns blocks w, w + workers, ... of every hidden layer (layout.py). For
each batch b it does, meeting the other workers where one needs another's work:

1. the backward of batch b-1 for the layers after the second, top down: for
   its blocks of each layer's input, the gradient there and the update of the
   weights from them (layers.gather_backward, gather_update); a meeting after
   each layer, whose gradients the next one down needs whole;
2. for its blocks of the first hidden layer: the same for the second layer,
   the update of the first layer's block (its weights are read by no one else),
   and that block's forward for batch b: W1's block is then touched once;
3. the forward of every later layer for its share of batch b's images
   (layers.gather_forward), then the output layer (softmax, loss, dlogits) for
   the same share, with no meeting between them (each layer reads only the
   worker's own images of the layer before), and a meeting: dlogits is whole.
   Worker 0 updates the output bias.
That is two meetings per batch, and one more for each hidden layer after the
first. Every number is computed by one thread, in an order that does not
depend on the thread count.

With augmentation (augment.py), the first layer reads each batch through its
transformed images: in step 3 of batch b each worker also transforms its share
of batch b+1's images (the output meeting then makes them whole), into the
slot that batch b-1's images, whose backward step 2 has just read, leave free.
The first batch of the call is transformed before the workers start.

stop[0] != 0 asks for a stop: worker 0 then sets control[STOP_AT] to the batch
after the one it has just done, before the output meeting, so that every
worker finishes that batch's backward and stops there. On a busy machine a
worker that has lost its core holds up the others at every meeting: when
worker 0 has had to nap (threads.wait_for) in more than one batch in
SOLO_EVERY (judged after SOLO_WARM_UP batches), it sets control[SOLO_AT] the
same way, the others stop after that batch, and worker 0 carries on with all
the blocks and images; the results are the same, bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import typeof, types

from .augment import Augmented, new_augmented, transform_images
from .common import RELU, TANH, Augment, Optimizer, OptimizerState, input_scale
from .ink import Dense, InkIndex, prefetch_row
from .intrinsics import load_acquire
from .jit import jit
from .layers import (TILE, Step, Tile, bias_corrections, first_forward_dense, first_forward_sparse,
                     first_gradient_by_image, first_gradient_by_pixel, first_gradient_dense, first_step_by_pixel,
                     first_step_dense, gather_backward, gather_forward, gather_update, image_share, output_backward,
                     output_bias_update, output_forward, rule_from_buffer, scale_add)
from .layout import BLOCK, Blocked, aligned_zeros, from_blocks, n_blocks, to_blocks
from .threads import SOLO_AT, STOP_AT, new_control, new_stop_flag, publish, run_workers, thread_count, wait_for

PIXEL_MAJOR_FROM = 16  # batches of this many images or more add the first layer's gradient pixel by pixel
# (first_gradient_by_pixel); image by image is as fast or faster in smaller ones
# Worker 0 goes on alone once it has napped in more than one batch in SOLO_EVERY, judged over 16 batches or
# more after the first SOLO_WARM_UP (whose naps, while caches and cores warm up, say nothing).
SOLO_EVERY = 4
SOLO_WARM_UP = 32


class Buffers(NamedTuple):
    """One batch's intermediate values: hidden[i] and dz[i] (blocks of H_{i+1}, batch, BLOCK) per hidden layer
    (dz: the loss's gradient at its units), probs (batch, K), dlogits (blocks of K, batch, BLOCK), a tile per
    worker (first_gradient_by_pixel), and the first layer's gradient in blocks for Nesterov and Adam on the
    ink index (summed there over batches of more than TILE images, or image by image)."""

    hidden: tuple
    dz: tuple
    probs: np.ndarray
    dlogits: np.ndarray
    tiles: Tile  # each worker's, stacked
    gradient: np.ndarray


@jit
def _epoch_worker(worker, n_workers, control, stop, ink, inputs, labels, order, params, velocity, second, additive,
                  adaptive, buffers, widths, batch_size, step, steps_before, relu, tanh, image_by_image, deep,
                  first_batch, scale, augmented):
    """One worker's share of an epoch, from batch first_batch; returns (summed loss, correct, next batch).
    (loss and correct are this worker's images'.) The module docstring says what it does and when.

    The layers' functions (layers.py) are compiled on their own, shared by every variant of this worker, and
    inlined by LLVM (jit.py). Each optional part is guarded by a test that its argument is None where it does
    not apply: only so does Numba drop it before typing it.
    """
    hidden, dz, probs, dlogits, tiles, gradient = buffers
    tile = Tile(tiles.values[worker], tiles.masks[worker])
    n_hidden = len(hidden)  # L - 1
    end = -(-order.size // batch_size)
    loss_sum, correct = 0.0, 0
    active, naps, meeting = n_workers, 0, 0  # active: workers sharing the batches (1 once worker 0 goes on alone)
    for b in range(first_batch, end + 1):
        prev_rows = order[max(b - 1, 0) * batch_size:b * batch_size]
        rows = order[b * batch_size:(b + 1) * batch_size]
        # what the first layer reads: the images themselves, or their transforms (module docstring)
        first_ink, first_rows, first_prev_rows = ink, rows, prev_rows
        if augmented is not None:
            first_ink = augmented.ink
            first_rows = augmented.local_rows[(b % 2) * batch_size:(b % 2) * batch_size + rows.size]
            first_prev_rows = augmented.local_rows[((b + 1) % 2) * batch_size:
                                                   ((b + 1) % 2) * batch_size + prev_rows.size]
        if ink is not None:
            for image in order[(b + 1) * batch_size:(b + 2) * batch_size]:  # ask for the batch after this one
                prefetch_row(ink, image)
        # Adam's step t counts batches from 1; the backward below finishes batch b-1 (the output bias, batch b)
        t = steps_before + b - first_batch
        corrections = bias_corrections(step, t)
        if deep is not None and b > first_batch:  # 1. the backward of batch b-1, down to the second layer's input
            for i in range(n_hidden - 1, 0, -1):
                dz_out = dlogits if i == n_hidden - 1 else dz[i + 1]
                for blk in range(worker, hidden[i].shape[0], active):
                    gather_backward(dz[i], dz_out, hidden[i], params.W[i], relu, tanh, blk, prev_rows.size)
                    gather_update(params, velocity, second, additive, adaptive, i, dz[i], dz_out, hidden[i], step,
                                  corrections, blk, prev_rows.size, False)
                meeting += 1
                publish(control, worker + 1, meeting)
                for other in range(active):
                    naps += wait_for(control, other + 1, meeting)
        dz_out = dlogits if n_hidden == 1 else dz[min(1, n_hidden - 1)]  # (a constant index must exist)
        for blk in range(worker, hidden[0].shape[0], active):  # 2. the first hidden layer's blocks
            if b > first_batch:
                gather_backward(dz[0], dz_out, hidden[0], params.W[0], relu, tanh, blk, prev_rows.size)
                gather_update(params, velocity, second, additive, adaptive, 0, dz[0], dz_out, hidden[0], step,
                              corrections, blk, prev_rows.size, True)
                # The first layer's update. Plain SGD and momentum: its gradient (from dz, left scaled by
                # gather_update) added straight to the weights or the velocity. Nesterov and Adam: each row's
                # gradient taken by the rule as its sum is done (every weight takes a step, with ink or not);
                # image by image, summed in the gradient buffer first.
                weight = params.W1[blk]
                if additive is not None:
                    if velocity is None:
                        if step.weight_decay != np.float32(0.0):
                            scale_add(weight, np.float32(1.0) - step.learning_rate * step.weight_decay, weight,
                                      np.float32(0.0))
                        target = weight
                    else:
                        target = velocity.W1[blk]
                        scale_add(target, step.momentum, weight, step.weight_decay)
                    if inputs is not None:
                        first_gradient_dense(target, dz[0][blk], inputs, prev_rows, scale)
                    if ink is not None:
                        if image_by_image is None:
                            first_gradient_by_pixel(target, dz[0][blk], first_ink, first_prev_rows, tile, scale)
                        else:
                            first_gradient_by_image(target, dz[0][blk], first_ink, first_prev_rows, scale)
                    if velocity is not None:
                        scale_add(weight, np.float32(1.0), velocity.W1[blk], -step.learning_rate)
                if adaptive is not None:
                    if inputs is not None:
                        first_step_dense(params, velocity, second, blk, dz[0][blk], inputs, prev_rows, scale, step,
                                         corrections)
                    if ink is not None:
                        if image_by_image is None:
                            first_step_by_pixel(params, velocity, second, blk, gradient[blk], dz[0][blk], first_ink,
                                                first_prev_rows, tile, scale, step, corrections)
                        else:
                            first_gradient_by_image(gradient[blk], dz[0][blk], first_ink, first_prev_rows, scale)
                            if second is None:
                                rule_from_buffer(weight, velocity.W1[blk], velocity.W1[blk], gradient[blk], step,
                                                 step.weight_decay, corrections, None)
                            else:
                                rule_from_buffer(weight, velocity.W1[blk], second.W1[blk], gradient[blk], step,
                                                 step.weight_decay, corrections, True)
            if b < end:
                if inputs is not None:
                    first_forward_dense(hidden[0], inputs, rows, params.W1, params.b[0], relu, tanh, blk,
                                        min(BLOCK, widths[0] - blk * BLOCK), scale)
                if ink is not None:
                    first_forward_sparse(hidden[0], first_ink, first_rows, params.W1, params.b[0], relu, tanh, blk,
                                         min(BLOCK, widths[0] - blk * BLOCK), scale)
        if b == end:
            break
        meeting += 1
        publish(control, worker + 1, meeting)
        for other in range(active):
            naps += wait_for(control, other + 1, meeting)
        lo, hi = image_share(rows.size, worker, active)
        if augmented is not None and b + 1 < end:  # this worker's share of the next batch's transforms
            size = min(batch_size, order.size - (b + 1) * batch_size)
            first, last = size * worker // active, size * (worker + 1) // active
            at = (b + 1) * batch_size
            transform_images(ink, order, at + first, at + last, augmented,
                             augmented.sources[worker], ((b + 1) % 2) * batch_size + first)
        if deep is not None:  # 3. the later layers' forward, for this worker's share of the images
            for i in range(1, n_hidden):
                gather_forward(hidden[i], hidden[i - 1], params.W[i - 1], params.b[i], relu, tanh, lo, hi)
        output_forward(probs, hidden[n_hidden - 1], params.W[n_hidden - 1], params.b_out, lo, hi)
        loss, hits = output_backward(dlogits, probs, labels, rows, lo, hi)
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
        meeting += 1
        publish(control, worker + 1, meeting)
        for other in range(active):
            naps += wait_for(control, other + 1, meeting)
        if worker == 0:
            output_bias_update(params, velocity, second, additive, adaptive, dlogits, rows.size, step,
                               bias_corrections(step, t + 1))
        if control[STOP_AT] >= 0:
            end = control[STOP_AT]
        if control[SOLO_AT] >= 0 and active > 1:
            if worker != 0:
                return loss_sum, correct, end
            active = 1
    return loss_sum, correct, end


def _workers_for(batch_size: int, blocks: int) -> int:
    """Threads worth using: at most one per block of the first hidden layer, one for tiny batches."""
    return 1 if batch_size < 4 else max(1, min(thread_count(), blocks))


def image_by_image(batch_size: int, ink: InkIndex | None) -> bool | None:
    """The epoch's image_by_image argument: True for batches under PIXEL_MAJOR_FROM of ink (the first layer's
    gradient then goes in by first_gradient_by_image), else None (first_gradient_by_pixel, or dense inputs:
    one compiled kernel for every batch size)."""
    return True if ink is not None and batch_size < PIXEL_MAJOR_FROM else None


def deep_flag(params) -> bool | None:
    """The kernels' deep argument: True for two hidden layers or more, None for one (whose kernels then hold no
    code for the layers between: a shorter compile)."""
    return True if len(params) > 4 else None


def activation_flags(activation: int) -> tuple[bool | None, bool | None]:
    """The kernels' (relu, tanh) arguments: True where that is the activation, else None (both None: sigmoid)."""
    return (True if activation == RELU else None), (True if activation == TANH else None)


def tiles(count: int, ink: InkIndex | None, n_inputs: int, by_image: bool | None) -> Tile:
    """count tiles for first_gradient_by_pixel, of the ink's value dtype, stacked (a Tile of 3-D values and 2-D
    masks); empty where they go unused."""
    rows = n_inputs if ink is not None and by_image is None else 0
    return Tile(np.zeros((count, rows, TILE), np.uint8 if ink is None else ink.values.dtype),
                np.zeros((count, rows), np.uint32))


def new_buffers(blocked: Blocked, batch_size: int, n_workers: int, ink, n_inputs: int, by_image, adaptive
                ) -> Buffers:
    """Allocated here: np.zeros inside the kernel would lengthen its compile."""
    n_classes = len(blocked.b_out)
    hidden = tuple(aligned_zeros((len(b), batch_size, BLOCK)) for b in blocked.b)
    return Buffers(hidden, tuple(aligned_zeros(h.shape) for h in hidden),
                   np.empty((batch_size, n_classes), np.float32),
                   aligned_zeros((n_blocks(n_classes), batch_size, BLOCK)), tiles(n_workers, ink, n_inputs, by_image),
                   aligned_zeros(blocked.W1.shape) if adaptive and ink is not None else aligned_zeros((0, 0, BLOCK)))


def kernel_step(optimizer: Optimizer) -> tuple[Step, bool | None, bool | None]:
    """The optimiser as the kernels take it: its settings in float32, additive and adaptive (layers.Step)."""
    beta = optimizer.beta1 if optimizer.kind == "adam" else optimizer.momentum
    step = Step(np.float32(optimizer.learning_rate), np.float32(beta), np.float32(optimizer.weight_decay),
                np.float32(optimizer.beta2), np.float32(optimizer.epsilon))
    adaptive = optimizer.kind == "adam" or (optimizer.nesterov and optimizer.momentum != 0)
    return step, (None if adaptive else True), (True if adaptive else None)


def train_epoch(params, state: OptimizerState, data: InkIndex | Dense, labels, order, batch_size,
                optimizer: Optimizer, activation, progress=None, stop=None, first_batch=0,
                augment: Augment | None = None):
    """One pass over data in the given order from batch first_batch, updating params and state in place.

    Returns (summed loss, correct predictions, next batch): next batch is the
    number of batches when the epoch is complete, less if stop (an array from
    new_stop_flag()) was raised: the batches before it are fully done. The epoch
    is one compiled call, so progress (if given) hears only of its end. With
    augment, each image is trained on through its transform (augment.py); the
    data must then be an ink index.
    """
    return run_epoch(params, state, data, labels, order, batch_size, optimizer, activation, progress, stop,
                     first_batch, augment)[:3]


def run_epoch(params, state: OptimizerState, data: InkIndex | Dense, labels, order, batch_size,
              optimizer: Optimizer, activation, progress=None, stop=None, first_batch=0,
              augment: Augment | None = None):
    """train_epoch's work; returns its three results and the Buffers of the last batch (the hidden layers'
    activations and the probabilities, which numba_backend's one-batch forward reads)."""
    run = worker_arguments(params, state, data, labels, order, batch_size, optimizer, activation, stop,
                           first_batch, augment)
    ink, order, augmented = run.arguments.ink, run.arguments.order, run.arguments.augmented
    if augmented is not None:  # the first batch's transforms: the workers transform each next one
        first = first_batch * batch_size
        transform_images(ink, order, first, min(first + batch_size, order.size), augmented,
                         augmented.sources[0], (first_batch % 2) * batch_size)
    losses, hits, next_batches = zip(*run_workers(run.n_workers, _epoch_worker, run.n_workers, *run.arguments,
                                                  wait_in_threads=stop is not None))
    next_batch = int(next_batches[0])
    from_blocks(run.arguments.params, params)
    for moments, blocks in ((state.first, run.arguments.velocity), (state.second, run.arguments.second)):
        if blocks is not None:
            from_blocks(blocks, moments)
    state.step[0] += next_batch - first_batch
    if progress is not None:
        progress(min(len(order), next_batch * batch_size))
    return float(sum(losses)), int(sum(hits)), next_batch, run.arguments.buffers


class WorkerArguments(NamedTuple):
    """_epoch_worker's arguments after (worker, n_workers), by name."""

    control: np.ndarray
    stop: np.ndarray
    ink: InkIndex | None
    inputs: np.ndarray | None
    labels: np.ndarray
    order: np.ndarray
    params: Blocked
    velocity: Blocked | None
    second: Blocked | None
    additive: bool | None
    adaptive: bool | None
    buffers: Buffers
    widths: np.ndarray
    batch_size: int
    step: Step
    steps_before: int
    relu: bool | None
    tanh: bool | None
    image_by_image: bool | None
    deep: bool | None
    first_batch: int
    scale: np.float32
    augmented: Augmented | None


class WorkerRun(NamedTuple):
    """An epoch as its workers take it: their count and their arguments."""

    n_workers: int
    arguments: WorkerArguments


def worker_arguments(params, state: OptimizerState, data: InkIndex | Dense, labels, order, batch_size,
                     optimizer: Optimizer, activation, stop=None, first_batch=0, augment: Augment | None = None
                     ) -> WorkerRun:
    """The epoch's data, weights and settings as _epoch_worker takes them (run_epoch's arguments)."""
    ink, inputs = (data, None) if isinstance(data, InkIndex) else (None, data.inputs)
    n_inputs = params[0].shape[0]
    blocked = to_blocks(params)
    step, additive, adaptive = kernel_step(optimizer)
    n_workers, by_image = _workers_for(batch_size, len(blocked.b[0])), image_by_image(batch_size, ink)
    relu, tanh = activation_flags(activation)
    augmented = None
    if augment is not None:
        if ink is None:
            raise ValueError("augmentation reads the ink index: the data must be mostly zeros (ink.prepare)")
        augmented = new_augmented(augment, batch_size, n_workers, ink)
    return WorkerRun(n_workers, WorkerArguments(
        new_control(n_workers), new_stop_flag() if stop is None else stop, ink, inputs,
        labels.astype(np.int64, copy=False), order.astype(np.int64, copy=False), blocked,
        to_blocks(state.first) if state.first is not None else None,
        to_blocks(state.second) if state.second is not None else None, additive, adaptive,
        new_buffers(blocked, batch_size, n_workers, ink, n_inputs, by_image, adaptive),
        np.array([w.shape[1] for w in params[0:-2:2]], np.int64), batch_size, step, int(state.step[0]), relu, tanh,
        by_image, deep_flag(params), first_batch,
        np.float32(input_scale(ink.values.dtype if ink is not None else inputs.dtype)), augmented))


def layer_signatures(run: WorkerRun) -> list[tuple]:
    """(function, argument types) of every layers.py or augment.py function that _epoch_worker calls in this
    run, as it calls them, in that order: what compiling the worker compiles first, each function on its own
    (jit.py). They mirror the calls above, here beside them; a test checks that compiling these leaves none
    for the worker's compile (compile_ahead.py)."""
    a = run.arguments
    ink, inputs, params, buffers, augmented = a.ink, a.inputs, a.params, a.buffers, a.augmented
    t = typeof
    layer = t(buffers.hidden[0])  # every layer's activations and gradients, dlogits too: (blocks, N, BLOCK)
    block_of_W1 = t(params.W1[0])  # also the moments' and the gradient buffer's blocks
    tile = t(Tile(buffers.tiles.values[0], buffers.tiles.masks[0]))  # a worker's
    int64, rows, corrections = types.int64, t(a.order), types.UniTuple(types.float32, 2)
    first_ink = t(ink if augmented is None else augmented.ink)
    optimizer = (t(params), t(a.velocity), t(a.second), t(a.additive), t(a.adaptive))
    activation = (t(a.relu), t(a.tanh))
    backward = (gather_backward, (layer, layer, layer, t(params.W[0]), *activation, int64, int64))
    calls = []
    if a.deep is not None:  # step 1
        calls += [backward, (gather_update, (*optimizer, int64, layer, layer, layer, t(a.step), corrections, int64,
                                             int64, types.literal(False)))]
    calls += [backward, (gather_update, (*optimizer, types.literal(0), layer, layer, layer, t(a.step), corrections,
                                         int64, int64, types.literal(True)))]  # step 2
    # Numba drops a branch only where `argument is None` is decided by the argument's type being None: beside
    # a flag that is True, its None branch is compiled too (by_image: the pixel-by-pixel gradient; Adam: the
    # Nesterov rule).
    by_image = (first_gradient_by_image, (block_of_W1, block_of_W1, first_ink, rows, t(a.scale)))
    if a.additive is not None:
        if inputs is not None:
            calls.append((first_gradient_dense, (block_of_W1, block_of_W1, t(inputs), rows, t(a.scale))))
        else:
            calls.append((first_gradient_by_pixel, (block_of_W1, block_of_W1, first_ink, rows, tile,
                                                    t(a.scale))))
            if a.image_by_image is not None:
                calls.append(by_image)
    if a.adaptive is not None:
        blocks = (t(params), t(a.velocity), t(a.second), int64)
        if inputs is not None:
            calls.append((first_step_dense, (*blocks, block_of_W1, t(inputs), rows, t(a.scale), t(a.step),
                                             corrections)))
        else:
            calls.append((first_step_by_pixel, (*blocks, block_of_W1, block_of_W1, first_ink, rows,
                                                tile, t(a.scale), t(a.step), corrections)))
            if a.image_by_image is not None:
                rule = (block_of_W1, block_of_W1, block_of_W1, block_of_W1, t(a.step), types.float32, corrections)
                calls += [by_image, (rule_from_buffer, (*rule, types.none))]
                if a.second is not None:
                    calls.append((rule_from_buffer, (*rule, types.literal(True))))
    first_layer_forward = first_forward_dense if inputs is not None else first_forward_sparse
    calls.append((first_layer_forward, (layer, t(inputs) if inputs is not None else first_ink, rows, t(params.W1),
                                        t(params.b[0]), *activation, int64, int64, t(a.scale))))
    if augmented is not None:  # step 3
        calls.append((transform_images, (t(ink), rows, int64, int64, t(augmented), t(augmented.sources[0]),
                                         int64)))
    if a.deep is not None:
        calls.append((gather_forward, (layer, layer, t(params.W[0]), t(params.b[0]), *activation, int64, int64)))
    probs, dlogits = t(buffers.probs), t(buffers.dlogits)
    calls += [(output_forward, (probs, layer, t(params.W[0]), t(params.b_out), int64, int64)),
              (output_backward, (dlogits, probs, t(a.labels), rows, int64, int64)),
              (output_bias_update, (*optimizer, dlogits, int64, t(a.step), corrections))]
    return calls
