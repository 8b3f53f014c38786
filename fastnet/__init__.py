"""fastnet: a small, fast trainer for multilayer perceptrons (the classic 784-128-10 MNIST network by default).

From Python: fastnet.MLPClassifier, a scikit-learn estimator (estimator.py; needs scikit-learn). The command
line: python -m fastnet (cli.py). Numba kernels (fastnet.kernels.numba_backend) beside a plain numpy reference
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


def __getattr__(name: str):
    """fastnet.MLPClassifier, imported when first asked for: scikit-learn takes a second to import, which the
    command line need not pay; without scikit-learn, a class that says what to install."""
    if name != "MLPClassifier":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from .estimator import MLPClassifier
    except ImportError as error:
        if not (error.name or "").startswith("sklearn"):
            raise
        from .errors import FastnetError

        class MLPClassifier:  # type: ignore[no-redef]
            """Needs scikit-learn: pip install scikit-learn."""

            def __init__(self, *args, **kwargs):
                raise FastnetError("fastnet.MLPClassifier needs scikit-learn: pip install scikit-learn")

            from_file = classmethod(__init__)
    return MLPClassifier


__all__ = ["MLPClassifier", "__version__"]
