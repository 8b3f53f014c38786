"""Numba kernels: compile into an empty cache, and start-up (import + load) from a warm one, in fresh processes."""

from __future__ import annotations

from fastnet.bench import startup_seconds


def test_compile_and_warm_startup(benchmark):
    seconds = benchmark.pedantic(startup_seconds, rounds=1, iterations=1)
    benchmark.extra_info.update(seconds)
    assert seconds["compile_empty_cache"] > seconds["load_warm_cache"]
