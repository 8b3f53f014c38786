"""Benchmarks (pytest-benchmark): `python -m pytest bench/`. The normal test run never collects these."""

from __future__ import annotations

import pytest


@pytest.fixture
def set_threads():
    """Set the numba thread count for one benchmark, and put it back afterwards."""
    import numba

    before = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(before)


