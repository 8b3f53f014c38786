"""Finding image files and decoding them into rows of a network's input, one process per core.

Shared by `predict` (MNIST-style digits) and folder datasets (plain 28x28). What cannot be read (a FIFO or
device named like an image, a link that loops or leads nowhere, a folder that cannot be listed, an image that
does not decode) is skipped and returned as (path, reason), the reason never repeating the path: skip_line
makes the line users see, path_text the way every output names a file.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import FastnetError, printable
from .files import QUIT_SIGNALS, kind_of, signals_held
from .preprocess import Prep, load_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}


def path_text(path: str | os.PathLike) -> str:
    """path as text that can always be written: each byte of its name that is not UTF-8 (Linux allows any) as
    \\xNN, as Python writes such names on stderr. Every output (table, csv, json, skipped lines) names files
    this way, so they stay valid UTF-8 and agree with each other; only a name holding a backslash, 'x' and two
    hex digits as such could read the same."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def shown_path(path: str | os.PathLike) -> str:
    """path in a line for people: path_text, with control characters escaped (errors.printable), so that the
    line stays one line."""
    return printable(path_text(path))


def skip_line(path: str | os.PathLike, reason: str) -> str:
    """The line that lists a skipped file or folder."""
    return f"skipped {shown_path(path)}: {printable(reason)}"


def plural(count: int, noun: str) -> str:
    """'1 image', '2 images'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def not_a_file(path: str | os.PathLike) -> str:
    """Why path, which is not a folder and not a regular file, is not read (OSError where it cannot be looked at)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a link to nothing (its target is missing)"
    return f"is {kind_of(mode)}, not an image file; only regular files are read"


def image_files(folder: str | Path, within: str | Path | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files under folder (recursive; each folder's files sorted by name, then its subfolders), hidden
    files and non-images passed over; and (path, reason) for each image name or folder that cannot be read.

    Only regular files are listed: a reader of a FIFO named like an image waits forever. A folder is searched
    once, however many links lead to it (found by device and inode): a link back up would never end. With
    within (a dataset's root), a link to a folder elsewhere in it is skipped: its images belong to another
    class. Plain strings and os.scandir: pathlib objects cost more than the listing itself for 70,000 files."""
    own = os.path.realpath(folder)
    root = os.path.realpath(within) if within is not None else None
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    searched: set[tuple[int, int]] = set()
    pending = [str(folder)]  # a stack, not recursion: a deep tree would exceed Python's recursion limit
    while pending:
        path = pending.pop()
        found, subfolders = [], []
        try:
            status = os.stat(path)
            if (status.st_dev, status.st_ino) in searched:
                continue  # reached again through a link: its images are listed once already
            searched.add((status.st_dev, status.st_ino))
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.is_dir():
                            if root is not None and entry.is_symlink() and _elsewhere(entry.path, own, root):
                                skipped.append((entry.path, "a link to another part of the dataset, skipped"))
                            else:
                                subfolders.append(entry.path)
                        elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                            if entry.is_file():  # from the listing itself, without a stat, but for links
                                found.append(entry.path)
                            else:
                                skipped.append((entry.path, not_a_file(entry.path)))
                    except OSError as error:  # a link that loops, or leads where we may not look
                        skipped.append((entry.path, f"cannot look at it ({error.strerror or error})"))
        except OSError as error:
            skipped.append((path, f"cannot list the folder ({error.strerror or error})"))
            continue
        files += sorted(found)
        pending += sorted(subfolders, reverse=True)
    return files, skipped


def _elsewhere(link: str, own: str, root: str) -> bool:
    """Whether the folder link leads to is inside root but not inside own."""
    real = os.path.realpath(link)
    return os.path.commonpath([real, root]) == root and os.path.commonpath([real, own]) != own


def _decode_chunk(paths: list[str], prep: Prep) -> tuple[np.ndarray, list[tuple[int, str]]]:
    rows = np.zeros((len(paths), prep.row_size), np.uint8)
    failures = []
    for i, path in enumerate(paths):
        try:
            rows[i] = load_image(path, prep)
        except Exception as error:  # Pillow's decoders raise many kinds on odd bytes: one image, not the run
            reason = str(error) if isinstance(error, FastnetError) else \
                f"not a readable image ({type(error).__name__}: {error})"
            failures.append((i, reason.removeprefix(f"{path}: ")))  # the caller names the file, once
    return rows, failures


def _worker(connection, inherited: list, prep: Prep) -> None:
    """A decoding process: decodes each (index, paths) it is sent and sends back (index, rows, failures),
    until the parent closes the connection (or goes away) or terminates it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    for name in ("SIGTERM", "SIGHUP"):  # the parent's handlers (raise Stopped) would unwind here with a traceback
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):  # held by the parent until these were set
        signal.pthread_sigmask(signal.SIG_UNBLOCK, QUIT_SIGNALS)
    for other in inherited:  # the parent's ends, forked along: only the parent may hold them, so that we see
        other.close()  # the end of the connection when it goes, however it goes
    try:
        while True:
            index, paths = connection.recv()
            connection.send((index, *_decode_chunk(paths, prep)))
    except (EOFError, OSError):
        pass  # the parent is done, or gone


def _died(process, chunk: list[str]) -> FastnetError:
    """The error for a worker that ended while it had chunk to decode."""
    process.join()
    code = process.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
    return FastnetError(f"a decoding process died ({how}) on one of the {plural(len(chunk), 'image')} from "
                        f"{path_text(chunk[0])} on: was memory short?")


def _decode_in_processes(chunks: list[list[str]], prep: Prep, workers: int
                         ) -> Iterator[tuple[int, np.ndarray, list[tuple[int, str]]]]:
    """(index, rows, failures) of each chunk, in the order they are done, from `workers` processes.

    Neither concurrent.futures nor multiprocessing.Pool: the executor's shutdown after Ctrl-C can hang or
    start more work (python/cpython#94440, #125886), and a Pool waits forever for a worker that died. Here a
    worker ignores Ctrl-C, a dead one is an error, and on any exit (an interruption included) the parent
    terminates and reaps every worker."""
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    processes, connections = [], []
    try:
        with signals_held():  # forked with the quitting signals held: a worker sets its own before taking one
            for _ in range(workers):
                own, theirs = context.Pipe()
                process = context.Process(target=_worker, args=(theirs, connections + [own], prep),
                                          daemon=True)  # daemon: ended at exit even if this never gets to
                process.start()
                theirs.close()
                processes.append(process)
                connections.append(own)
        jobs = iter(enumerate(chunks))
        working = {}  # connection -> (its process, the index of the chunk it decodes)

        def give(connection, process) -> None:
            job = next(jobs, None)
            if job is not None:
                try:
                    connection.send(job)
                except OSError:
                    raise _died(process, job[1]) from None
                working[connection] = (process, job[0])

        for connection, process in zip(connections, processes):
            give(connection, process)
        while working:
            ready = multiprocessing.connection.wait([*working, *(process.sentinel for process, _ in working.values())])
            for connection in [c for c in working if c in ready]:
                process, index = working.pop(connection)
                try:
                    result = connection.recv()
                except (EOFError, OSError):
                    raise _died(process, chunks[index]) from None
                give(connection, process)
                yield result
            for process, index in working.values():
                if process.sentinel in ready:
                    raise _died(process, chunks[index])
    finally:
        for process in processes:
            if process.exitcode is None:
                process.terminate()  # idle, or busy on work no one will use now
        for process in processes:
            process.join()
        for connection in connections:
            connection.close()


def decode_all(paths: list, prep: Prep = Prep(), workers: int | None = None,
               progress: str = "") -> tuple[np.ndarray, list[tuple[object, str]]]:
    """(N, prep.row_size) uint8 rows for paths (fastnet.preprocess.load_image), and (path, reason) for each
    unreadable one
    (its row stays 0), in the order of paths. With progress, a counter labelled so on stderr. Interrupted
    (KeyboardInterrupt, cli.Stopped), it ends its worker processes before the exception goes on."""
    workers = workers or os.cpu_count() or 1
    names = [str(p) for p in paths]
    size = max(64, -(-len(names) // (workers * 8)))
    chunks = [names[s:s + size] for s in range(0, len(names), size)]
    rows, failed, done = np.zeros((len(names), prep.row_size), np.uint8), [], 0
    if workers == 1 or len(chunks) <= 1:  # nothing to share out: no process to start
        decoded = ((index, *_decode_chunk(chunk, prep)) for index, chunk in enumerate(chunks))
    else:
        decoded = _decode_in_processes(chunks, prep, min(workers, len(chunks)))
    with contextlib.closing(decoded):  # an interruption here ends the workers now, not when garbage-collected
        for index, part, fails in decoded:
            rows[index * size:index * size + len(part)] = part
            failed += [(index * size + i, reason) for i, reason in fails]
            done += len(part)
            if progress and sys.stderr.isatty():  # a progress line for people, not for logs
                print(f"\r{progress}: {done:,}/{len(names):,} images", end="", file=sys.stderr, flush=True)
    if progress and sys.stderr.isatty():
        print(file=sys.stderr)
    return rows, [(paths[i], reason) for i, reason in sorted(failed)]
