"""The kernels' Numba cache follows every module of kernels/, not only the file a function is defined in.

The epoch worker holds code LLVM inlined from other modules (layers.py, augment.py); Numba's own cache would
keep serving the worker compiled from their old versions after an edit there (or a `git pull` that changes
only them). The check: in a copy of kernels/ with two small modules of its own, one function calling another
across them, each run in a fresh process against one cache; beside them the dangling link an editor leaves as
a lock file, which the stamp must pass over.

Processes share that cache, and Numba's own reads and writes of it take no lock (the kind of race
numba/numba#10128 reports). The checks of kernels/jit.py's lock hold one save midway, as a slow disk or a busy
machine would, and run another save or a load meanwhile, on threads (flock's locks belong to each opening of the
file, so threads contend as processes do). With Numba's own class in place of _LockedIndexFile both fail: the
other save's entry is lost, and the load reads an older version's data under the new entry.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fastnet.kernels import jit
from fastnet.kernels.jit import _LockedIndexFile
from fastnet.kernels.predict import _predict_rows

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


HOLD = 1.0  # seconds a save is held midway: far longer than the other save or load takes


def _held_save(files: _LockedIndexFile, key, payload, hold_when) -> threading.Thread:
    """files.save(key, payload) on a thread, held for HOLD seconds at the first pickling that hold_when picks
    (of the index's contents or of the payload); returns once the hold has begun."""
    held, dump = threading.Event(), files._dump

    def slow_dump(obj):
        if hold_when(obj) and not held.is_set():
            held.set()
            time.sleep(HOLD)
        return dump(obj)

    files._dump = slow_dump
    thread = threading.Thread(target=files.save, args=(key, payload))
    thread.start()
    assert held.wait(10)
    return thread


needs_flock = pytest.mark.skipif(jit.fcntl is None, reason="no flock: Numba's unlocked cache there")


@pytest.fixture
def index_files(tmp_path):
    """A function's cache files in tmp_path as kernels/jit.py reads and writes them, for a source stamp."""
    return lambda stamp="new": _LockedIndexFile(str(tmp_path), "probe-1.py311", stamp)


def test_the_kernels_caches_take_the_lock():
    assert isinstance(_predict_rows._cache._cache_file, _LockedIndexFile)


@needs_flock
def test_two_saves_at_once_keep_both_entries(index_files):
    """Numba's save reads the index, then writes it with its own entry added: a save in between was lost."""
    first = _held_save(index_files(), ("f", "int64"), "code for int64", lambda obj: isinstance(obj, tuple))
    index_files().save(("f", "int32"), "code for int32")
    first.join()
    files = index_files()
    assert files.load(("f", "int64")) == "code for int64"
    assert files.load(("f", "int32")) == "code for int32"


def _load_during_a_new_versions_save(index_files):
    """What a load of one key reads while the first save of a new version of it (a new stamp) is held after
    pickling its data: the save takes the data file's name that the old version's entry used."""
    index_files("old").save(("f", "int64"), "old code")
    saving = _held_save(index_files(), ("f", "int64"), "new code", lambda obj: obj == "new code")
    loaded = index_files().load(("f", "int64"))
    saving.join()
    return loaded


@needs_flock
def test_a_load_during_a_save_never_reads_an_older_versions_data(index_files):
    """Numba wrote the new index before the new data, and a load in between ran the old code."""
    assert _load_during_a_new_versions_save(index_files) == "new code"


def test_unlocked_too_a_load_during_a_save_never_reads_an_older_versions_data(index_files, monkeypatch):
    """Where no lock can be taken (Windows, a lock given up), the data is written before the entry that names
    it: a load in between finds no entry and compiles, rather than running the old code."""
    monkeypatch.setattr(jit, "_cache_lock", lambda index_path, shared: contextlib.nullcontext())
    assert _load_during_a_new_versions_save(index_files) is None
    assert index_files().load(("f", "int64")) == "new code"


@needs_flock
def test_a_lock_held_too_long_is_given_up_not_waited_on_forever(index_files, tmp_path, monkeypatch):
    """A process stopped midway through a save (Ctrl-Z) keeps its lock: the others go on without it."""
    import fcntl

    index_files().save(("f", "int64"), "code")
    monkeypatch.setattr(jit, "LOCK_WAIT", 0.3)
    holder = os.open(tmp_path / "probe-1.py311.nbi.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        results = []
        loading = threading.Thread(target=lambda: results.append(index_files().load(("f", "int64"))))
        loading.start()
        loading.join(10)
        assert results == ["code"]
    finally:
        os.close(holder)


@needs_flock
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12+ on fork() with threads (xdist has them)
def test_a_child_forked_during_a_save_does_not_keep_the_lock(tmp_path):
    """The child's copy of the lock's descriptor would hold the lock as long as the child lives, had the holder
    only closed its own."""
    import fcntl

    index = str(tmp_path / "probe-1.py311.nbi")
    holding, release = threading.Event(), threading.Event()

    def hold():
        with jit._cache_lock(index, shared=False):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    child = os.fork()
    if child == 0:  # the copy of the descriptor is the child's from here, whether or not it ever runs
        try:
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        release.set()
        holder.join(10)
        other = os.open(index + ".lock", os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while the child holds it
        finally:
            os.close(other)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


@needs_flock
def test_a_lock_file_that_is_a_link_is_not_followed(index_files, tmp_path):
    """Someone else's link in a shared cache folder must not make the kernels create or lock its target."""
    (tmp_path / "probe-1.py311.nbi.lock").symlink_to(tmp_path / "elsewhere")
    index_files().save(("f", "int64"), "code")
    assert index_files().load(("f", "int64")) == "code"
    assert not (tmp_path / "elsewhere").exists()
