"""fetch, against mirrors on 127.0.0.1: it tries mirrors until one verifies, bounds what a mirror can cost
(memory, bytes, time), and a bad destination is one error line that leaves nothing behind."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from fastnet import cli
from fastnet import fetch as fetch_module
from fastnet.datasets import MNIST_FILES, load_mnist, mnist_dir
from fastnet.errors import FastnetError
from fastnet.fetch import fetch

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
NAMES = [name for pair in MNIST_FILES.values() for name in pair]
FIRST = NAMES[0]  # fetch gives up at the first file no mirror has: the tests of bad mirrors cost one file
SERVE_SECONDS = 40  # the longest a slow mirror below keeps sending: past any timeout the tests give
quiet = lambda line: None  # noqa: E731


def gzip_member(data: bytes, level: int = 9) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


class Mirror(http.server.SimpleHTTPRequestHandler):
    """Files from a folder, and misbehaving mirrors under /drip/, /drip-headers/, /endless/ and /huge/."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        kind = self.path.strip("/").split("/")[0]
        if kind == "drip":  # a byte every half second: each read is quick, the whole never ends
            self.send_response(200)
            self.send_header("Content-Length", str(10**6))
            self.end_headers()
            self.trickle(b"\x1f\x8b\x08\x00" + b"\x00" * 10**6)
        elif kind == "drip-headers":
            self.close_connection = True
            self.trickle(b"HTTP/1.0 200 OK\r\nX-Slow: " + b"a" * 10**6)
        elif kind in ("endless", "huge"):  # a gzip header whose file name never ends: no output, ever more input
            self.send_response(200)
            if kind == "huge":
                self.send_header("Content-Length", str(10**12))
            self.end_headers()
            self.close_connection = True
            block = b"a" * (1 << 16)
            with self.sending():
                self.wfile.write(b"\x1f\x8b\x08\x08" + bytes(6))  # FNAME flag set
                for _ in range(10**9 // len(block)):  # bounded: 1 GB, far past any limit of fetch's
                    self.wfile.write(block)
        elif kind == "rude":  # a reason phrase that would clear a terminal and set its title
            self.send_response(404, "Not Found\x1b[2J\x1b]0;pwned\x07")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif kind == "loop":  # a redirect to itself: urllib's message for it runs over three lines
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            super().do_GET()

    def trickle(self, data: bytes) -> None:
        started = time.monotonic()
        with self.sending():
            for byte in data:
                if time.monotonic() - started > SERVE_SECONDS:
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.5)

    @staticmethod
    def sending():
        # The client hanging up is how these mirrors are meant to end.
        return contextlib.suppress(BrokenPipeError, ConnectionResetError)


@pytest.fixture(scope="module")
def mirrors(tmp_path_factory):
    """Local mirrors: good copies, corrupted, truncated, gzip bombs, only the train files, none (404), one that
    hangs, and the misbehaving ones of Mirror."""
    base = tmp_path_factory.mktemp("mirrors")
    kinds = ("good", "corrupt", "truncated", "missing", "bomb", "bombs", "train-only")
    for kind in kinds:
        (base / kind).mkdir()
    bomb = gzip_member(bytes(128 << 20))  # 128 MB of zeros in 128 kB
    bombs = gzip_member(bytes(1 << 20)) * 256  # 256 members of 1 MB each: gzip files may be concatenated
    for name in NAMES:
        data = (mnist_dir() / name).read_bytes()
        content = bytearray(gzip.decompress(data))
        (base / "good" / name).write_bytes(gzip.compress(content, 1))  # other gz bytes, same content
        content[len(content) // 2] ^= 0xFF
        (base / "corrupt" / name).write_bytes(gzip.compress(content, 1))
        (base / "truncated" / name).write_bytes(data[:len(data) // 2])
        (base / "bomb" / name).write_bytes(bomb)
        (base / "bombs" / name).write_bytes(bombs)
    for name in MNIST_FILES["train"]:
        (base / "train-only" / name).write_bytes((mnist_dir() / name).read_bytes())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Mirror, directory=str(base)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    yield {kind: url + kind + "/" for kind in kinds + ("drip", "drip-headers", "endless", "huge", "rude", "loop")} | {
        "hanging": f"http://127.0.0.1:{silent.getsockname()[1]}/"}
    server.shutdown()
    silent.close()


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastnet", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=600)


def test_fetch_tries_mirrors_until_one_verifies(mirrors, tmp_path):
    order = [mirrors[k] for k in ("missing", "truncated", "corrupt", "bomb", "good")]
    paths = fetch(tmp_path / "mnist", order, timeout=60, report=quiet)
    assert len(paths) == 4
    images, labels = load_mnist("test", tmp_path / "mnist")
    np.testing.assert_array_equal(images, load_mnist("test")[0])
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(p.name for p in paths)  # no temporaries

    lines = []  # a second fetch finds them verified and asks no mirror; a damaged one is downloaded again
    (tmp_path / "mnist" / NAMES[3]).write_bytes(b"\x1f\x8b damaged")
    fetch(tmp_path / "mnist", [mirrors["good"]], timeout=60, report=lines.append)
    assert [line.split(": ")[1] for line in lines] == ["already here and verified"] * 3 + [
        f"downloaded from {mirrors['good']} and verified"]


def test_fetch_with_no_good_mirror_is_one_clear_error(mirrors, tmp_path):
    result = run_cli("fetch", tmp_path / "mnist", "--timeout", "5", "--mirror", mirrors["corrupt"],
                     "--mirror", mirrors["missing"], "--mirror", "http://127.0.0.1:9/", "--no-default-mirrors")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "could not download" in result.stderr and "give another --mirror URL" in result.stderr
    assert "offline" not in result.stderr  # two mirrors answered: the network is there
    assert not (tmp_path / "mnist").exists()  # the folder it made, empty, is gone
    result = run_cli("fetch", tmp_path / "mnist", "--timeout", "5", "--mirror", "http://127.0.0.1:9/",
                     "--no-default-mirrors")
    assert result.returncode == 1 and "are you offline?" in result.stderr, result.stderr


@pytest.mark.parametrize("kind,reason", [
    ("bomb", "decompresses to more than the 47,040,016 bytes"),
    ("bombs", "decompresses to more than the 47,040,016 bytes"),
    ("endless", f"sent more than {fetch_module.max_download(FIRST):,} bytes"),
    ("huge", "sends 1,000,000,000,000 bytes"),
])
def test_a_mirror_costs_little_memory_whatever_it_sends(mirrors, tmp_path, kind, reason):
    """A gzip bomb (128 MB in 128 kB) or an endless stream is refused within a few MB of memory."""
    tracemalloc.start()
    try:
        with pytest.raises(FastnetError) as error:
            fetch(tmp_path / "mnist", [mirrors[kind]], timeout=120, report=quiet)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"{peak / 2**20:.0f} MB at the peak"  # the bombs alone decompress to 128 MB or more
    assert reason in str(error.value)
    assert not (tmp_path / "mnist").exists()


@pytest.mark.parametrize("kind", ["drip", "drip-headers", "hanging"])
def test_the_timeout_bounds_the_whole_download(mirrors, tmp_path, kind):
    """A mirror sending a byte every half second never trips a timeout per read; the timeout is per file."""
    started = time.monotonic()
    with pytest.raises(FastnetError) as error:
        fetch(tmp_path / "mnist", [mirrors[kind]], timeout=2, report=quiet)
    assert time.monotonic() - started < 15  # generous: a 2 s timeout; the mirror would go on for 40 s
    assert "took longer than the timeout (2 s for the whole file)" in str(error.value)
    assert not (tmp_path / "mnist").exists()


def test_a_silent_mirror_is_left_after_the_stall_limit(mirrors, tmp_path, monkeypatch):
    """Within a long timeout, a mirror that sends nothing is still left soon, for the next one."""
    monkeypatch.setattr(fetch_module, "STALL_SECONDS", 1.0)
    started = time.monotonic()
    with pytest.raises(FastnetError, match="sent nothing for 1 s"):
        fetch(tmp_path / "mnist", [mirrors["hanging"]], timeout=60, report=quiet)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "1e9"])
def test_timeout_must_be_finite_and_positive(value, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["fetch", "--timeout", value])
    assert stop.value.code == 2 and "--timeout" in capsys.readouterr().err
    if value != "1e9":  # a library call may wait longer than a day, never forever
        with pytest.raises(FastnetError, match="timeout"):
            fetch("unused", timeout=float(value))


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/mnist/", "file:///tmp/", "data:,x", "127.0.0.1/mnist"])
def test_mirrors_must_be_http(url, tmp_path, capsys):
    assert cli.main(["fetch", str(tmp_path / "mnist"), "--mirror", url, "--no-default-mirrors"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an http:// or https:// URL" in err
    assert not (tmp_path / "mnist").exists()


def test_a_mirror_with_a_password_is_refused_without_showing_it(tmp_path, capsys):
    """urllib took "user:secret@127.0.0.1" for a host name: the fetch failed as if the name did not resolve."""
    err = fetch_error(tmp_path / "mnist", "--mirror", "http://user:secret@127.0.0.1:9/mnist/", capsys=capsys)
    assert "--mirror http://...@127.0.0.1:9/mnist/: a user name or password in the URL is not supported" in err
    assert "secret" not in err and not (tmp_path / "mnist").exists()
    # "/", "?" or "#" in it ends the host part: urllib took "user:se", "user:2024" or "user:" for a host and a
    # port, sent the request there and showed the password in the error
    for password in ("se/cret", "se?cret", "se#cret", "2024/secret", "?secret", "#secret"):
        err = fetch_error(tmp_path / "mnist", "--mirror", f"http://user:{password}@127.0.0.1:9/mnist/",
                          capsys=capsys)
        assert "a user name or password in the URL is not supported" in err and "cret" not in err, err
        assert not (tmp_path / "mnist").exists()
    assert "its port is not a number" in fetch_error(tmp_path / "mnist", "--mirror", "http://127.0.0.1:99999/",
                                                     capsys=capsys)


def test_what_a_mirror_says_is_escaped_in_one_line(mirrors, tmp_path, capsys):
    """A mirror's reason phrase went to the terminal as it was (escape sequences acted on), and urllib's
    three-line message for a redirect loop split the one-line error."""
    err = fetch_error(tmp_path / "mnist", "--mirror", mirrors["rude"], "--mirror", mirrors["loop"], capsys=capsys)
    assert "\x1b" not in err and "\\x1b[2J" in err and "infinite loop" in err
    assert fetch_error(tmp_path / "mnist", "--mirror", "http://[::1", capsys=capsys).startswith(
        "fastnet: error: --mirror http://[::1: not a valid URL")  # it was a traceback


def fetch_error(*args: str, capsys) -> str:
    """The CLI's stderr for a fetch that must fail with one error line."""
    assert cli.main(["fetch", *map(str, args), "--timeout", "5", "--no-default-mirrors"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastnet: error: ") and err.count("\n") == 1, err
    return err


def test_a_destination_that_is_a_file_is_one_error(mirrors, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    assert "is a file, not a folder" in fetch_error(tmp_path / "file", "--mirror", mirrors["good"], capsys=capsys)
    assert "is under" in fetch_error(tmp_path / "file" / "a" / "b", "--mirror", mirrors["good"], capsys=capsys)
    (tmp_path / "mnist" / FIRST).mkdir(parents=True)  # a folder where a file goes: refused before downloading
    assert f"{FIRST} is a folder" in fetch_error(tmp_path / "mnist", "--mirror", mirrors["good"], capsys=capsys)
    assert (tmp_path / "file").read_text() == "mine" and listing(tmp_path) == ["file", "mnist", f"mnist/{FIRST}"]

    result = run_cli("fetch", tmp_path / "file", "--mirror", mirrors["good"], "--no-default-mirrors")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the simulated test covers it")
def test_a_read_only_folder_is_one_error(mirrors, tmp_path, capsys):
    (tmp_path / "locked").mkdir(mode=0o555)
    assert "read-only" in fetch_error(tmp_path / "locked", "--mirror", mirrors["good"], capsys=capsys)
    assert "cannot create" in fetch_error(tmp_path / "locked" / "mnist", "--mirror", mirrors["good"], capsys=capsys)
    assert listing(tmp_path) == ["locked"]


def test_a_read_only_folder_is_one_error_simulated(mirrors, tmp_path, capsys, monkeypatch):
    """Root may write anywhere, so the refusals a read-only folder gets are simulated: from the check before
    downloading, from creating a folder, and from writing the file."""
    (tmp_path / "existing").mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert "existing is read-only" in fetch_error(tmp_path / "existing", "--mirror", mirrors["good"], capsys=capsys)
    monkeypatch.undo()

    real_mkdir = Path.mkdir

    def refused_below(path, *args, **kwargs):
        if path.parent.name == "new":
            raise PermissionError(13, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refused_below)
    err = fetch_error(tmp_path / "new" / "mnist", "--mirror", mirrors["good"], capsys=capsys)
    assert "cannot create the folder" in err and "Permission denied" in err
    monkeypatch.undo()

    real_open = os.open

    def refused(path, flags, *args, **kwargs):  # the temporary file write_atomically makes
        if flags & os.O_CREAT and str(path).endswith(".tmp"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refused)
    err = fetch_error(tmp_path / "deep" / "mnist", "--mirror", mirrors["good"], capsys=capsys)
    assert "cannot write" in err and "Permission denied" in err and "nothing was written" in err
    assert listing(tmp_path) == ["existing"]  # and the folders it made are gone again


def test_a_failed_fetch_removes_only_the_folders_it_made(mirrors, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    fetch_error(tmp_path / "mine", "--mirror", mirrors["missing"], capsys=capsys)
    fetch_error(tmp_path / "mine" / "a" / "b", "--mirror", mirrors["missing"], capsys=capsys)
    assert listing(tmp_path) == ["mine"]

    # the files verified before a failure are kept, with the folder they are in: fetch again for the rest
    err = fetch_error(tmp_path / "new" / "mnist", "--mirror", mirrors["train-only"], capsys=capsys)
    assert "the 2 files verified so far are kept" in err
    assert listing(tmp_path) == ["mine", "new", "new/mnist"] + [f"new/mnist/{name}"
                                                                 for name in sorted(MNIST_FILES["train"])]


def test_an_interrupted_fetch_removes_the_folder_it_made(mirrors, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_module, "write_atomically", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch(tmp_path / "a" / "b", [mirrors["good"]], report=quiet)
    assert listing(tmp_path) == []
