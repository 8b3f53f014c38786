"""export: the shipped MNIST as PNG folders, read back bit for bit; a failed export leaves nothing."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet import export as export_module
from fastnet.datasets import load_mnist
from fastnet.errors import FastnetError
from fastnet.export import export
from fastnet.folders import load_folder


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
    raise OSError("disk full")


def test_export_refuses_an_existing_folder_and_leaves_nothing_when_it_fails(tmp_path, monkeypatch):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FastnetError, match="already exists"):
        export(tmp_path / "taken")

    monkeypatch.setattr(export_module, "_write_pngs", failing_write)
    with pytest.raises(OSError):
        export(tmp_path / "new", splits=("test",), workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no half-written dataset, no staging folder
