"""`fastnet export DIR`: the shipped MNIST as DIR/train/<label>/*.png and DIR/test/<label>/*.png.

Written in parallel into a staging folder beside DIR, renamed to DIR only when
complete: an export that fails or is interrupted (Ctrl-C, SIGTERM) stops its
worker processes and removes the staging folder, leaving no half-written
dataset. One killed outright (SIGKILL) cannot: the next export into the same
parent folder removes it, seen as abandoned because no process holds its lock.
The rename never replaces a DIR that appeared meanwhile (another export's,
say): that export keeps its folder and this one ends with an error.
"""

from __future__ import annotations

import errno
import glob
import multiprocessing
import multiprocessing.connection
import os
import shutil
import secrets
import signal
import socket
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .datasets import MNIST_CLASSES, load_mnist
from .errors import FastnetError
from .files import CAN_LOCK, QUIT_SIGNALS, lock, signals_held

JOB_IMAGES = 1000  # images per job: each job reports progress when done


def _write_pngs(folder: str, names: list[str], images: np.ndarray) -> int:
    for name, image in zip(names, images):
        Image.fromarray(image.reshape(28, 28)).save(os.path.join(folder, name), "PNG")
    return len(names)


def _worker(jobs: list[tuple[str, list[str], np.ndarray]], results, inherited: list) -> None:
    """Write jobs, sending each one's image count (or one error message) to the exporting process; stop at the
    first send after it is gone."""
    # Only the exporting process acts on a signal: it stops the workers and removes the staging folder.
    # Ctrl-C reaches the whole process group, so it is ignored here; SIGTERM and SIGHUP (from the exporting
    # process, or to the group) end a worker at once, without the KeyboardInterrupt traceback that the
    # inherited Python handlers would print. The signals were blocked across the fork until these were set.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, QUIT_SIGNALS)
    for receiver in inherited:  # the exporting process's ends, forked along: held here, they kept the pipes
        receiver.close()  # open after it was killed (SIGKILL), and the worker wrote on into the staging folder
    try:
        try:
            for folder, names, images in jobs:
                results.send(_write_pngs(folder, names, images))
        except OSError as error:
            results.send(f"cannot write {error.filename or 'a PNG file'}: {error.strerror or error}")
        except Exception as error:
            results.send(f"{type(error).__name__}: {error}")
    except OSError:  # the exporting process is gone: no one to tell
        pass


def _write_all(jobs: list[tuple[str, list[str], np.ndarray]], workers: int) -> int:
    """Run jobs in worker processes; returns the images written. Any exception (FastnetError for a failed
    worker, KeyboardInterrupt for Ctrl-C or SIGTERM) leaves no worker running."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None  # fork: no copy of the data
    context = multiprocessing.get_context(method)
    total = sum(len(names) for _, names, _ in jobs)
    running: dict = {}  # each worker's end of the results pipe -> its process
    written = 0
    try:
        for share in range(workers):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_worker, args=(jobs[share::workers], sender, [*running, receiver]),
                                      daemon=True)
            with signals_held():  # the child starts with them blocked, until _worker sets its handlers
                process.start()
                running[receiver] = process  # before a signal held back meanwhile can strike
                sender.close()  # the worker holds the only sending end now: its exit reads as EOF
        while running:
            for receiver in multiprocessing.connection.wait(list(running)):
                try:
                    message = receiver.recv()
                except EOFError:
                    process = running.pop(receiver)
                    process.join()
                    if process.exitcode != 0:
                        how = (f"was killed by signal {-process.exitcode}" if process.exitcode < 0
                               else f"ended with status {process.exitcode}")
                        raise FastnetError(f"an export worker process {how}; the export stopped and nothing "
                                           "of it was kept") from None
                    continue
                if isinstance(message, str):
                    raise FastnetError(f"{message}; the export stopped and nothing of it was kept")
                written += message
                if sys.stderr.isatty():  # a progress line for people, not for logs
                    print(f"\rexport: {written:,}/{total:,} images", end="", file=sys.stderr, flush=True)
    finally:
        with signals_held():  # a second Ctrl-C must not leave a worker behind
            for receiver, process in running.items():
                process.kill()
                process.join()
                receiver.close()
        if written and sys.stderr.isatty():
            print(file=sys.stderr)
    return written


def _staging_prefix() -> str:
    """Staging folders are named for the machine: a lock taken on one machine is not seen on another over a
    network file system (flock on NFS), so an export removes only its own machine's abandoned folders."""
    host = "".join(c for c in socket.gethostname() if c.isascii() and (c.isalnum() or c in "-.")) or "host"
    return f".fastnet-export-{host[:64]}-"


def _new_staging(parent: Path) -> tuple[Path, int]:
    """A new hidden folder in parent, and a descriptor holding the lock that marks it as in use.

    Made as mkdir makes folders: with the umask's mode, which the exported folder keeps (tempfile.mkdtemp's
    0700 kept it from other users), and a short name of its own (one made from DIR's was too long for a DIR
    of 238 characters or more). Locked before it takes its .partial name, so that `_remove_abandoned` never
    sees it unlocked while this export lives."""
    while True:
        name = _staging_prefix() + secrets.token_hex(4)
        making = parent / f"{name}.new"
        try:
            making.mkdir()
        except FileExistsError:
            continue
        held = None
        try:
            held = os.open(making, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            lock(held)
            staging = parent / f"{name}.partial"
            os.rename(making, staging)  # replaces only an empty folder of that name, itself abandoned
            return staging, held
        except BaseException:
            if held is not None:
                os.close(held)
            shutil.rmtree(making, ignore_errors=True)
            raise


def _remove_abandoned(parent: Path) -> None:
    """Remove the staging folders in parent of this machine's exports that were killed outright (SIGKILL, the
    out-of-memory killer), which had no chance to; one whose lock is held belongs to an export still running."""
    if not CAN_LOCK:
        return  # without locks, a running export's folder would look abandoned: left for the user to remove
    for staging in parent.glob(glob.escape(_staging_prefix()) + "*.partial"):
        try:
            held = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # gone meanwhile, or not a folder fastnet made
        try:
            lock(held)
        except OSError:
            continue  # BlockingIOError: its export is running
        else:
            shutil.rmtree(staging, ignore_errors=True)
        finally:
            os.close(held)


def export(destination: str | Path, splits: tuple[str, ...] = ("train", "test"), workers: int | None = None) -> int:
    """Write the splits as PNG folders under destination (which must not exist); returns images written."""
    destination = Path(destination)
    if os.path.lexists(destination):
        raise FastnetError(f"{destination} already exists; choose a new folder (nothing was written)")
    if not destination.parent.is_dir():
        raise FastnetError(f"{destination.parent}: " + ("not a folder" if destination.parent.exists() else
                                                        "no such folder"))
    try:
        _remove_abandoned(destination.parent)
        staging, held = _new_staging(destination.parent)
    except OSError as error:
        raise FastnetError(f"cannot write in {destination.parent} ({error.strerror}); nothing was written") from None
    try:
        jobs = []
        for split in splits:
            images, labels = load_mnist(split)
            for label, name in enumerate(MNIST_CLASSES):
                (staging / split / name).mkdir(parents=True)
                rows = np.flatnonzero(labels == label)
                for start in range(0, len(rows), JOB_IMAGES):
                    chunk = rows[start:start + JOB_IMAGES]
                    jobs.append((str(staging / split / name), [f"{i:05d}.png" for i in chunk], images[chunk]))
        written = _write_all(jobs, max(1, min(workers or os.cpu_count() or 1, len(jobs))))
        try:
            # rename, not a copy: DIR appears complete or not at all. It fails where DIR exists with anything
            # in it (another export finished first), so that one is never replaced.
            os.rename(staging, destination)
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise FastnetError(f"{destination} appeared while exporting (another export into it?); it is left "
                                   "as it is, and nothing of this export was kept") from None
            raise
    except BaseException as error:  # Ctrl-C and SIGTERM (cli.Stopped) too: the workers are stopped by now
        with signals_held():  # a second signal must not cut the removal short
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise FastnetError(f"cannot export to {destination} ({error.strerror or error}); nothing was "
                               "written") from None
        raise
    finally:
        os.close(held)  # after the removal or the rename: never a moment where its folder looks abandoned
    return written
