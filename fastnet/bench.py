"""`fastnet bench`: how fast each backend trains and predicts, beside the peers people would pick instead.

Every measurement runs in a fresh subprocess (its own threads setting, its own
peak memory), on one workload (a network, an optimiser, MNIST or synthetic dense
features), from the same initial weights and the same shuffles, at a constant
learning rate that suits the batch size (SGD) or Adam's usual one. Seconds per
epoch is the fastest epoch measured; test accuracy is after the last one.

On a shared machine one measurement of each system can land in a quiet minute
for one and a busy one for another. With rounds, every system is measured that
many times, in turn (round-robin: the measurements a ratio pairs are taken close
together, the rounds minutes apart). Each row is the round whose time is the
median, and a ratio between two systems is the median of the rounds' ratios, so
it need not equal the ratio of the two rows' times. With an even number of rounds
each is the lower of the middle two: the faster round, the smaller ratio.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import _child_environment
from .errors import FastnetError

SYSTEMS = ("numba", "numba-augment", "numpy", "torch", "sklearn", "jax")
PEERS = ("torch", "sklearn", "jax")
DENSE_IMAGES = (10_000, 2_000)  # training and test rows of the synthetic dense workload


@dataclass(frozen=True)
class Workload:
    """What is timed: the network's hidden layers and activation, the optimiser, and the data: MNIST (dense 0)
    or `dense` synthetic float features (DENSE_IMAGES rows, 10 classes)."""

    hidden: tuple[int, ...] = (128,)
    activation: str = "sigmoid"
    optimizer: str = "sgd"
    dense: int = 0
    augment: bool = False  # also time fastnet's augmented epochs (system numba-augment), MNIST only

    def layer_sizes(self) -> tuple[int, ...]:
        return (self.dense or 784, *self.hidden, 10)

    def describe(self) -> str:
        data = f"{self.dense} dense features" if self.dense else "MNIST"
        return (f"{'-'.join(map(str, self.layer_sizes()))} {self.activation}, {self.optimizer}, {data}"
                + (", with and without augmentation" if self.augment else ""))

    def flops_per_image(self) -> int:
        """Dense-equivalent work: 2 flops per weight forward, 4 backward (the zeros fastnet skips still count)."""
        sizes = self.layer_sizes()
        return 6 * sum(fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))

    def learning_rate(self, batch_size: int) -> float:
        """Plain SGD: 0.05 per image in the batch, at most 1.0 (the loss is the batch's mean); Adam: 0.001."""
        return 0.001 if self.optimizer == "adam" else min(1.0, 0.05 * batch_size)

    def data(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(training inputs, labels), (test inputs, labels)."""
        from .datasets import load_mnist

        if not self.dense:
            return load_mnist("train"), load_mnist("test")
        rng = np.random.default_rng(5)  # ten Gaussian clusters, standardised: learnable, and dense
        centres = rng.standard_normal((10, self.dense)).astype(np.float32)
        sets = []
        for count in DENSE_IMAGES:
            labels = rng.integers(0, 10, count).astype(np.uint8)
            inputs = centres[labels] + 2.0 * rng.standard_normal((count, self.dense)).astype(np.float32)
            sets.append((np.ascontiguousarray(inputs / np.float32(np.sqrt(5.0))), labels))
        return sets[0], sets[1]


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
    workload: str = ""  # Workload.describe()
    round_seconds: list[float] = field(default_factory=list)  # seconds_per_epoch of each round (bench --rounds)


def measure(system: str, batch_size: int, threads: int, epochs: int, workload: Workload = Workload(),
            timeout: float = 3600) -> Record | None:
    """One measurement in a subprocess; None if that peer is not installed."""
    env = _child_environment(NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                             OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                             XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}")
    result = _run_child(["-m", "fastnet.bench", system, str(batch_size), str(threads), str(epochs),
                         json.dumps(asdict(workload))], env, f"the {system} measurement", timeout=timeout,
                        success=(0, 3))
    if result.returncode == 3:
        return None
    return Record(**json.loads(result.stdout.strip().splitlines()[-1]))


# A process that keeps a core busy until its parent (argument 1: known before it starts, which bench may not
# outlive) is gone: bench killed, say, it would spin on, orphaned.
_SPIN = ("import os, sys\nwhile os.getppid() == int(sys.argv[1]):\n"
         "    for _ in range(1_000_000):\n        pass")


@contextlib.contextmanager
def busy_processes(count: int):
    """count processes that each keep a core busy, for the duration: a busy machine, as shared ones are."""
    processes = [subprocess.Popen([sys.executable, "-c", _SPIN, str(os.getpid())]) for _ in range(count)]
    try:
        yield
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


def run(batch_sizes=(1, 32, 128), thread_counts=(1, 2), epochs: int = 1, peers: bool = False,
        report=lambda record: None, busy: int = 0, workload: Workload = Workload(), rounds: int = 1) -> list[Record]:
    """Measure numba (each thread count) and numpy (and the installed peers) at each batch size, each `rounds`
    times in turn (the module docstring says how the rounds are summed up); report(record) hears of each
    measurement as it is made.

    The Numba kernels are compiled into the cache first, for each batch size
    (batches under 16 images have an epoch kernel of their own), so that no
    measured process pays for compiling, in seconds or in peak memory.
    """
    _run_child(["-c", _WARM_UP, json.dumps(asdict(workload)), *map(str, batch_sizes)], _child_environment(),
               "compiling the kernels")
    with busy_processes(busy):
        return _measure_all(batch_sizes, thread_counts, epochs, peers, report, busy, workload, rounds)


def _measure_all(batch_sizes, thread_counts, epochs, peers, report, busy, workload, rounds) -> list[Record]:
    records = []
    thread_counts = list(dict.fromkeys(thread_counts))  # each once: a system's rounds are keyed by its threads
    for batch_size in batch_sizes:
        systems = [("numba", t) for t in thread_counts] + [("numpy", max(thread_counts))]
        if workload.augment:
            systems[len(thread_counts):len(thread_counts)] = [("numba-augment", t) for t in thread_counts]
        if peers:
            systems += [(peer, max(thread_counts)) for peer in PEERS]
        measured = {}  # (system, threads): its record in each round
        left_out = set()  # peers not installed, or broken
        for _ in range(rounds):
            for system, threads in systems:
                if system in left_out:
                    continue
                try:
                    record = measure(system, batch_size, threads, epochs, workload)
                except FastnetError as error:
                    if system not in PEERS:
                        raise
                    warnings.warn(f"{error}; {system} left out", stacklevel=2)  # (a broken install, say)
                    record = None
                if record is None:
                    left_out.add(system)
                    measured.pop((system, threads), None)
                    continue
                record.busy = busy
                measured.setdefault((system, threads), []).append(record)
                report(record)
        numpy_seconds = [r.seconds_per_epoch for r in measured.get(("numpy", max(thread_counts)), [])]
        for each_round in measured.values():
            seconds = [r.seconds_per_epoch for r in each_round]
            record = each_round[seconds.index(statistics.median_low(seconds))]
            record.round_seconds = seconds
            if numpy_seconds:
                record.speedup_over_numpy = statistics.median_low(round_ratios(numpy_seconds, seconds))
            records.append(record)
    return records


def round_ratios(seconds: list[float], against: list[float]) -> list[float]:
    """seconds / against in each round (lists of one length)."""
    return [s / a for s, a in zip(seconds, against, strict=True)]


def format_ratios(records: list[Record]) -> str:
    """For each batch size, numba on its most threads against every other system: the ratio of seconds per epoch
    in each round and their median (bench --rounds)."""
    lines = []
    for batch_size in sorted({r.batch_size for r in records}):
        rows = [r for r in records if r.batch_size == batch_size]
        numba = max((r for r in rows if r.backend == "numba"), key=lambda r: r.threads, default=None)
        if numba is None:
            continue
        lines.append(f"batch {batch_size}, numba on {numba.threads} thread(s) "
                     f"({' '.join(f'{s:.3f}' for s in numba.round_seconds)} s) against:")
        for other in rows:
            if other is numba:
                continue
            ratios = round_ratios(other.round_seconds, numba.round_seconds)
            lines.append(f"  {other.backend} ({other.threads} thread(s)): "
                         + " ".join(f"{ratio:.1f}x" for ratio in ratios)
                         + f", median {statistics.median_low(ratios):.1f}x")
    return "\n".join(lines)


def _run_child(arguments: list[str], env: dict, what: str, timeout: float | None = None,
               success: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """python *arguments in a fresh process, its output captured; a FastnetError naming what failed and the
    child's last line of stderr if it exits with a code outside success."""
    result = subprocess.run([sys.executable, *arguments], env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode not in success:
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise FastnetError(f"bench: {what} failed: {last}")
    return result


# A fresh process that compiles (or loads) the Numba kernels as training does (on both cores, as `train`): for a
# workload (JSON, or the default) and the batch sizes given as arguments (training's default batch size if none);
# prints the seconds that took and the seconds since it started.
_WARM_UP = ("import json, sys, time; t = time.perf_counter(); "
            "from fastnet import _child_environment; "
            "from fastnet.bench import Workload; from fastnet.kernels import get_backend; "
            "from fastnet.training import TrainConfig, warm_up; "
            "workload = Workload(**json.loads(sys.argv[1])) if len(sys.argv) > 1 else Workload(); "
            "(inputs, labels), _ = workload.data(); inputs, labels = inputs[:10000], labels[:10000]; "
            "configs = [TrainConfig(batch_size=int(b), hidden=tuple(workload.hidden), activation=workload.activation, "
            "optimizer=workload.optimizer, momentum=0.0, augment=False) for b in sys.argv[2:] or "
            "[TrainConfig().batch_size]]; "
            "t0 = time.perf_counter(); "
            "configs += [TrainConfig(**dict(c.as_dict(), augment=True)) for c in configs if workload.augment]; "
            "[warm_up(get_backend('numba'), config, inputs, labels, 10, child_environment=_child_environment(), "
            "input_shape=(28, 28, 1)) "
            "for config in configs]; "
            "print(time.perf_counter() - t0, time.perf_counter() - t)")


def startup_seconds(workload: Workload = Workload(), repeats: int = 2) -> dict:
    """The workload's Numba kernels: compile into an empty cache, then start up from it (import + load), in fresh
    processes; each the best of `repeats` (each time a new empty cache), as epochs are the fastest of several: on
    a shared machine, noise only ever adds."""
    import tempfile

    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            env = _child_environment(NUMBA_CACHE_DIR=cache)
            arguments = ["-c", _WARM_UP, json.dumps(asdict(workload))]
            cold.append(_run_child(arguments, env, "compiling the kernels into an empty cache").stdout)
            warm.append(_run_child(arguments, env, "loading the kernels from the cache").stdout)
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
    network = Network.initialise((784, 128, 10), "sigmoid", np.random.default_rng(0))
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
    axis.set(yscale="log", ylabel="seconds per epoch (log)", xlabel="batch size",
             xticks=np.arange(len(batch_sizes)) + 0.4 - width / 2, xticklabels=[str(b) for b in batch_sizes],
             title="training speed (lower is better)")
    axis.legend(fontsize=8, ncols=2)
    save_figure(figure, path)


# ---------------------------------------------------------------- the child process


def _measure_here(system: str, batch_size: int, threads: int, epochs: int, workload: Workload) -> Record:
    from . import peers
    from .model import Network

    (inputs, labels), (test_inputs, test_labels) = workload.data()
    network = Network.initialise(workload.layer_sizes(), workload.activation, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    orders = [rng.permutation(len(inputs)) for _ in range(epochs)]
    train = peers.TRAINERS[system]
    seconds, accuracy, note = train(network, inputs, labels, test_inputs, test_labels, orders, batch_size,
                                    workload, threads)
    best = min(seconds)
    return Record(system, batch_size, threads, epochs, best, len(inputs) / best,
                  len(inputs) * workload.flops_per_image() / best / 1e9, accuracy, peak_rss_mb(), note=note,
                  workload=workload.describe())


if __name__ == "__main__":
    system, (batch_size, threads, epochs) = sys.argv[1], map(int, sys.argv[2:5])
    workload = Workload(**{key: tuple(value) if key == "hidden" else value
                           for key, value in json.loads(sys.argv[5]).items()})
    try:
        record = _measure_here(system, batch_size, threads, epochs, workload)
    except ImportError:
        raise SystemExit(3)  # that peer is not installed
    print(json.dumps(asdict(record)))
