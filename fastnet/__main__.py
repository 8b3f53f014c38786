"""`python -m fastnet` and the `fastnet` command."""

import sys


def run() -> int:
    """The command line, with Ctrl-C while the libraries load (numpy, Numba: a few tenths of a second) ending
    as quietly as Ctrl-C anywhere else."""
    try:
        from fastnet.cli import main
    except KeyboardInterrupt:
        print("fastnet: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
