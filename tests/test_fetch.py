"""fetch, against mirrors on 127.0.0.1."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from fastnet.datasets import MNIST_FILES, load_mnist, mnist_dir
from fastnet.fetch import fetch

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def mirrors(tmp_path_factory):
    """Local mirrors: good copies, corrupted files, truncated files, an empty one (404), and one that hangs."""
    base = tmp_path_factory.mktemp("mirrors")
    names = [name for pair in MNIST_FILES.values() for name in pair]
    for kind in ("good", "corrupt", "truncated", "missing"):
        (base / kind).mkdir()
    for name in names:
        data = (mnist_dir() / name).read_bytes()
        (base / "good" / name).write_bytes(gzip.compress(gzip.decompress(data)))  # other gz bytes, same content
        content = bytearray(gzip.decompress(data))
        content[len(content) // 2] ^= 0xFF
        (base / "corrupt" / name).write_bytes(gzip.compress(bytes(content)))
        (base / "truncated" / name).write_bytes(data[:len(data) // 2])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(base))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    yield {kind: url + kind + "/" for kind in ("good", "corrupt", "truncated", "missing")} | {
        "hanging": f"http://127.0.0.1:{silent.getsockname()[1]}/"}
    server.shutdown()
    silent.close()


def test_fetch_tries_mirrors_until_one_verifies(mirrors, tmp_path):
    order = [mirrors[k] for k in ("hanging", "missing", "truncated", "corrupt", "good")]
    paths = fetch(tmp_path / "mnist", order, timeout=0.5, report=lambda line: None)
    assert len(paths) == 4
    images, labels = load_mnist("test", tmp_path / "mnist")
    np.testing.assert_array_equal(images, load_mnist("test")[0])
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(p.name for p in paths)  # no temporaries


def test_fetch_with_no_good_mirror_is_one_clear_error(mirrors, tmp_path):
    result = subprocess.run([sys.executable, "-m", "fastnet", "fetch", tmp_path / "mnist", "--timeout", "0.5",
                             "--mirror", mirrors["corrupt"], "--mirror", mirrors["missing"],
                             "--mirror", "http://127.0.0.1:9/", "--no-default-mirrors"], env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "could not download" in result.stderr and "offline" in result.stderr
    assert not any((tmp_path / "mnist").glob("*.gz"))
