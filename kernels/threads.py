"""Threads for the Numba kernels without Numba's parallel regions.

Each worker is a Python thread calling the same nogil compiled function; the
workers meet a few times per batch (epoch.py says when) through progress counters, published with release
stores and read with acquire loads (real LLVM atomics, so the compiler keeps
the ordering and the other core sees the writes made before the counter).

A worker that arrives first spins briefly (a partner that is running arrives
within microseconds), then sleeps in short naps: on a busy machine the partner
it waits for may have lost its core to another process, and spinning would only
keep it off. wait_for reports the naps, so that the epoch
can tell a busy machine from an idle one and go on with one worker.

Why not prange: every prange region is compiled as a gufunc that LLVM then
optimises again in three wrapper layers, which made up a third of the cold
compile, and each launch costs microseconds per batch (docs/design.md).
"""

from __future__ import annotations

import sys
import threading

import numba
import numpy as np
from numba import types

from .intrinsics import load_acquire, spin_pause, store_release
from .jit import meeting_jit

# 128 bytes between two counters: a cache line on Apple's Arm cores, two on x86 (whose adjacent-line
# prefetcher fetches them in pairs), so no two workers' counters share one.
SLOT = 16
STOP_AT = 0  # control[STOP_AT]: the batch the workers stop at, -1 while none
SOLO_AT = 1  # control[SOLO_AT]: the batch from which worker 0 carries on alone, -1 while none
# Worker w's progress is slot w + 1.

SPINS = 3000  # spin-wait hints before napping, ~100 us on current x86 (a PAUSE takes 30-50 ns): an idle partner
# arrives within it, while napping sooner cost the idle machine speed. Yielding instead (sched_yield) handed the
# core to a busy process for its whole time slice.
NAP_MICROSECONDS = 20  # the OS adds its timer slack (50 us on Linux): a nap lasts ~70 us
if sys.platform == "win32":
    _nap = types.ExternalFunction("Sleep", types.void(types.uint32))  # milliseconds: Sleep(0) yields the core
    NAP_UNITS = 0
else:
    _nap = types.ExternalFunction("usleep", types.int32(types.uint32))
    NAP_UNITS = NAP_MICROSECONDS


@meeting_jit  # inlined: no compile of its own
def publish(control, slot, step):
    """Tell the other workers that the owner of `slot` has finished `step`."""
    store_release(control, slot * SLOT, np.int64(step))


@meeting_jit  # inlined: no compile of its own
def wait_for(control, slot, step):
    """Wait until the owner of `slot` has published `step` (or later): spin, then nap. Returns the number of
    naps (0 unless the partner was kept from running)."""
    rounds = 0
    while load_acquire(control, slot * SLOT) < step:
        if rounds < SPINS:
            spin_pause()
        else:
            _nap(np.uint32(NAP_UNITS))
        rounds += 1
    return max(rounds - SPINS, 0)


def thread_count() -> int:
    """Threads to use: numba's setting (NUMBA_NUM_THREADS, lowered by numba.set_num_threads)."""
    return numba.get_num_threads()


def new_stop_flag() -> np.ndarray:
    """A flag to stop training at the next batch boundary: set stop[0] = 1 (from a signal handler, say)."""
    return np.zeros(SLOT, np.int64)


def new_control(n_workers: int) -> np.ndarray:
    """Counters for one run of the workers, each on its own cache line (see STOP_AT and SOLO_AT)."""
    control = np.zeros((n_workers + 1) * SLOT, np.int64)
    control[STOP_AT] = control[SOLO_AT] = -1
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
