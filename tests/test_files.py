"""Safe reading and writing (fastnet/files.py): only regular files are replaced, no two paths collide, a full
disk or a quitting signal leaves the old file whole and no temporary behind, and no read can block forever."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastnet import files
from fastnet.errors import FastnetError
from fastnet.parameters import Parameters, load, save

from .conftest import new_network

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
SHIPPED = ROOT / "parameters.npz"


def fastnet(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fastnet", *map(str, args)], cwd=cwd or ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)


def one_error_line(result, *words):
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("fastnet: error:") and result.stderr.count("\n") == 1, result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.npz"
    os.mkfifo(path)
    return path


def test_only_a_regular_file_is_ever_replaced(tmp_path, fifo):
    (tmp_path / "folder").mkdir()
    for target in (fifo, tmp_path / "folder"):
        with pytest.raises(FastnetError, match="not a file"):
            files.write_atomically(target, lambda file: file.write(b"new"))
    assert fifo.is_fifo() and (tmp_path / "folder").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "pipe.npz"]  # no temporary left


def test_writing_through_a_link_keeps_the_link(tmp_path):
    (tmp_path / "real.bin").write_bytes(b"old")
    (tmp_path / "link.bin").symlink_to("real.bin")
    files.write_atomically(tmp_path / "link.bin", lambda file: file.write(b"new"))
    assert (tmp_path / "link.bin").is_symlink() and (tmp_path / "real.bin").read_bytes() == b"new"


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
def test_a_device_as_output_is_refused_before_training(device, tmp_path):
    """As root, `--out /dev/full` turned the device into a regular file (and the test suite did so to /dev/null)."""
    if not Path(device).exists():
        pytest.skip(f"no {device} here")
    result = fastnet("train", "--dry-run", "--out", device, "--plot", tmp_path / "e.png")
    one_error_line(result, "--out", "not a file")
    assert Path(device).is_char_device()
    assert "epoch" not in result.stdout


def test_a_fifo_as_input_is_refused_not_waited_on(fifo):
    with pytest.raises(FastnetError, match="FIFO"):
        load(fifo)
    result = fastnet("evaluate", "--parameters", fifo)
    one_error_line(result, "FIFO")


def collisions(tmp_path):
    model = tmp_path / "model.npz"
    shutil.copy(SHIPPED, model)
    digit = tmp_path / "digit.png"
    from PIL import Image
    Image.new("L", (28, 28)).save(digit)
    same = tmp_path / "same"
    return {
        "--out and --checkpoint": (["train", "--dry-run", "--out", same, "--checkpoint", same,
                                    "--plot", tmp_path / "e.png"], ("--out", "--checkpoint")),
        "--plot and --checkpoint": (["train", "--dry-run", "--out", tmp_path / "p.npz", "--plot", same,
                                     "--checkpoint", same], ("--plot", "--checkpoint")),
        "--out and --plot": (["train", "--dry-run", "--out", same, "--plot", same], ("--out", "--plot")),
        "--out and --plot by another name": (["train", "--dry-run", "--out", same,
                                              "--plot", tmp_path / ".." / tmp_path.name / "same"], ("--out", "--plot")),
        "evaluate --confusion onto the model": (["evaluate", "--parameters", model, "--confusion", model],
                                                ("--confusion", "--parameters")),
        "predict --confusion onto the model": (["predict", digit, "--parameters", model, "--confusion", model],
                                               ("--confusion", "--parameters")),
        "predict --confusion onto an input": (["predict", digit, "--confusion", digit], ("--confusion", "digit.png")),
        "predict --confusion into an input folder": (["predict", tmp_path, "--confusion", tmp_path / "c.png"],
                                                     ("--confusion", "among the images")),
    }


@pytest.mark.parametrize("case", ["--out and --checkpoint", "--plot and --checkpoint", "--out and --plot",
                                  "--out and --plot by another name", "evaluate --confusion onto the model",
                                  "predict --confusion onto the model", "predict --confusion onto an input",
                                  "predict --confusion into an input folder"])
def test_two_paths_that_are_one_file_are_refused(case, tmp_path):
    """Each of these lost a file with exit 0: a model deleted, a model overwritten by a PNG."""
    args, named = collisions(tmp_path)[case]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = fastnet(*args)
    one_error_line(result, *named)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_two_inputs_that_are_one_file_are_read_not_refused(tmp_path):
    """An image given as --parameters was refused as "one would overwrite the other", though nothing is written:
    it is read, and found not to be parameters."""
    args, _ = collisions(tmp_path)["predict --confusion onto an input"]
    digit = args[1]
    result = fastnet("predict", digit, "--parameters", digit)
    one_error_line(result, "cannot read this parameters file")
    assert "overwrite" not in result.stderr


def test_an_existing_file_at_the_checkpoint_path_is_never_touched(tmp_path):
    """`--checkpoint keep.npz` pointing at an unrelated file overwrote it, then deleted it."""
    keep = tmp_path / "keep.npz"
    keep.write_bytes(b"the user's own file")
    result = fastnet("train", "--dry-run", "--out", tmp_path / "p.npz", "--plot", tmp_path / "e.png",
                     "--checkpoint", keep)
    one_error_line(result, "--checkpoint", "already exists", "--resume")
    assert keep.read_bytes() == b"the user's own file" and not (tmp_path / "p.npz").exists()


def test_a_failing_write_is_one_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "p.npz"
    save(path, Parameters(new_network(16), list("0123456789")))
    before = path.read_bytes()

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(FastnetError, match="the disk is full; the old file is unchanged"):
        save(path, Parameters(new_network(16, seed=1), list("0123456789")))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["p.npz"]


def test_a_replaced_file_keeps_its_mode_and_a_read_only_one_is_refused(tmp_path, monkeypatch):
    """Every save made the file 0666 less the umask: a private (0600) parameters file became world-readable. A
    read-only file (simulated: root may write anywhere) was replaced as well, the rename needing only the folder."""
    path = tmp_path / "p.npz"
    save(path, Parameters(new_network(16), list("0123456789")))
    path.chmod(0o600)
    save(path, Parameters(new_network(16, seed=1), list("0123456789")))
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_bytes()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda where, mode: real_access(where, mode) and not (
        Path(where) == path and mode & os.W_OK))
    with pytest.raises(FastnetError, match="p.npz: the file is read-only; make it writable or choose another path"):
        files.check_output(path, "--out")
    with pytest.raises(FastnetError, match="the file is read-only; the old file is unchanged"):
        save(path, Parameters(new_network(16, seed=2), list("0123456789")))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["p.npz"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MB file system, where the platform lets this user mount one (root on Linux)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small file system here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_while_training_is_one_error_and_loses_nothing(tiny_disk, tmp_path):
    """Disk full on a checkpoint, the parameters or the plot gave a traceback."""
    out = tiny_disk / "p.npz"
    save(out, Parameters(new_network(16), list("0123456789")))
    before = out.read_bytes()
    with open(tiny_disk / "filler", "wb", buffering=0) as filler:  # fill the disk
        with pytest.raises(OSError):
            while True:
                filler.write(b"\0" * 4096)
    result = fastnet("train", "--dry-run", "--hidden", "16", "--out", out, "--plot", tiny_disk / "e.png")
    one_error_line(result, "the disk is full")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "p.npz"]  # no temporary, no half file


QUIT_MID_WRITE = """
import os, signal, sys, time
from pathlib import Path
from fastnet import cli, files
signals = [getattr(signal, name) for name in sys.argv[2:]]

def write(file):
    file.write(b"half of the new")
    for signum in signals:
        os.kill(os.getpid(), signum)
    time.sleep(30)

with cli._signal_handlers(cli.QUITTING), cli._stop_on_signals():
    files.write_atomically(Path(sys.argv[1]), write)
"""


@pytest.mark.parametrize("signals,status", [(["SIGINT", "SIGINT"], 130), (["SIGTERM", "SIGTERM"], 143),
                                            (["SIGQUIT"], 131)])
def test_quitting_at_once_mid_write_leaves_the_old_file_and_no_temporary(signals, status, tmp_path):
    """A double Ctrl-C 1-5 ms apart left a .checkpoint.npz.*.tmp behind."""
    target = tmp_path / "run.checkpoint.npz"
    target.write_bytes(b"the old checkpoint")
    result = subprocess.run([sys.executable, "-c", QUIT_MID_WRITE, target, *signals], env=ENV, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == [target.name] and target.read_bytes() == b"the old checkpoint"


def test_read_npz_reads_only_what_it_is_asked_and_checks_sizes_first(tmp_path):
    """A 2 MB parameters file carrying an extra 2 GB entry was read whole (2.2 GB of memory)."""
    path = tmp_path / "p.npz"
    save(path, Parameters(new_network(16), list("0123456789")))
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (1 << 29,)  # claims 2 GB
    with zipfile.ZipFile(path, "a") as archive, archive.open("extra.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)
        member.write(b"\0" * 1024)
    assert load(path).network.weights[0].shape == (784, 16)  # the extra entry is never read
    with pytest.raises(FastnetError, match="claims 2,147,483,648 bytes"):
        files.read_npz(path, ["extra"])
    with pytest.raises(FastnetError, match="claims 2,147,483,648 bytes"):
        files.read_npz(path, ["extra"], max_bytes=None)  # no cap given: the file's own size still bounds it


def test_entries_that_may_pass_2_gib_are_written_as_zip64(tmp_path, monkeypatch):
    """zipfile refuses to go past 2 GiB in an entry not opened as ZIP64 (a traceback, once, for a big dataset's
    cache); ZIP64_FROM (1 GiB) lowered to 64 bytes here. Smaller entries are written as before, byte for byte."""
    arrays = {"small": np.arange(4, dtype=np.float32), "big": np.arange(1000, dtype=np.float32)}
    plain, big = tmp_path / "plain.npz", tmp_path / "big.npz"
    files.write_atomically(plain, lambda file: files.write_npz(file, arrays))
    monkeypatch.setattr(files, "ZIP64_FROM", 64)
    files.write_atomically(big, lambda file: files.write_npz(file, arrays))
    with zipfile.ZipFile(big) as archive:
        version = {info.filename: info.extract_version for info in archive.infolist()}
    assert version == {"small.npy": 20, "big.npy": zipfile.ZIP64_VERSION}
    assert plain.read_bytes() != big.read_bytes()
    for path in (plain, big):
        read = files.read_npz(path, arrays, max_bytes=None)
        with np.load(path, allow_pickle=False) as loaded:
            for name, array in arrays.items():
                np.testing.assert_array_equal(read[name], array)
                np.testing.assert_array_equal(loaded[name], array)
