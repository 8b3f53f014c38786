"""The README stays true: a two-command Quickstart that CI runs verbatim, and a Python example that works."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from pathlib import Path

import numpy as np

from fastnet.parameters import load

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:sh|bash)?\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_quickstart_is_two_commands_and_ci_runs_the_test_one():
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    train, test = commands
    assert "python -m fastnet train" in train
    assert "pytest" in test
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines, f"CI must run the README's test command verbatim: {test!r}"


def shipped_parameters(tmp_path: Path) -> Path:
    """The parameters.npz this checkout was committed with, whose figures the README gives: the Quickstart's
    first command trains a new one over it (on another CPU, to other last digits). The file as it is where
    there is no git history (an unpacked release)."""
    try:
        committed = subprocess.run(["git", "show", "HEAD:parameters.npz"], cwd=ROOT, capture_output=True,
                                   check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return ROOT / "parameters.npz"
    (tmp_path / "shipped.npz").write_bytes(committed)
    return tmp_path / "shipped.npz"


def test_python_api_example_runs_and_prints_what_it_says(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shipped = shipped_parameters(tmp_path)
    code = code.replace('"parameters.npz"', repr(str(shipped)))
    output = io.StringIO()
    monkeypatch.chdir(tmp_path)
    namespace = {}
    with contextlib.redirect_stdout(output):
        exec(compile(code, "README.md", "exec"), namespace)
    printed = output.getvalue().split("\n")
    stored = load(shipped).test_accuracy  # measured when the shipped model was trained
    assert f"# {stored:.4f}" in code, "the README's comment should say the shipped model's accuracy"
    # On a CPU of another vector width the sums round differently: a near-tie among 10,000 digits may flip.
    assert abs(float(printed[0]) - stored) <= 3e-4 and printed[1] == "['7' '2' '1']", printed
    mine, images = namespace["mine"], namespace["images"][:500] / 255  # read back, as its comment says
    again = namespace["MLPClassifier"].from_file(tmp_path / "mine.npz")
    np.testing.assert_array_equal(again.predict_proba(images), mine.predict_proba(images))
