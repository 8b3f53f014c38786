"""`fastnet bench`: how fast each backend trains and predicts, beside the peers people would pick instead.

Every measurement runs in a fresh subprocess (its own threads setting, its own
peak memory), from the same initial weights and the same shuffles, with plain
SGD at a constant learning rate that suits the batch size. Seconds per epoch is
the fastest epoch measured; test accuracy is after the last one.
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import _child_environment
from .errors import FastnetError

SYSTEMS = ("numba", "numpy", "torch", "sklearn", "jax")
PEERS = ("torch", "sklearn", "jax")
# Dense-equivalent work per image: 2 flops per weight forward, 4 backward (the zeros fastnet skips still count).
FLOPS_PER_IMAGE = 6 * (784 * 128 + 128 * 10)


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM where Linux has it: ru_maxrss survives exec, so a child
    forked from a big process (pytest, say) would report its parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def learning_rate_for(batch_size: int) -> float:
    """Plain SGD rate used at each batch size: 0.05 per image, at most 1.0 (mean loss over the batch)."""
    return min(1.0, 0.05 * batch_size)


@dataclass
class Record:
    backend: str
    batch_size: int
    threads: int
    epochs: int
    seconds_per_epoch: float
    images_per_second: float
    gflops: float  # dense-equivalent GFLOP/s
    test_accuracy: float
    peak_rss_mb: float
    speedup_over_numpy: float | None = None
    note: str = ""
    busy: int = 0  # competing busy processes while it was measured (bench --busy)


def measure(system: str, batch_size: int, threads: int, epochs: int, timeout: float = 3600) -> Record | None:
    """One measurement in a subprocess; None if that peer is not installed."""
    env = _child_environment(NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                             OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                             XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}")
    result = _run_child(["-m", "fastnet.bench", system, str(batch_size), str(threads), str(epochs)], env,
                        f"the {system} measurement", timeout=timeout, success=(0, 3))
    if result.returncode == 3:
        return None
    return Record(**json.loads(result.stdout.strip().splitlines()[-1]))


@contextlib.contextmanager
def busy_processes(count: int):
    """count processes that each keep a core busy, for the duration: a busy machine, as shared ones are."""
    processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


def run(batch_sizes=(1, 32, 128), thread_counts=(1, 2), epochs: int = 1, peers: bool = False,
        report=lambda record: None, busy: int = 0) -> list[Record]:
    """Measure numba (each thread count) and numpy (and the installed peers) at each batch size.

    The Numba kernels are compiled into the cache first, for each batch size
    (batches under 16 images have an epoch kernel of their own), so that no
    measured process pays for compiling, in seconds or in peak memory.
    """
    _run_child(["-c", _WARM_UP, *map(str, batch_sizes)], _child_environment(), "compiling the kernels")
    with busy_processes(busy):
        return _measure_all(batch_sizes, thread_counts, epochs, peers, report, busy)


def _measure_all(batch_sizes, thread_counts, epochs, peers, report, busy) -> list[Record]:
    records = []
    for batch_size in batch_sizes:
        systems = [("numba", t) for t in thread_counts] + [("numpy", max(thread_counts))]
        if peers:
            systems += [(peer, max(thread_counts)) for peer in PEERS]
        numpy_seconds = None
        for system, threads in systems:
            record = measure(system, batch_size, threads, epochs)
            if record is None:
                continue
            record.busy = busy
            if system == "numpy":
                numpy_seconds = record.seconds_per_epoch
            records.append(record)
        for record in records:
            if record.batch_size == batch_size and numpy_seconds:
                record.speedup_over_numpy = numpy_seconds / record.seconds_per_epoch
        for record in records:
            if record.batch_size == batch_size:
                report(record)
    return records


def _run_child(arguments: list[str], env: dict, what: str, timeout: float | None = None,
               success: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """python *arguments in a fresh process, its output captured; a FastnetError naming what failed and the
    child's last line of stderr if it exits with a code outside success."""
    result = subprocess.run([sys.executable, *arguments], env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode not in success:
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise FastnetError(f"bench: {what} failed: {last}")
    return result


# A fresh process that compiles (or loads) the Numba kernels as training does, for the batch sizes given as
# arguments (training's default if none); prints the seconds that took and the seconds since it started.
_WARM_UP = ("import sys, time; t = time.perf_counter(); "
            "from fastnet.datasets import load_mnist; from fastnet.kernels import get_backend; "
            "from fastnet.training import TrainConfig, warm_up; images, labels = load_mnist('test'); "
            "configs = [TrainConfig(batch_size=int(b)) for b in sys.argv[1:]] or [TrainConfig()]; "
            "t0 = time.perf_counter(); "
            "[warm_up(get_backend('numba'), config, images, labels, 10) for config in configs]; "
            "print(time.perf_counter() - t0, time.perf_counter() - t)")


def startup_seconds(repeats: int = 2) -> dict:
    """Numba kernels: compile into an empty cache, then start up from it (import + load), in fresh processes;
    each the best of `repeats` (each time a new empty cache), as epochs are the fastest of several: on a shared
    machine, noise only ever adds."""
    import tempfile

    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            env = _child_environment(NUMBA_CACHE_DIR=cache)
            cold.append(_run_child(["-c", _WARM_UP], env, "compiling the kernels into an empty cache").stdout)
            warm.append(_run_child(["-c", _WARM_UP], env, "loading the kernels from the cache").stdout)
    warm_kernels, warm_total = min(tuple(float(x) for x in out.split()) for out in warm)
    return {"compile_empty_cache": min(float(out.split()[0]) for out in cold), "load_warm_cache": warm_kernels,
            "startup_warm_cache": warm_total}


def predict_images_per_second(threads: int) -> float:
    """Numba prediction over the 10,000 test images (best of 20), with the shipped parameters' shape."""
    import numba

    from .datasets import load_mnist
    from .kernels import numba_backend
    from .model import Network

    numba.set_num_threads(threads)
    images = load_mnist("test")[0]
    network = Network.initialise(784, 128, 10, "sigmoid", np.random.default_rng(0))
    probs = np.empty((len(images), 10), np.float32)
    numba_backend.predict(probs, images, network.params, 0)
    best = min(_timed(numba_backend.predict, probs, images, network.params, 0) for _ in range(20))
    return len(images) / best


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def format_table(records: list[Record]) -> str:
    header = ("backend", "batch", "threads", "s/epoch", "images/s", "GFLOP/s", "vs numpy", "test acc", "peak MB")
    rows = [header] + [(r.backend, str(r.batch_size), str(r.threads), f"{r.seconds_per_epoch:.3f}",
                        f"{r.images_per_second:,.0f}", f"{r.gflops:.1f}",
                        f"{r.speedup_over_numpy:.1f}x" if r.speedup_over_numpy else "-",
                        f"{100 * r.test_accuracy:.2f}%", f"{r.peak_rss_mb:.0f}") for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


def plot(records: list[Record], path: Path) -> None:
    from .plot import plt, save_figure

    figure, axis = plt.subplots(figsize=(9, 4.5), constrained_layout=True)
    labels = sorted({(r.backend, r.threads) for r in records}, key=lambda bt: (SYSTEMS.index(bt[0]), bt[1]))
    batch_sizes = sorted({r.batch_size for r in records})
    width = 0.8 / len(labels)
    for i, (backend, threads) in enumerate(labels):
        heights = [next((r.seconds_per_epoch for r in records if (r.backend, r.threads, r.batch_size) ==
                         (backend, threads, b)), np.nan) for b in batch_sizes]
        axis.bar(np.arange(len(batch_sizes)) + i * width, heights, width, label=f"{backend}, {threads} thr")
    axis.set(yscale="log", ylabel="seconds per 60,000-image epoch (log)", xlabel="batch size",
             xticks=np.arange(len(batch_sizes)) + 0.4 - width / 2, xticklabels=[str(b) for b in batch_sizes],
             title="training speed (lower is better)")
    axis.legend(fontsize=8, ncols=2)
    save_figure(figure, path)


# ---------------------------------------------------------------- the child process


def _measure_here(system: str, batch_size: int, threads: int, epochs: int) -> Record:
    from . import peers
    from .datasets import load_mnist
    from .model import Network

    (images, labels), (test_images, test_labels) = load_mnist("train"), load_mnist("test")
    network = Network.initialise(784, 128, 10, "sigmoid", np.random.default_rng(0))
    rng = np.random.default_rng(1)
    orders = [rng.permutation(len(images)) for _ in range(epochs)]
    learning_rate = learning_rate_for(batch_size)
    train = peers.TRAINERS[system]
    seconds, accuracy, note = train(network, images, labels, test_images, test_labels, orders, batch_size,
                                    learning_rate, threads)
    best = min(seconds)
    return Record(system, batch_size, threads, epochs, best, len(images) / best,
                  len(images) * FLOPS_PER_IMAGE / best / 1e9, accuracy, peak_rss_mb(), note=note)


if __name__ == "__main__":
    system, batch_size, threads, epochs = sys.argv[1], *map(int, sys.argv[2:5])
    try:
        record = _measure_here(system, batch_size, threads, epochs)
    except ImportError:
        raise SystemExit(3)  # that peer is not installed
    print(json.dumps(asdict(record)))
