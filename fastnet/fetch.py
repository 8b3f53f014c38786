"""`fastnet fetch`: download the MNIST IDX files from public mirrors, verified, for `train --data DIR`.

fastnet ships MNIST, so this is for a fresh copy or another machine. Each file
is tried at each mirror in turn until one verifies: the SHA-256 of the
decompressed bytes must be MNIST's (mirrors gzip differently, the content is the
same). What a mirror sends is bounded three ways, so a broken or hostile one
costs little: the download is streamed to disk and decompressed as it comes,
never beyond the known size of the file (a gzip bomb stops there); the
compressed bytes are bounded by the most any gzip of that content can take; and
`timeout` bounds the whole download of a file, from connecting to the last byte.
Files are written atomically; a failed fetch leaves nothing half-written, and no
folder that it created and left empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .datasets import MNIST_FILES
from .errors import FastnetError, printable
from .files import open_regular, write_atomically

# The mirrors torchvision (datasets.MNIST) and TensorFlow Datasets (mnist) download from.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# The SHA-256 and size of each decompressed file: the values the shipped data/mnist files have
# (tests/test_idx.py checks them), the canonical MNIST.
SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
SIZES = {
    "train-images-idx3-ubyte.gz": 47_040_016,
    "train-labels-idx1-ubyte.gz": 60_008,
    "t10k-images-idx3-ubyte.gz": 7_840_016,
    "t10k-labels-idx1-ubyte.gz": 10_008,
}
CHUNK = 1 << 16  # bytes read from the network, and decompressed, at a time
STALL_SECONDS = 30.0  # a mirror that sends nothing for this long is given up, whatever the timeout allows
DEFAULT_TIMEOUT = 300.0  # for a whole file: the largest, 9.6 MB, needs 33 kB/s


def max_download(name: str) -> int:
    """The most bytes a gzip of the file can take: deflate's stored blocks add 5 bytes per 65,535, the gzip
    header and trailer a few more (plus any name or comment in the header): a margin well above both."""
    return SIZES[name] + SIZES[name] // 100 + (64 << 10)


class _Failed(Exception):
    """This mirror's copy of this file is no good (the reason is the message); try the next mirror. reached:
    whether the mirror answered at all (an HTTP error or bad content), not only the network failing."""

    def __init__(self, message: str, reached: bool = True):
        super().__init__(message)
        self.reached = reached


class _Check:
    """The size and SHA-256 of a gzip stream's content, fed in pieces as it arrives.

    At most CHUNK bytes of decompressed data exist at a time, and decompression stops as soon as it passes
    the file's known size: a small download that would decompress to gigabytes costs nothing.
    """

    def __init__(self, name: str):
        self.name, self.size, self.limit = name, 0, SIZES[name]
        self._hash = hashlib.sha256()
        self._inflate = zlib.decompressobj(wbits=31)  # 31: gzip; its CRC-32 and length trailer are checked too

    def feed(self, data: bytes) -> None:
        try:
            while True:  # each turn consumes input or yields output, and the output is bounded: this ends
                if self._inflate.eof and data:  # another gzip member follows: gzip files may be concatenated
                    self._inflate = zlib.decompressobj(wbits=31)
                out = self._inflate.decompress(data, CHUNK)
                data = self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail
                self.size += len(out)
                if self.size > self.limit:
                    raise _Failed(f"decompresses to more than the {self.limit:,} bytes of MNIST's {self.name}")
                self._hash.update(out)
                if not out and not data:
                    return
        except zlib.error as error:
            raise _Failed(f"not a valid gzip file ({error})") from None

    def finish(self) -> None:
        """Raise _Failed unless the stream was complete and its content is MNIST's file."""
        if not self._inflate.eof:
            raise _Failed(f"truncated ({self.size:,} of {self.limit:,} bytes decompressed)")
        if self.size != self.limit:
            raise _Failed(f"wrong size ({self.size:,} bytes decompressed, MNIST's file has {self.limit:,})")
        if self._hash.hexdigest() != SHA256[self.name]:
            raise _Failed("wrong or damaged content (SHA-256 of the data does not match MNIST)")


class _Deadline:
    """The time one file's download may take. When it runs out, the sockets opened for the download are shut
    down, which ends any read blocked on them: a socket timeout bounds only each read, so a server sending a
    byte a second would never trip it."""

    def __init__(self, seconds: float):
        self.expired = False
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def connect(self, address, timeout=None, source_address=None) -> socket.socket:
        """socket.create_connection, watched: what http.client calls to open every connection (https too)."""
        limit = min(timeout if isinstance(timeout, (int, float)) else STALL_SECONDS, self.left())
        connection = socket.create_connection(address, limit, source_address)
        try:
            # A duplicate descriptor: TLS takes over (detaches) the socket object, and shutting down either
            # descriptor ends the connection for both.
            watched = connection.dup()
        except OSError:
            connection.close()
            raise
        with self._lock:
            self._sockets.append(watched)
            if self.expired:
                with contextlib.suppress(OSError):
                    watched.shutdown(socket.SHUT_RDWR)
        return connection

    def left(self) -> float:
        return max(self._end - time.monotonic(), 0.01)  # never 0, which would make a socket non-blocking

    def over(self) -> bool:
        """Whether the time is up (a socket timeout may end a read a moment before the timer does)."""
        return self.expired or time.monotonic() >= self._end

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for watched in self._sockets:
                with contextlib.suppress(OSError):
                    watched.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for watched in self._sockets:
                watched.close()
            self._sockets.clear()


class _Watching:
    """A urllib handler whose connections open their sockets through a _Deadline."""

    deadline: _Deadline

    def do_open(self, http_class, request, **kwargs):
        deadline = self.deadline

        class Watched(http_class):
            def __init__(self, *args, **more):
                super().__init__(*args, **more)
                self._create_connection = deadline.connect  # http.client's hook for opening the socket

        return super().do_open(Watched, request, **kwargs)


class _HTTP(_Watching, urllib.request.HTTPHandler):
    pass


_HANDLERS = [_HTTP]
if hasattr(urllib.request, "HTTPSHandler"):  # Python built without ssl has no https
    class _HTTPS(_Watching, urllib.request.HTTPSHandler):
        pass

    _HANDLERS.append(_HTTPS)


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None) or error
    return str(reason) or type(error).__name__


@contextlib.contextmanager
def _download(url: str, limit: int, timeout: float) -> Iterator[Iterator[bytes]]:
    """The body of url, in chunks, within timeout seconds for the whole of it and at most limit bytes.

    Anything that goes wrong on the network side is _Failed; errors of the caller's (writing the file)
    pass through untouched.
    """
    deadline = _Deadline(timeout)
    # An opener of http(s) only, not build_opener's: a redirect to ftp:// would escape the deadline.
    opener = urllib.request.OpenerDirector()
    watching = [handler_class() for handler_class in _HANDLERS]
    for handler in watching:
        handler.deadline = deadline
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPRedirectHandler(),
                    urllib.request.HTTPErrorProcessor(), *watching):
        opener.add_handler(handler)

    def failed(error: BaseException) -> _Failed:
        if deadline.over():
            return _Failed(f"took longer than the timeout ({timeout:g} s for the whole file)")
        if isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None), TimeoutError):
            return _Failed(f"sent nothing for {min(timeout, STALL_SECONDS):g} s", reached=False)
        return _Failed(_reason(error), reached=isinstance(error, urllib.error.HTTPError))

    try:
        try:
            response = opener.open(url, timeout=min(timeout, STALL_SECONDS))
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise failed(error) from None
        with response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limit:
                raise _Failed(f"sends {int(length):,} bytes, more than any gzip of this file takes ({limit:,})")

            def chunks() -> Iterator[bytes]:
                received = 0
                while True:
                    try:
                        # read1: one read from the socket; read(n) would wait for all n bytes
                        chunk = response.read1(CHUNK)
                    except (OSError, http.client.HTTPException, ValueError) as error:
                        raise failed(error) from None
                    if deadline.expired:  # the shut-down socket reads as the end of the data
                        raise failed(TimeoutError())
                    if not chunk:
                        return
                    received += len(chunk)
                    if received > limit:
                        raise _Failed(f"sent more than {limit:,} bytes, more than any gzip of this file takes")
                    yield chunk

            yield chunks()
    finally:
        deadline.close()


def _save(url: str, name: str, target: Path, timeout: float) -> None:
    """Download name from url into target, verified; raises _Failed (target untouched) if it is not MNIST's."""
    check = _Check(name)

    def write(file: BinaryIO) -> None:
        with _download(url, max_download(name), timeout) as chunks:
            for chunk in chunks:
                check.feed(chunk)
                file.write(chunk)
        check.finish()  # before write_atomically renames the file into place

    write_atomically(target, write)


def verified(name: str, path: Path) -> bool:
    """Whether the file at path is a gzip of MNIST's file name (read in pieces, bounded like a download)."""
    check = _Check(name)
    try:
        with open_regular(path, "MNIST file") as file:
            for _ in range(max_download(name) // CHUNK + 2):
                chunk = file.read(CHUNK)
                if not chunk:
                    check.finish()
                    return True
                check.feed(chunk)
    except (_Failed, OSError):
        return False
    return False  # larger than any gzip of the file


def _status(path: Path) -> os.stat_result | None:
    """os.stat of path, or None where there is nothing (or a file stands where a folder would be above it)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise FastnetError(f"{path}: cannot look at it ({error.strerror})") from None


def _make_folders(destination: Path) -> list[Path]:
    """Create destination and any missing folders above it; returns those created here, outermost first."""
    missing = []
    folder = destination
    while _status(folder) is None:  # ends: the root, and '.' for a relative path, exist
        missing.append(folder)
        folder = folder.parent
    if not os.path.isdir(folder):
        where = "is a file" if folder == destination else f"is under {folder}, which is a file"
        raise FastnetError(f"{destination} {where}, not a folder; give a folder for the MNIST files")
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            if folder.is_dir():  # made by someone else meanwhile: not ours to remove
                continue
            _remove_folders(created)
            raise FastnetError(f"{folder} is a file, not a folder; give a folder for the MNIST files") from None
        except OSError as error:
            _remove_folders(created)
            raise FastnetError(f"cannot create the folder {folder} ({error.strerror}); choose another") from None
        created.append(folder)
    return created


def _remove_folders(created: list[Path]) -> None:
    """Remove the folders fetch created, innermost first, where they are still empty (never anyone's files)."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return


def _check_destination(destination: Path, names: list[str]) -> None:
    """Refuse at once what would fail after downloading: a read-only folder, a folder where a file goes."""
    if not os.access(destination, os.W_OK | os.X_OK):
        raise FastnetError(f"{destination} is read-only; choose another folder")
    for name in names:
        target = destination / name
        status = _status(target)
        if status is not None and not os.path.isfile(target):
            what = "a folder" if os.path.isdir(target) else "not a regular file"
            raise FastnetError(f"{target} is {what}; fetch writes the MNIST file there: move it away or "
                               "choose another folder")


def _check_mirrors(mirrors: list[str] | tuple[str, ...]) -> None:
    if not mirrors:
        raise FastnetError("no mirrors to try: give --mirror URL")
    for mirror in mirrors:
        # Only http(s): the timeout and size limits are enforced on its sockets (ftp, file and data URLs
        # would bypass them, and a file URL could name a FIFO that never ends).
        try:
            parts = urllib.parse.urlsplit(mirror)
        except ValueError as error:  # "http://[::1": an unclosed IPv6 address
            raise FastnetError(f"--mirror {mirror}: not a valid URL ({error})") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FastnetError(f"--mirror {mirror}: not an http:// or https:// URL")
        # Any "@", not only one in the host part: "http://user:pa/ss@host/" is, to urllib, host "user" with
        # port "pa" (or 2024, for "2024/ss"), and the password would be printed and sent there.
        if "@" in mirror:
            where = f"{parts.scheme}://...@{mirror.rpartition('@')[2]}"
            raise FastnetError(f"--mirror {where}: a user name or password in the URL is not supported "
                               "(MNIST's mirrors are public); give the mirror's URL without it (an @ in its path: "
                               "write it as %40)")
        try:
            parts.port
        except ValueError:
            raise FastnetError(f"--mirror {mirror}: not a valid URL (its port is not a number from 0 to 65535)"
                               ) from None


def fetch(destination: str | Path, mirrors: list[str] | tuple[str, ...] = MIRRORS,
          timeout: float = DEFAULT_TIMEOUT, report: Callable[[str], None] = print) -> list[Path]:
    """Download and verify the four MNIST files into destination; returns their paths.

    timeout bounds each file's whole download from one mirror. Files already there and verified are kept.
    On failure, one FastnetError; the files verified so far stay, and folders created here are removed if
    they are empty.
    """
    if not (isinstance(timeout, (int, float)) and 0 < timeout and math.isfinite(timeout)):
        raise FastnetError(f"timeout {timeout!r}: must be a number of seconds above 0")
    _check_mirrors(mirrors)
    destination = Path(destination)
    names = [name for pair in MNIST_FILES.values() for name in pair]
    created = _make_folders(destination)
    written: list[Path] = []
    try:
        _check_destination(destination, names)
        for name in names:
            target = destination / name
            if _status(target) is not None and verified(name, target):
                report(f"{target}: already here and verified")
                written.append(target)
                continue
            tried, reached = [], False
            for mirror in mirrors:
                url = mirror.rstrip("/") + "/" + name
                try:
                    _save(url, name, target, timeout)
                except _Failed as failure:
                    tried.append(f"{url}: {printable(str(failure))}")
                    reached = reached or failure.reached
                    continue
                report(f"{target}: downloaded from {mirror} and verified")
                written.append(target)
                break
            else:
                kept = (f"; the {len(written)} files verified so far are kept in {destination}, fetch again "
                        "for the rest" if written else "")
                advice = "give another --mirror URL" if reached else \
                    "are you offline? Check the connection or give another --mirror URL"
                raise FastnetError(f"could not download {name} from any mirror ({'; '.join(tried)}); {advice}{kept}")
    except BaseException:  # Ctrl-C and SIGTERM too
        _remove_folders(created)
        raise
    return written
