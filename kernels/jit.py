"""How every kernel is compiled: float32 fastmath (so sums over units vectorise), nogil (threads), cached.

Three kinds of function:
- jit: the functions called from Python (the epoch worker, prediction, the tests' entry points); ieee_jit the
  same without fastmath, for loops whose comparisons must treat NaN by IEEE's rules (the ink index's passes);
- llvm_inline_jit: the functions those call for a layer's block or a share of a batch (layers.py, the augment
  transform). Each is compiled on its own, once per argument types, and shared by every kernel variant that
  calls it (SGD and Adam workers read the same forward); LLVM then inlines it into each caller (forceinline:
  its alwaysinline attribute). Inlined, no call is left to bind: left as calls, a freshly compiled process
  bound them to the function's own compiled copy and a process loading from the cache to the copy linked into
  the caller, and with fastmath reassociating sums differently in the two, their weights differed in the last
  bits;
- inline_jit: small helpers (an activation, an optimiser's rule), inlined in Numba's IR into the function
  above them, where LLVM needs them to vectorise the loop they sit in. Numba copies an inlined function's IR
  with its caller's whole scope, which is why the big functions are not inlined this way: into the epoch
  worker, that copying took a third of its compile.

error_model="numpy" drops the zero-divisor check Numba adds to every float division, which kept loops scalar.

The cache: Numba keeps a compiled function while its own source file is unchanged, but the epoch worker
(epoch.py) holds code inlined from layers.py, augment.py and others, so an edit there left the worker's
cached code running the old version (a known limit of Numba's cache). Every function here is cached under
one stamp of all of kernels/ instead: a change to any of its modules recompiles them all (with a Numba whose
cache internals differ from those this knows, Numba's own cache). Where Numba finds nowhere to write a cache
(the package read-only, no NUMBA_CACHE_DIR, no writable home), the kernels are compiled uncached, with a
warning, rather than failing at import.

Processes share the cache (a sweep's workers, joblib's, pytest's), and Numba's own reads and writes of a
function's files take no lock (a race of the kind numba/numba#10128 reports): two processes saving at once
could drop each other's entry or give two signatures one data file, and one loading while another saved could
read an entry before its data was written, so run the data an older version of the kernels left under that
name. Here saves take turns, write the data before the entry, and loads wait for a save under way
(_LockedIndexFile).
"""

import contextlib
import functools
import hashlib
import itertools
import os
import sys
import time
import warnings
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: Numba's unlocked reads and writes
    fcntl = None

from numba import njit
from numba.core import caching

_SETTINGS = dict(cache=True, fastmath=True, nogil=True, error_model="numpy")
KERNELS = Path(__file__).resolve().parent


@functools.cache
def _modules() -> tuple[Path, ...]:
    """kernels/'s modules: its *.py files, not hidden ones (an editor's lock file, .#epoch.py, is a dangling
    link) nor anything that is not a plain file. Listed once a process, as the stamp is taken."""
    return tuple(sorted(path for path in KERNELS.glob("*.py") if not path.name.startswith(".") and path.is_file()))


@functools.cache
def kernels_stamp() -> str:
    """A hash of every module of kernels/, names and contents; taken once a process, when the first kernel is
    defined (a module changed while a process runs is not seen, as with Numba's own stamps)."""
    digest = hashlib.sha256()
    for path in _modules():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class _WholePackageStamp:
    """Mixed into Numba's cache locators: for functions defined in kernels/ as a folder of source files, the
    stamp of all of it (in a zip or a frozen program, Numba's own locators and stamps)."""

    def get_source_stamp(self):
        return kernels_stamp()

    @classmethod
    def from_function(cls, py_func, py_file):
        if getattr(sys, "frozen", False) or Path(py_file).resolve().parent != KERNELS or not _modules():
            return None
        return super().from_function(py_func, py_file)


LOCK_WAIT = 10.0  # seconds to wait for another process's hold on a cache lock (a save takes milliseconds)


@contextlib.contextmanager
def _cache_lock(index_path: str, shared: bool):
    """An flock on the lock file beside a function's cache index while the block runs (the index itself is
    replaced on every save, so cannot carry the lock); the OS drops it with its holder, however it ends. It is
    released before the file is closed: a child forked meanwhile holds a copy of the descriptor, which would
    keep the lock for the child's whole life. A lock file another user made is opened to read (a local file
    system locks it so; NFS gives such a descriptor a shared lock only). No lock where none can be taken:
    Windows, a folder this process cannot create the lock file in (a read-only cache, which no one saves to
    either), a lock file that is a link, a file system without locks; nor after LOCK_WAIT, as where the holder
    was stopped midway: unlocked reads and writes then, rather than a process that hangs."""
    descriptor = None
    for flags in ((os.O_RDWR | os.O_CREAT, os.O_RDONLY) if fcntl is not None else ()):
        with contextlib.suppress(OSError):
            descriptor = os.open(index_path + ".lock", flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
            break
    try:
        if descriptor is not None:
            _take_lock(descriptor, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        if descriptor is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(descriptor, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(descriptor)


def _take_lock(descriptor: int, operation: int) -> None:
    """flock(descriptor, operation), waiting at most LOCK_WAIT; gives up quietly."""
    deadline, nap = time.monotonic() + LOCK_WAIT, 0.001
    while True:
        try:
            fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                return
            time.sleep(nap)
            nap = min(2 * nap, 0.05)
        except OSError:
            return


class _LockedIndexFile(caching.IndexDataCacheFile):
    """Numba's index and data files of one function, shared safely between processes (the module docstring).
    Built on the parts of Numba's class named in USES; where this Numba lacks one, its own class is used."""

    USES = ("_load_index", "_save_index", "_save_data", "_data_name", "_index_path")

    def save(self, key, data):
        with _cache_lock(self._index_path, shared=False):
            overloads = self._load_index()
            name = overloads.get(key)
            if name is None:
                taken = set(overloads.values())
                name = next(self._data_name(i) for i in itertools.count(1) if self._data_name(i) not in taken)
            self._save_data(name, data)
            if overloads.get(key) != name:
                self._save_index({**overloads, key: name})

    def load(self, key):
        with _cache_lock(self._index_path, shared=True):
            return super().load(key)


def _kernels_cache_class():
    """A FunctionCache whose locators are Numba's, in Numba's order (a NUMBA_CACHE_DIR, then __pycache__ here,
    then a per-user folder), each with the package's stamp, its files read and written under a lock
    (_LockedIndexFile); Numba's own after them, should none of those apply.
    None where this Numba's internals differ: then Numba's own cache, per file."""
    try:
        numba_impl, numba_cache = caching.CompileResultCacheImpl, caching.FunctionCache
        locators = [type(locator.__name__, (_WholePackageStamp, locator), {})
                    for locator in numba_impl._locator_classes] + list(numba_impl._locator_classes)
        impl = type("KernelsCacheImpl", (numba_impl,), {"_locator_classes": locators})

        def __init__(self, py_func):
            numba_cache.__init__(self, py_func)
            with contextlib.suppress(AttributeError, TypeError):  # else Numba's own files, under this stamp
                locked = _LockedIndexFile(self._cache_path, self._impl.filename_base,
                                          self._impl.locator.get_source_stamp())
                if all(hasattr(locked, part) for part in _LockedIndexFile.USES):
                    self._cache_file = locked
        return type("KernelsCache", (numba_cache,), {"_impl_class": impl, "__init__": __init__})
    except (AttributeError, TypeError):
        return None


_KernelsCache = _kernels_cache_class()


@functools.cache  # once a process
def _say_uncached() -> None:
    warnings.warn("no writable folder for Numba's cache (this package's folder, and ~/.cache, are read-only): "
                  "the kernels compile anew in every process; set NUMBA_CACHE_DIR to a writable folder",
                  stacklevel=3)  # the module whose kernel it is


def _cached_as_kernels(settings: dict):
    """njit with these settings, then the function's cache replaced by _KernelsCache (Numba internals: the
    dispatcher's _cache, which enable_caching sets); with no cache where there is nowhere to write one."""
    def decorate(function):
        try:
            dispatcher = njit(**settings)(function)
        except RuntimeError as error:  # Numba finds nowhere to write a cache: the package read-only, no
            if "no locator available" not in str(error):  # NUMBA_CACHE_DIR, no writable home (a service account)
                raise
            _say_uncached()
            return njit(**{**settings, "cache": False})(function)
        if _KernelsCache is not None and hasattr(dispatcher, "_cache"):
            try:
                dispatcher._cache = _KernelsCache(dispatcher.py_func)
            except (AttributeError, TypeError, RuntimeError):  # Numba's internals not as expected: its own cache
                pass
        return dispatcher
    return decorate


jit = _cached_as_kernels(_SETTINGS)
# Under fastmath's no-NaN flag LLVM may decide NaN != 0 either way, differently in two loops over the same data.
ieee_jit = _cached_as_kernels({**_SETTINGS, "fastmath": False})
llvm_inline_jit = _cached_as_kernels({**_SETTINGS, "forceinline": True})
inline_jit = _cached_as_kernels({**_SETTINGS, "inline": "always"})
# The workers' meeting points (threads.py): atomics, nothing to vectorise, so no fastmath.
meeting_jit = _cached_as_kernels({"cache": True, "nogil": True, "inline": "always"})
