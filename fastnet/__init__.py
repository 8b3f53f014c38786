"""fastnet: a small, fast trainer for multilayer perceptrons (the classic 784-128-10 MNIST network by default).

Numba kernels (fastnet.kernels.numba_backend) beside a plain numpy reference
(fastnet.kernels.numpy_backend) that they are tested against.
"""

import os
from pathlib import Path

__version__ = "0.1.0"

# In a source checkout the kernels live in the top-level kernels/ folder; an
# installed fastnet has them as fastnet/kernels (pyproject.toml maps one onto the
# other). Let fastnet.kernels resolve in both.
if not (Path(__file__).parent / "kernels").is_dir():
    __path__.append(str(Path(__file__).parent.parent))


def _child_environment(**settings: str) -> dict:
    """os.environ plus settings, for a Python child process that must import this very fastnet
    (its parent folder first on PYTHONPATH)."""
    root = str(Path(__file__).resolve().parent.parent)
    return dict(os.environ, **settings, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))


from .api import Model, load  # noqa: E402  (after __path__ is set: api imports fastnet.kernels)

__all__ = ["Model", "load", "__version__"]
