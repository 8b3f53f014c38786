"""The kernels' Numba cache follows every module of kernels/, not only the file a function is defined in.

The epoch worker holds code LLVM inlined from other modules (layers.py, augment.py); Numba's own cache would
keep serving the worker compiled from their old versions after an edit there (or a `git pull` that changes
only them). The check: in a copy of kernels/ with two small modules of its own, one function calling another
across them, each run in a fresh process against one cache; beside them the dangling link an editor leaves as
a lock file, which the stamp must pass over.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

KERNELS = Path(__file__).resolve().parent.parent / "kernels"

CALLEE = """
from .jit import llvm_inline_jit


@llvm_inline_jit
def value():
    return {value}
"""

CALLER = """
from .jit import jit
from .probe_callee import value


@jit
def read():
    return value()
"""

RUN = ("from kernels.probe_caller import read; r = read(); s = read.stats; "
       "print(r, sum(s.cache_hits.values()), sum(s.cache_misses.values()))")


def test_an_edit_to_an_inlined_function_in_another_module_recompiles_its_caller(tmp_path):
    package = tmp_path / "kernels"
    shutil.copytree(KERNELS, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "probe_caller.py").write_text(CALLER)
    (package / ".#probe_caller.py").symlink_to("user@host.1234:1700000000")  # an editor's lock: passed over
    env = dict(os.environ, PYTHONPATH=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def run(value: int) -> tuple[int, int, int]:
        (package / "probe_callee.py").write_text(CALLEE.format(value=value))
        result = subprocess.run([sys.executable, "-c", RUN], env=env, cwd=tmp_path, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return tuple(int(word) for word in result.stdout.split())

    assert run(1) == (1, 0, 1)  # (result, cache hits, cache misses): compiled
    assert run(1) == (1, 1, 0)  # unchanged: loaded from the cache
    assert run(2) == (2, 0, 1)  # only the callee's module changed: the caller compiled again, reading 2
