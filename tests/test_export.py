"""export: the PNG folders read back bit for bit, and an export that fails, loses a race or is stopped by a
signal leaves nothing of its own behind, no worker process and no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastnet import export as export_module
from fastnet.datasets import load_mnist
from fastnet.errors import FastnetError
from fastnet.export import export
from fastnet.files import lock
from fastnet.folders import load_folder

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "mnist"
    export(folder, splits=("test",))
    return folder


def test_export_round_trip_is_bit_identical(exported):
    images, labels = load_mnist("test")
    loaded, loaded_labels, classes = load_folder(exported / "test", progress=False)
    assert classes == [str(d) for d in range(10)]
    order = np.concatenate([np.flatnonzero(labels == d) for d in range(10)])  # class folders, files by index
    np.testing.assert_array_equal(loaded, images[order])
    np.testing.assert_array_equal(loaded_labels, labels[order])
    assert loaded.flags.c_contiguous and loaded.dtype == np.uint8


def failing_write(*args):  # module level: the export's worker processes must be able to unpickle it
    raise OSError(28, "No space left on device")


def dying_write(*args):
    os.kill(os.getpid(), signal.SIGKILL)


def test_export_refuses_an_existing_folder_and_leaves_nothing_when_it_fails(tmp_path, monkeypatch):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FastnetError, match="already exists"):
        export(tmp_path / "taken")

    monkeypatch.setattr(export_module, "_write_pngs", failing_write)
    with pytest.raises(FastnetError, match="No space left on device; the export stopped and nothing of it was kept"):
        export(tmp_path / "new", splits=("test",), workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no half-written dataset, no staging folder

    monkeypatch.setattr(export_module, "_write_pngs", dying_write)  # the out-of-memory killer, say
    with pytest.raises(FastnetError, match="an export worker process was killed by signal 9"):
        export(tmp_path / "new", splits=("test",), workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]

    with pytest.raises(FastnetError, match="no such folder"):
        export(tmp_path / "missing" / "new")


def test_an_export_that_loses_the_race_keeps_the_winners_folder(tmp_path, monkeypatch):
    """Another export finishes first while this one writes: this one ends with one error, and removes only its
    own staging folder."""
    destination = tmp_path / "mnist"
    real_load = export_module.load_mnist

    def other_export_finishes_first(split):
        (destination / "test" / "0").mkdir(parents=True, exist_ok=True)
        (destination / "test" / "0" / "00003.png").write_bytes(b"the winner's")
        return real_load(split)

    monkeypatch.setattr(export_module, "load_mnist", other_export_finishes_first)
    with pytest.raises(FastnetError, match="appeared while exporting"):
        export(destination, splits=("test",))
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "mnist", "mnist/test", "mnist/test/0", "mnist/test/0/00003.png"]
    assert (destination / "test" / "0" / "00003.png").read_bytes() == b"the winner's"


def test_concurrent_exports_into_one_folder(tmp_path):
    """Two exports started together: one makes the folder, the other gets one error line, and no staging
    folder is left."""
    command = [sys.executable, "-m", "fastnet", "export", str(tmp_path / "mnist"), "--split", "test"]
    processes = [subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    results = [(p.returncode, err) for p in processes for _, err in [p.communicate(timeout=600)]]
    assert sorted(code for code, _ in results) == [0, 1], results
    error = next(err for code, err in results if code == 1)
    assert "Traceback" not in error and error.strip().splitlines()[-1].startswith("fastnet: error: ")
    assert "already exists" in error or "appeared while exporting" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist"]
    assert len(list((tmp_path / "mnist").rglob("*.png"))) == 10_000


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


# `python -m fastnet export DIR`, but writing a PNG every 50 ms: finishing the export would take half an hour.
SLOW_EXPORT = """
import sys, time
import fastnet.export as export
write = export._write_pngs
def slow_write(folder, names, images):
    for i in range(len(names)):
        write(folder, names[i:i + 1], images[i:i + 1])
        time.sleep(0.05)
    return len(names)
export._write_pngs = slow_write
from fastnet.__main__ import run
sys.argv = ["fastnet", "export", sys.argv[1]]
sys.exit(run())
"""


@pytest.mark.parametrize("signum,to_group,slow", [
    (signal.SIGTERM, False, False), (signal.SIGTERM, False, True), (signal.SIGTERM, True, False),
    (signal.SIGINT, True, False), (signal.SIGHUP, True, False)],
    ids=["SIGTERM", "SIGTERM-slow-writes", "SIGTERM-to-group", "Ctrl-C", "SIGHUP-to-group"])
def test_a_signal_stops_the_export_and_removes_the_staging_folder(tmp_path, signum, to_group, slow):
    """Signalled once it is writing PNGs (to the process, or to its process group as a terminal or a service
    manager does): its workers stop at once, exit 128 + signal, no traceback, no staging folder, no process
    left."""
    command = ["-c", SLOW_EXPORT] if slow else ["-m", "fastnet", "export"]
    process = subprocess.Popen([sys.executable, *command, str(tmp_path / "mnist")], env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    group = process.pid  # its own session: a signal to the group reaches its workers, not pytest
    try:
        deadline = time.monotonic() + 300
        while not any(tmp_path.glob(".fastnet-export-*.partial/*/*/*.png")) and process.poll() is None:
            assert time.monotonic() < deadline, "the export never started writing"
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()
        if to_group:
            os.killpg(group, signum)
        else:
            process.send_signal(signum)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("still running a minute after the signal: its workers went on writing")
        assert process.returncode == 128 + signum, err
        assert "Traceback" not in err and err.splitlines()[-1] == "fastnet: interrupted", err
        assert list(tmp_path.iterdir()) == []  # no staging folder, no half-written dataset
        deadline = time.monotonic() + 30
        while group_alive(group) and time.monotonic() < deadline:  # the workers are gone too
            time.sleep(0.1)
        assert not group_alive(group), "worker processes were left running"
    finally:
        if group_alive(group):  # only the processes this test started
            os.killpg(group, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait()


def test_workers_stop_soon_after_the_export_is_killed(tmp_path):
    """SIGKILL (the out-of-memory killer, say) leaves no chance to clean up: the workers, which held the pipes
    they write to open themselves, wrote the whole dataset into the staging folder, orphaned. Now they stop at
    their next report; the staging folder stays, hidden and incomplete, until the next export beside it."""
    process = subprocess.Popen([sys.executable, "-m", "fastnet", "export", str(tmp_path / "mnist")], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    group = process.pid
    try:
        deadline = time.monotonic() + 300
        while not any(tmp_path.glob(".fastnet-export-*.partial/*/*/*.png")) and process.poll() is None:
            assert time.monotonic() < deadline, "the export never started writing"
            time.sleep(0.05)
        process.kill()
        process.wait()
        deadline = time.monotonic() + 60
        while group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(group), "worker processes went on writing after the export was killed"
        assert len(list(tmp_path.glob(".fastnet-export-*.partial/*/*/*.png"))) < 70_000
        assert not (tmp_path / "mnist").exists()
        again = subprocess.run([sys.executable, "-m", "fastnet", "export", str(tmp_path / "again"), "--split",
                                "test"], env=ENV, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # the abandoned staging folder removed
    finally:
        if group_alive(group):
            os.killpg(group, signal.SIGKILL)


def test_only_abandoned_staging_folders_are_removed(tmp_path):
    """A staging folder whose lock is held is a running export's (here this process holds it); one whose lock
    nobody holds was left by an export killed outright. Another machine's (over NFS its lock is not seen here)
    and anything else beside them is not this export's to touch."""
    prefix = export_module._staging_prefix()
    running, abandoned = tmp_path / f"{prefix}0a0a0a0a.partial", tmp_path / f"{prefix}dead.partial"
    elsewhere = tmp_path / ".fastnet-export-other-machine-0b0b0b0b.partial"
    for folder in (running, abandoned, elsewhere, tmp_path / "mine.partial"):
        (folder / "test" / "7").mkdir(parents=True)
        (folder / "test" / "7" / "00000.png").write_bytes(b"png")
    os.symlink(tmp_path / "mine.partial", tmp_path / f"{prefix}link.partial")
    held = os.open(running, os.O_RDONLY | os.O_DIRECTORY)
    try:
        lock(held)
        export_module._remove_abandoned(tmp_path)
    finally:
        os.close(held)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, elsewhere.name, f"{prefix}link.partial",
                                                                 "mine.partial"])
    assert (tmp_path / "mine.partial" / "test" / "7" / "00000.png").exists()


def test_the_exported_folder_has_the_modes_mkdir_gives_and_any_valid_name(tmp_path):
    """The top folder was 0700 (tempfile.mkdtemp's staging folder, renamed), whatever the umask; a DIR of 238
    characters or more was refused as too long (the staging folder's name was DIR's and more)."""
    name = "m" * 240
    export(tmp_path / name, splits=("test",))
    (tmp_path / "made").mkdir()
    mode = (tmp_path / "made").stat().st_mode
    assert (tmp_path / name).stat().st_mode == mode == (tmp_path / name / "test").stat().st_mode
    (tmp_path / "a file").write_text("")
    with pytest.raises(FastnetError, match="a file: not a folder"):
        export(tmp_path / "a file" / "new")
