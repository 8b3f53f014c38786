"""The one build step pyproject.toml cannot express: the trained parameters.npz at the top of the checkout
(where `python -m fastnet train` writes it) installs inside the package, as fastnet/parameters.npz, so that an
installed fastnet predicts with no file of the user's (fastnet.parameters.shipped_path finds either)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    def run(self):
        super().run()
        self.copy_file("parameters.npz", str(Path(self.build_lib, "fastnet", "parameters.npz")))


setup(cmdclass={"build_py": BuildPy})
