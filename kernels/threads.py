"""Threads for the Numba kernels without Numba's parallel regions.

Each worker is a Python thread calling the same nogil compiled function; the
workers meet twice per batch through progress counters, published with release
stores and read with acquire loads (real LLVM atomics, so the compiler keeps
the ordering and the other core sees the writes made before the counter).

Why not prange: every prange region is compiled as a gufunc that LLVM then
optimises again in three wrapper layers; with two regions that was ~4 s of a
~11 s cold compile. A launch also cost ~1.3 us per batch.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numba import njit

from .intrinsics import load_acquire, spin_pause, store_release

SLOT = 8  # int64s between two counters: 64 bytes, one cache line each
STOP_AT = 0  # control[STOP_AT]: the batch the workers stop at, -1 while none; worker w's progress is slot w + 1


@njit(cache=True, nogil=True, inline="always")  # inlined: no compile of its own
def publish(control, slot, step):
    """Tell the other workers that the owner of `slot` has finished `step`."""
    store_release(control, slot * SLOT, np.int64(step))


@njit(cache=True, nogil=True, inline="always")  # inlined: no compile of its own
def wait_for(control, slot, step):
    """Spin until the owner of `slot` has published `step` (or later)."""
    while load_acquire(control, slot * SLOT) < step:
        spin_pause()


def thread_count() -> int:
    """Threads to use: numba's setting (NUMBA_NUM_THREADS, lowered by numba.set_num_threads)."""
    return numba.get_num_threads()


def new_stop_flag() -> np.ndarray:
    """A flag to stop training at the next batch boundary: set stop[0] = 1 (from a signal handler, say)."""
    return np.zeros(SLOT, np.int64)


def new_control(n_workers: int) -> np.ndarray:
    """Counters for one run of the workers, each on its own cache line (see STOP_AT)."""
    control = np.zeros((n_workers + 1) * SLOT, np.int64)
    control[STOP_AT] = -1
    return control


def run_workers(n_workers: int, work, *args, wait_in_threads: bool = False):
    """work(worker, *args) on n_workers threads; returns their results, in worker order.

    Worker 0 runs on this thread, unless wait_in_threads: then every worker gets a
    thread of its own and this one waits in short joins, so that Python signal
    handlers (Ctrl-C) still run here while the compiled workers are busy.
    """
    results = [None] * n_workers
    threads = [threading.Thread(target=lambda w=w: results.__setitem__(w, work(w, *args)), daemon=True)
               for w in range(0 if wait_in_threads else 1, n_workers)]
    for thread in threads:
        thread.start()
    if not wait_in_threads:
        results[0] = work(0, *args)
    for thread in threads:
        while thread.is_alive():
            thread.join(0.05)
    return results
