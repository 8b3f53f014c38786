"""`python -m fastnet` and the `fastnet` command."""

import gc
import sys
import warnings


def run() -> int:
    """The command line, with Ctrl-C while the libraries load (numpy, Numba: a few tenths of a second) ending
    as quietly as Ctrl-C anywhere else."""
    from fastnet.errors import warning_line

    warnings.formatwarning = warning_line  # already for warnings while the modules load (kernels/jit.py's)
    try:
        from fastnet.cli import main
    except KeyboardInterrupt:
        print("fastnet: interrupted", file=sys.stderr)
        return 130
    status = main()
    # At exit the interpreter's last garbage collections walk every object Numba's compiler and matplotlib
    # left behind (~0.5 s after a training run); frozen, they are skipped. Nothing here needs a finaliser
    # that only a collection would run: files are closed and saved by then.
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(run())
