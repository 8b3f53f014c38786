"""Reading and writing files safely: every file fastnet writes goes through here.

- An output is only ever a regular file (or a new one): a device, FIFO, folder or
  socket at that path is refused before any work starts (check_outputs), and again
  when writing (write_atomically), so `--out /dev/null` run as root can never turn
  the device into a file.
- Two outputs, or an output and an input, that are the same file are refused
  (check_outputs): one would silently destroy the other.
- A write is atomic: a temporary file beside the target, flushed and fsynced, then
  renamed over it, with the replaced file's mode; the temporary file is removed on
  every exit path, and a failure (disk full, say) is one FastnetError that says the
  old file is unchanged. A read-only file is refused, not replaced.
- Inputs are read only from regular files (open_regular): a FIFO named like an
  image or a parameters file would otherwise block forever.
- .npz archives are read entry by entry (read_npz): only the entries asked for, each
  checked against a size limit from its header before a byte of it is read.
- A file or folder in use is marked by an advisory lock (lock), which the OS drops
  with its holder however it ends: a second sweep into a folder, or a running
  export's staging folder, is told apart by it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import secrets
import stat
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import numpy as np

from .errors import FastnetError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks
    fcntl = None

CAN_LOCK = fcntl is not None


def lock(descriptor: int) -> None:
    """Lock the open file or folder for this process, or raise BlockingIOError where another holds it; the OS
    drops the lock with its holder, however it ends (SIGKILL too). Does nothing where CAN_LOCK is False."""
    if fcntl is not None:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)


def kind_of(mode: int) -> str:
    """What a file of this st_mode is, in words: 'a folder', 'a FIFO', ..."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _status(path: Path) -> os.stat_result | None:
    """os.stat of path (following links), or None where nothing is there yet."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise FastnetError(f"{path}: cannot look at it ({error.strerror})") from None


def check_output(path: Path, flag: str) -> Path:
    """path, after checking that a file can be written there: nothing there yet, or a regular file; its
    folder exists and is writable. Called before any work, so that a bad path costs nothing."""
    path = Path(path)
    status = _status(path)
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise FastnetError(f"{flag} {path}: is {kind_of(status.st_mode)}, not a file; fastnet writes only regular "
                           "files: give a file name")
    if status is not None and not os.access(path, os.W_OK):
        raise FastnetError(f"{flag} {path}: the file is read-only; make it writable or choose another path")
    folder = path.parent
    if not folder.is_dir():
        raise FastnetError(f"{flag} {path}: the folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FastnetError(f"{flag} {path}: the folder {folder} is read-only; choose another path")
    return path


def _identity(path: Path) -> tuple:
    """What makes two paths the same file: (device, inode) where it exists, else its resolved path."""
    status = _status(path)
    return (status.st_dev, status.st_ino) if status is not None else ("new", os.path.realpath(path))


def check_outputs(outputs: dict[str, Path | None], inputs: dict[str, Path | None] | None = None) -> None:
    """Check every output (flag -> path) with check_output, and that no output is the same file as another
    output or an input (two inputs may be one file: nothing is overwritten). None paths are skipped."""
    named = {flag: Path(path) for flag, path in outputs.items() if path is not None}
    for flag, path in named.items():
        check_output(path, flag)
    written: dict[tuple, str] = {}
    for flag, path, output in [(f, p, True) for f, p in named.items()] + \
            [(f, Path(p), False) for f, p in (inputs or {}).items() if p is not None]:
        identity = _identity(path)
        if identity in written:
            raise FastnetError(f"{written[identity]} and {flag} are the same file ({path}): one would overwrite the "
                               "other; give them different paths")
        if output:
            written[identity] = flag


def check_not_among(outputs: dict[str, Path | None], folders: dict[str, Path], suffixes: Iterable[str]) -> None:
    """Refuse an output with one of these suffixes inside one of these input folders (flag -> folder): it is
    one of the folder's files already, or would be read as one next time."""
    suffixes = {suffix.lower() for suffix in suffixes}
    for flag, path in outputs.items():
        if path is None or Path(path).suffix.lower() not in suffixes:
            continue
        where = os.path.realpath(Path(path).parent)
        for name, folder in folders.items():
            root = os.path.realpath(folder)
            if Path(folder).is_dir() and os.path.commonpath([where, root]) == root:
                raise FastnetError(f"{flag} {path} is inside {name} {folder}, among the images it reads; "
                                   "write it somewhere else")


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(file) on a temporary file beside path, fsync it, then rename it over path.

    Whatever happens, path holds the old complete file or the new complete one, and no temporary file is
    left behind. Only a regular file (or nothing) is ever replaced; an OSError (disk full, read-only) becomes
    a FastnetError.
    """
    path = Path(path)
    if path.is_symlink():  # write the file the link points to, never replace the link with a file
        path = Path(os.path.realpath(path))
    status = _status(path)
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise FastnetError(f"{path}: is {kind_of(status.st_mode)}, not a file; refusing to replace it")
    if status is not None and not os.access(path, os.W_OK):  # the rename would replace it all the same
        raise FastnetError(f"cannot write {path}: the file is read-only; the old file is unchanged")
    temporary = None
    try:
        handle, temporary = _new_temporary(path)
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            # made 0600: the replaced file's mode (a private file stays private), or a new file's
            os.fchmod(file.fileno(), stat.S_IMODE(status.st_mode) if status is not None else 0o666 & ~_umask())
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        reason = "the disk is full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else \
            (error.strerror or str(error))
        kept = "the old file is unchanged" if path.exists() else "nothing was written"
        raise FastnetError(f"cannot write {path}: {reason}; {kept}") from None
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)  # gone already when renamed
            _temporaries.discard(temporary)


def _new_temporary(path: Path) -> tuple[int, str]:
    """A new, empty temporary file beside path: (descriptor, name). Its name is recorded before the file is
    made, so that a quitting signal handler (remove_temporaries), which may run between any two bytecodes of
    this thread whichever thread took the signal, always knows of it."""
    while True:
        name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        _temporaries.add(name)
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600), name
        except FileExistsError:
            _temporaries.discard(name)
        except BaseException:
            _temporaries.discard(name)
            raise


_temporaries: set[str] = set()  # temporary files being written now
QUIT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
                     if hasattr(signal, name))


@contextlib.contextmanager
def signals_held():
    """Hold back the quitting signals in this thread for a moment (where the platform can): threads and
    processes started meanwhile begin with them held."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, QUIT_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def remove_temporaries() -> None:
    """Remove the temporary files of writes in progress: for a process about to quit at once (os._exit), so
    that it leaves no .tmp file behind. The files being replaced stay as they were."""
    for temporary in list(_temporaries):
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


ZIP64_FROM = 1 << 30  # entries of this many bytes or more are written as ZIP64


def write_npz(file: BinaryIO, arrays: dict) -> None:
    """What np.savez writes, but with fixed timestamps: the same arrays give the same bytes. An entry that may
    pass zip's 2 GiB limit is written as ZIP64 (zipfile cannot tell before it is written); smaller ones are
    not, so that their files stay byte for byte as before."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            array = np.asanyarray(array)
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(entry, "w", force_zip64=array.nbytes >= ZIP64_FROM) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def read_json(text: str):
    """json.loads for text from a file anyone may have made: nesting deep enough to exhaust Python's recursion
    (a RecursionError, which no caller expects) is a ValueError, as json's own errors are."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def open_regular(path: str | Path, what: str = "file") -> BinaryIO:
    """path opened for reading in binary, only if it is a regular file: a FIFO or device named like a data file
    would block or never end. FileNotFoundError passes through; anything else is one FastnetError."""
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as error:
        raise FastnetError(f"{path}: cannot open the {what} ({error.strerror})") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise FastnetError(f"{path}: is {kind_of(mode)}, not a {what}")
    if hasattr(os, "set_blocking"):
        os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


DEFLATE_MAX_RATIO = 1032  # deflate never expands data more than this


def read_npz(path: str | Path, keys: Iterable[str], what: str = "file", max_bytes: int | None = 1 << 30,
             shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """The entries named by keys (those present) of the .npz file at path, no pickle.

    Each entry's .npy header is read first, and an entry that claims more bytes than the file can hold for
    it (or than max_bytes, where given), or another shape than shapes gives for it, is refused before its data
    is read: a small file may claim, or hold compressed, gigabytes. Entries not asked for are never read; an
    entry's data is read straight into its array (memory for it once). Errors from untrusted bytes (zip, npy
    header, decompression) come out as FastnetError; a missing file as FileNotFoundError.
    """
    path = Path(path)
    arrays = {}
    with open_regular(path, what) as file:
        on_disk = os.fstat(file.fileno()).st_size
        try:
            with zipfile.ZipFile(file) as archive:
                members = {info.filename: info for info in archive.infolist()}
                for key in keys:
                    info = members.get(f"{key}.npy")
                    if info is None:
                        continue
                    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO
                    capacity = min(info.file_size, min(info.compress_size, on_disk) * ratio,
                                   max_bytes if max_bytes is not None else info.file_size)
                    with archive.open(info) as member:
                        arrays[key] = _read_member(member, key, capacity, (shapes or {}).get(key), path, what)
        except FastnetError:
            raise
        except Exception as error:  # zip, npy header (even tokenize) and decompression errors alike
            raise FastnetError(f"{path}: cannot read this {what} ({type(error).__name__}: {error}); is it one "
                               "written by fastnet?") from None
    return arrays


def _read_member(member, key: str, capacity: int, expected: tuple[int, ...] | None, path: Path, what: str
                 ) -> np.ndarray:
    version = np.lib.format.read_magic(member)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in read_header:
        raise ValueError(f"unsupported .npy version {version} in {key}")
    shape, fortran_order, dtype = read_header[version](member)
    if dtype.hasobject:
        raise ValueError(f"{key} holds Python objects, which fastnet never writes")
    if expected is not None and tuple(shape) != tuple(expected):
        raise FastnetError(f"{path}: {key} should be of shape {tuple(expected)}, found {tuple(shape)}")
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size > capacity:
        raise FastnetError(f"{path}: entry {key} claims {size:,} bytes, more than the file holds for it; "
                           f"is it a {what} written by fastnet?")
    array = np.empty(shape[::-1] if fortran_order else shape, dtype)
    got = member.readinto(memoryview(array.reshape(-1)).cast("B")) if size else 0
    if got != size:
        raise ValueError(f"{key} is truncated: {got} of {size} bytes")
    return array.T if fortran_order else array
