"""Compiling on both cores into an empty cache: Numba compiles one function at a time per process.

Compiling the epoch worker first compiles each layer function it calls, on its own (jit.py), then the worker
itself. So before the worker, this process and a helper process share out those layer functions
(epoch.layer_signatures): each in turn takes the next one that neither has taken (a file created with O_EXCL
in a folder of claims) and compiles it into the cache. Once the helper has finished its share it says so, and
goes on to compile the prediction kernel; this process then compiles the worker, loading the helper's share
from the cache. What either compiles is what the worker's own compile would have compiled: the kernels, and so
the weights, are the same (tests/test_compile_ahead.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from numba import typeof

from .augment import transform_images
from .common import Augment, Optimizer, new_state
from .epoch import _epoch_worker, layer_signatures, worker_arguments
from .ink import Dense, ink_index
from .layers import gather_update, output_bias_update
from .predict import _predict_rows, predict
from .threads import thread_count

READY = "ready"  # the helper's line once its share of the layer functions is in the cache
# The longest compiles (the optimisers' branches; the transform's reads), taken first so that the two processes
# finish their shares nearer together.
LONGEST_FIRST = (gather_update, transform_images, output_bias_update)


def _stand_in_params(layer_sizes: list[int]) -> list[np.ndarray]:
    """Zero weights and biases of these layer sizes (D, H..., K): what the kernels are compiled for is their
    types, not their values."""
    return [array for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:])
            for array in (np.zeros((fan_in, fan_out), np.float32), np.zeros(fan_out, np.float32))]


def epoch_plan(layer_sizes: list[int], activation: int, dtype: str, sparse: bool, batch_size: int,
               optimizer: Optimizer, augment_shape: tuple[int, int, int] | None) -> tuple[tuple, list[tuple]]:
    """(the worker's argument types, its layer functions' signatures) for an epoch of this network, optimiser
    and data (inputs of dtype, read sparse or not, augmented with images of augment_shape or not); built on a
    few rows of zeros, which have the real data's types."""
    params, count = _stand_in_params(layer_sizes), 2
    rows = np.zeros((count, layer_sizes[0]), dtype)
    data = ink_index(rows) if sparse else Dense(rows)  # (prepare's types, without compiling its listing)
    augment = None if augment_shape is None else Augment(np.zeros((count, 6), np.float32), tuple(augment_shape))
    run = worker_arguments(params, new_state(params, optimizer), data, np.zeros(count, np.int64),
                           np.arange(count, dtype=np.int64), batch_size, optimizer, activation, augment=augment)
    worker_types = tuple(typeof(argument) for argument in (0, run.n_workers, *run.arguments))
    signatures = layer_signatures(run)
    return worker_types, sorted(signatures, key=lambda call: call[0] not in LONGEST_FIRST)  # (a stable sort)


def compile_prediction(layer_sizes: list[int], activation: int, dtype: str) -> None:
    """Compile (or load from the cache) the prediction kernel for networks of these layer sizes, activation and
    mostly-zero inputs of this dtype, as a caller would use it."""
    predict(np.empty((1, layer_sizes[-1]), np.float32), np.zeros((1, layer_sizes[0]), dtype),
            _stand_in_params(layer_sizes), activation)


def _is_cached(dispatcher, argument_types: tuple) -> bool:
    """Whether Numba's cache holds dispatcher's code for these argument types (True where this Numba's cache
    is not one this knows how to read, or is off: then nothing is compiled ahead)."""
    try:
        cache = dispatcher._cache  # Numba internals, hence the guard
        return cache._index_key(argument_types, dispatcher.targetctx.codegen()) in cache._cache_file._load_index()
    except (AttributeError, OSError, TypeError):
        return True


def compile_claimed(signatures: list[tuple], claims: Path) -> None:
    """Compile each function of signatures (for all its argument types there) that no other process has claimed
    in the folder claims, claiming it first. By function, not by signature: Numba keeps one cache index per
    function, which two processes writing at once could leave with one entry lost."""
    functions = list(dict.fromkeys(function for function, _ in signatures))
    for number, function in enumerate(functions):
        try:
            os.close(os.open(claims / str(number), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        for other, argument_types in signatures:
            if other is function:
                function.compile(argument_types)


def helper(plan_json: str, claims: str) -> None:
    """The helper process's work (plan_json: epoch_plan's arguments, the optimiser as a list)."""
    plan = json.loads(plan_json)
    if claims:
        compile_claimed(epoch_plan(**dict(plan, optimizer=Optimizer(*plan["optimizer"])))[1], Path(claims))
        print(READY, flush=True)
    compile_prediction(plan["layer_sizes"], plan["activation"], plan["dtype"])


def compile_on_both_cores(layer_sizes: list[int], activation: int, dtype: str, sparse: bool, batch_size: int,
                          optimizer: Optimizer, augment_shape: tuple[int, int, int] | None, env: dict
                          ) -> subprocess.Popen | None:
    """On an empty cache, compile the epoch's layer functions here and in a second process (environment env: one
    that imports this package), which then compiles the prediction kernel; returns once the layer functions
    are all in the cache, with the process to wait for before predicting. None where there is nothing to gain
    (all cached, one thread, or a Numba whose cache this does not know: kernels are then compiled when used)."""
    if thread_count() < 2:
        return None
    epoch = dict(layer_sizes=list(map(int, layer_sizes)), activation=int(activation), dtype=dtype,
                 sparse=bool(sparse), batch_size=int(batch_size),
                 augment_shape=None if augment_shape is None else list(map(int, augment_shape)))
    worker_types, signatures = epoch_plan(**epoch, optimizer=optimizer)
    try:
        # any prediction kernel compiled for these sources (Numba internals: an index that is missing, of another
        # Numba or of older sources reads as empty)
        predicting = not _predict_rows._cache._cache_file._load_index()
    except (AttributeError, OSError, TypeError):
        return None
    share = not _is_cached(_epoch_worker, worker_types)
    if not (share or predicting):
        return None
    plan = json.dumps(dict(epoch, optimizer=list(optimizer)))
    code = f"from {__package__}.compile_ahead import helper; import sys; helper(sys.argv[1], sys.argv[2])"
    try:
        with tempfile.TemporaryDirectory(prefix="fastnet-claims-") as claims:
            process = subprocess.Popen([sys.executable, "-c", code, plan, claims if share else ""], env=env,
                                       stdout=subprocess.PIPE if share else subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, text=True)
            if share:
                compile_claimed(signatures, Path(claims))
                with process.stdout:
                    process.stdout.readline()  # READY, or nothing if it died: the worker's compile does the rest
    except OSError:  # no temporary folder or no process: the kernels are compiled here, when used
        return None
    return process
