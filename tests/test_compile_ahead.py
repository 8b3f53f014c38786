"""Compiling on both cores (kernels/compile_ahead.py): the plan is what the epoch worker compiles, the helper
takes a share of it, and the kernels so compiled train to the same weights as kernels compiled in one go.

Each check compiles into an empty Numba cache in a process of its own: a kernel already in memory or in the
cache is not compiled again, so it would say nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Settings that take the worker through every branch the plan mirrors: augmented sparse uint8 with Nesterov
# (the transform, one rule); a deep dense network with Adam (the later layers, the dense first layer, both
# rules); sparse floats in small batches with plain SGD, the default optimiser (the image-by-image gradient beside
# the pixel one).
CASES = {
    "augmented": dict(layer_sizes=[784, 128, 10], activation=1, dtype="uint8", sparse=True, batch_size=32,
                      optimizer=["sgd", 0.05, 0.9, True, 5e-5], augment_shape=[28, 28, 1]),
    "deep-dense-adam": dict(layer_sizes=[20, 70, 40, 3], activation=2, dtype="float32", sparse=False,
                            batch_size=8, optimizer=["adam", 0.001, 0.0, False, 0.01], augment_shape=None),
    "sparse-floats-by-image": dict(layer_sizes=[784, 130, 64, 5], activation=0, dtype="float32", sparse=True,
                                   batch_size=10, optimizer=["sgd", 0.1, 0.0, False, 5e-5], augment_shape=None),
}

# The layer functions the worker's compile asks for, recorded by wrapping each one's compile, against the plan.
# Those a layer function itself calls (the transform's helpers) are compiled with it, in the process that takes
# it, so only the worker's own requests count (depth 0).
PLAN_AGAINST_WORKER = """
import json, sys
import numpy as np
from numba.core.registry import CPUDispatcher
from fastnet.kernels import augment, compile_ahead, layers, numba_backend
from fastnet.kernels.common import Augment, Optimizer, new_state
requested, depth = [], [0]
for module in (layers, augment):
    for function in vars(module).values():
        if isinstance(function, CPUDispatcher) and function.targetoptions.get("forceinline"):
            def recording(types, function=function, compile=function.compile):
                if depth[0] == 0:
                    requested.append((function.py_func.__name__, str(tuple(types))))
                depth[0] += 1
                try:
                    return compile(types)
                finally:
                    depth[0] -= 1
            function.compile = recording
for name, case in json.loads(sys.argv[1]).items():
    optimizer = Optimizer(*case.pop("optimizer"))
    _, plan = compile_ahead.epoch_plan(**case, optimizer=optimizer)
    requested.clear()
    sizes, count = case["layer_sizes"], 2 * case["batch_size"]
    params = [array for fan_in, fan_out in zip(sizes[:-1], sizes[1:])
              for array in (np.full((fan_in, fan_out), 0.01, np.float32), np.zeros(fan_out, np.float32))]
    inputs = np.zeros((count, sizes[0]), case["dtype"])
    inputs[:, ::7] = 3
    shape = case["augment_shape"]
    data = numba_backend.prepare(inputs, sparse=case["sparse"])
    numba_backend.train_epoch(params, new_state(params, optimizer), data, np.zeros(count, np.int64),
                              np.arange(count), case["batch_size"], optimizer, case["activation"],
                              augment=None if shape is None else
                              Augment(np.tile(np.float32([1, 0, 0, 0, 1, 0]), (count, 1)), tuple(shape)))
    planned = sorted({(function.py_func.__name__, str(tuple(types))) for function, types in plan})
    print(json.dumps([name, sorted(set(requested)), planned]))
"""


def _fresh_cache_run(tmp_path, name: str, code: str, *args: str) -> str:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / name), NUMBA_NUM_THREADS="2", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=900, check=True).stdout


def test_the_plan_is_what_the_worker_compiles(tmp_path):
    """epoch.layer_signatures mirrors the worker's calls: in every case, the layer functions and argument types
    its compile asks for are exactly the plan's (a call added to the worker and not to the plan fails here)."""
    output = _fresh_cache_run(tmp_path, "cache", PLAN_AGAINST_WORKER, json.dumps(CASES))
    results = [json.loads(line) for line in output.splitlines()]
    assert [name for name, _, _ in results] == list(CASES)
    for name, requested, planned in results:
        assert requested == planned, f"{name}: the worker compiled {requested}, the plan says {planned}"


BOTH_CORES_THEN_TRAIN = """
import hashlib, json, sys
from fastnet import _child_environment
from fastnet.datasets import load_mnist
from fastnet.kernels import compile_ahead, numba_backend, predict
from fastnet.kernels.common import Optimizer
from fastnet.training import TrainConfig, train, warm_up
config = TrainConfig(epochs=1, activation="relu", momentum=0.9, nesterov=True, learning_rate=0.05, augment=True)
images, labels = load_mnist("train")
images, labels = images[:3000], labels[:3000]
if sys.argv[1] == "both":
    warm_up(numba_backend, config, images, labels, 10, child_environment=_child_environment(),
            input_shape=(28, 28, 1))
    _, plan = compile_ahead.epoch_plan([784, 128, 10], 1, "uint8", True, 32, config.optimizer_at(0.0), (28, 28, 1))
    loaded = sum(function.stats.cache_hits[tuple(types)] > 0 for function, types in plan)
    again = numba_backend.compile_on_both_cores([784, 128, 10], 1, "uint8", True, 32, config.optimizer_at(0.0),
                                                (28, 28, 1), _child_environment())
    stats = predict._predict_rows.stats
    print(json.dumps(dict(plan=len(plan), loaded=loaded, again=again is None,
                          prediction=[sum(stats.cache_hits.values()), sum(stats.cache_misses.values())])))
network, _ = train(config, (images, labels), None, 10, input_shape=(28, 28, 1))
print(hashlib.sha256(b"".join(p.tobytes() for p in network.params)).hexdigest())
"""


@pytest.mark.xdist_group("busy_or_timed")  # it takes both cores: not beside test_serve's timings
def test_on_an_empty_cache_a_second_process_shares_the_compile_to_the_same_weights(tmp_path):
    """warm_up on an empty cache: the helper compiles part of the worker's layer functions (this process loads
    them from the cache) and the prediction kernel (loaded: a hit, not a miss); with the cache warm no helper
    starts. An augmented epoch then trains to the same weights as with every kernel compiled in one process."""
    both = _fresh_cache_run(tmp_path, "both", BOTH_CORES_THEN_TRAIN, "both").splitlines()
    alone = _fresh_cache_run(tmp_path, "alone", BOTH_CORES_THEN_TRAIN, "alone").splitlines()
    report = json.loads(both[0])
    assert 0 < report["loaded"] < report["plan"], f"the two processes should each compile a share: {report}"
    assert report["again"] and report["prediction"] == [1, 0], report
    assert both[1] == alone[0], "kernels compiled on both cores gave other weights than compiled in one"
