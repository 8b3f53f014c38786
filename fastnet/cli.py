"""The command line: `python -m fastnet train | sweep | predict | evaluate | serve | export | fetch | bench`.

Parses flags and calls library functions that notebooks can call too."""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__, _child_environment
from .bench import Workload
from .errors import FastnetError, printable, warning_line
from .files import check_not_among, check_outputs
from .kernels import BACKENDS
from .kernels.common import ACTIVATIONS, PLAIN_FINAL_EPOCHS, TRANSFORMED, WHOLE_PIXEL_SHARE, plain_final_epochs
from .images import IMAGE_SUFFIXES, path_text, shown_path
from .training import (DEFAULT_LEARNING_RATE, DEFAULT_MOMENTUM, DEFAULT_WEIGHT_DECAY, MAX_HIDDEN_LAYERS, OPTIMIZERS,
                       SCHEDULES, EpochStats, TrainConfig)

DRY_RUN_IMAGES = (2048, 1000)  # train and test images used by --dry-run
STARTED = time.perf_counter()  # start-up (imports, loading kernels) is reported apart from the work


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its real default, except where the default is None or False: there the
    help says in words what happens."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "(default:" in action.help:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line ('fastnet train: error: ...'), exit status 2."""

    def __init__(self, *args, **kwargs):  # no abbreviations: --epoch was taken for --epochs without a word
        super().__init__(*args, formatter_class=HelpFormatter, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {printable(message)} (see --help)\n")


def _number(kind, minimum, *, inclusive=True, maximum=None, what=""):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}"
                                             ) from None
        low_ok = value >= minimum if inclusive else value > minimum
        if not low_ok or (maximum is not None and value >= maximum) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what}")
        return value
    return parse


MAX_PIXELS_A_SIDE = 4096


def _widths(text: str) -> tuple[int, ...]:
    """--hidden: one or more comma-separated positive layer widths."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers like 256,128") from None
    if not widths or min(widths) < 1 or len(widths) > MAX_HIDDEN_LAYERS:
        raise argparse.ArgumentTypeError(f"{text} is out of range: 1 to {MAX_HIDDEN_LAYERS} widths, each at least 1")
    return widths


def _image_size(text: str) -> tuple[int, int]:
    """--image-size: N (N x N) or WxH, as (height, width)."""
    parts = text.lower().split("x")
    try:
        width, height = (int(parts[0]), int(parts[0])) if len(parts) == 1 else map(int, parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 32 or 64x48") from None
    if len(parts) > 2 or not (1 <= width <= MAX_PIXELS_A_SIDE and 1 <= height <= MAX_PIXELS_A_SIDE):
        raise argparse.ArgumentTypeError(f"{text} is out of range: 1 to {MAX_PIXELS_A_SIDE} pixels a side")
    return height, width


def _add_backend_flags(parser: argparse.ArgumentParser) -> None:
    cores = os.cpu_count() or 1
    parser.add_argument("--backend", choices=BACKENDS, default="numba", help="compute backend")
    parser.add_argument("--threads", type=_number(int, 1, maximum=cores + 1, what=f"must be 1 to {cores}, the cores"),
                        help=f"threads for the numba backend, or the BLAS library's for numpy (default: all {cores} "
                             "cores, or NUMBA_NUM_THREADS)")


PARAMETERS_HELP = "trained parameters to use (default: ./parameters.npz if there is one, else the model fastnet ships)"


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="mnist",
                        help="'mnist' (the shipped files), a folder with the four MNIST IDX files (see fetch), or an "
                             "image folder: DIR/train/<class>/ and DIR/test/<class>/, or DIR/<class>/ with --val-split")
    parser.add_argument("--val-split", type=_number(float, 0.0, inclusive=False, maximum=1.0, what="must be in (0, 1)"),
                        help="share of a DIR/<class>/ dataset held out as its test set")
    parser.add_argument("--image-size", type=_image_size, metavar="N|WxH",
                        help="the size image folders are loaded at, e.g. 32 or 64x48 (default: 28x28)")
    parser.add_argument("--color", action="store_true",
                        help="load image folders in colour (RGB, 3 values a pixel), not grayscale")
    parser.add_argument("--strict", action="store_true", help="an unreadable image in --data is an error, not a skip")


def _add_sweep_parser(commands) -> None:
    from .sweep import RANGES, SETTINGS

    sweep = commands.add_parser(
        "sweep", help="train many settings (on Dask), score each on a validation split, keep the best",
        description="Each setting flag takes one value or a comma-separated list (--lr 0.02,0.05,0.1; hidden layers "
                    "joined by '-': --hidden 128,256-128); with --random N, also a range LOW:HIGH, sampled "
                    "log-uniformly. Settings not given keep train's defaults. Needs Dask: "
                    'pip install "dask[distributed]".')
    for flag in SETTINGS:
        sweep.add_argument(f"--{flag}", metavar="V[,V...]" + ("|LOW:HIGH" if flag in RANGES else ""),
                           help=f"train's --{flag} values")
    sweep.add_argument("--config", type=Path, metavar="TOML",
                       help="the search space (a [space] table) and options from a TOML file; flags override it")
    sweep.add_argument("--random", type=_number(int, 1, what="must be at least 1"), metavar="N",
                       help="N random points of the space instead of its whole grid")
    # Defaults (OPTIONS) are applied after the TOML file's options, hence None here and written in the help.
    sweep.add_argument("--random-seed", type=_number(int, 0, what="must be 0 or more"),
                       help="seed of the random points and of the validation split (default: 0)")
    sweep.add_argument("--validation", type=_number(float, 0.0, inclusive=False, maximum=1.0,
                                                    what="must be in (0, 1)"),
                       help="share of the training images held out to score each trial (default: 0.1)")
    sweep.add_argument("--out", type=Path,
                       help="folder for results.csv, results.png and the best parameters.npz (default: sweep)")
    sweep.add_argument("--scheduler", metavar="ADDRESS",
                       help="a running Dask scheduler (tcp://HOST:8786); default: a local cluster")
    sweep.add_argument("--workers", type=_number(int, 1, what="must be at least 1"),
                       help="worker processes of the local cluster (default: cores / --threads)")
    sweep.add_argument("--threads", type=_number(int, 1, what="must be at least 1"),
                       help="threads each trial trains with (default: 1)")
    _add_data_flags(sweep)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fastnet", description="A small, fast trainer for multilayer perceptrons, on MNIST, "
                    "image folders or features. Start with: python -m fastnet train")
    parser.add_argument("--version", action="version", version=f"fastnet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    defaults = TrainConfig()

    train = commands.add_parser("train", help="train (on the shipped MNIST by default); save parameters and plot")
    train.add_argument("--epochs", type=_number(int, 1, what="must be at least 1"), default=defaults.epochs,
                       help="passes over the training images")
    train.add_argument("--batch-size", type=_number(int, 1, what="must be at least 1"), default=defaults.batch_size,
                       help="images per step; 1 is the original's per-image training")
    train.add_argument("--hidden", type=_widths, default=defaults.hidden, metavar="N[,N...]",
                       help="units of each hidden layer, e.g. 256,128 for two (default: "
                            f"{','.join(map(str, defaults.hidden))})")
    train.add_argument("--activation", choices=ACTIVATIONS, default=defaults.activation,
                       help="activation of the hidden layers")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer,
                       help="sgd (with --momentum, --nesterov) or adam")
    train.add_argument("--lr", type=_number(float, 0.0, inclusive=False, what="must be above 0"),
                       help="base learning rate (default: "
                            + ", ".join(f"{rate:g} for {name}" for name, rate in DEFAULT_LEARNING_RATE.items())
                            + "; sgd's scaled down where input rows are longer than MNIST's, such as large "
                              "colour images)")
    train.add_argument("--momentum", type=_number(float, 0.0, maximum=1.0, what="must be in [0, 1)"),
                       help=f"SGD momentum, 0 for plain SGD (default: {DEFAULT_MOMENTUM['sgd']:g})")
    train.add_argument("--nesterov", action=argparse.BooleanOptionalAction,
                       help="Nesterov momentum (default: on with sgd and a momentum above 0)")
    train.add_argument("--weight-decay", type=_number(float, 0.0, what="must be 0 or more"),
                       help="weight decay on the weights, not the biases: L2 for sgd, decoupled (AdamW) for adam "
                            "(default: " + ", ".join(f"{decay:g} for {name}"
                                                     for name, decay in DEFAULT_WEIGHT_DECAY.items()) + ")")
    train.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                       help="learning rate over the epochs: cosine decay towards 0, or constant")
    train.add_argument("--seed", type=_number(int, 0, what="must be 0 or more"), default=defaults.seed,
                       help="seed for the initial weights, the shuffles and --val-split")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=defaults.augment,
                       help=f"each epoch, train on {100 * TRANSFORMED:.0f}%% of the images (drawn anew) through a "
                            "new random small rotation, scale, shear and shift (or, for "
                            f"{100 * WHOLE_PIXEL_SHARE:.0f}%% of them, a shift by whole pixels), and on the others "
                            "as they are; "
                            f"in the final {100 * PLAIN_FINAL_EPOCHS:.0f}%% of the epochs "
                            f"({plain_final_epochs(defaults.epochs)} of {defaults.epochs}), on all as they are "
                            "(default: on for images that are mostly blank, as the shipped MNIST digits; off for "
                            "other data)")
    _add_backend_flags(train)
    _add_data_flags(train)
    train.add_argument("--out", type=Path, help="where to save the parameters (default: parameters.npz; with "
                                                "--dry-run, nowhere)")
    train.add_argument("--plot", type=Path, help="where to save the error plot PNG (default: error.png; with "
                                                 "--dry-run, nowhere)")
    train.add_argument("--checkpoint", type=Path,
                       help="where to keep the checkpoint, written after every epoch and on Ctrl-C, removed at the "
                            "end (default: beside --out, e.g. parameters.checkpoint.npz)")
    train.add_argument("--resume", type=Path, metavar="CHECKPOINT",
                       help="continue the training saved in CHECKPOINT, to the same weights as an unbroken run "
                            "(its settings are used: training flags are refused)")
    train.add_argument("--no-training", action="store_true",
                       help="do not train: report the accuracy of the stored --parameters, as the original did")
    train.add_argument("--parameters", type=Path, help=f"with --no-training: the {PARAMETERS_HELP[:1].lower()}"
                                                       f"{PARAMETERS_HELP[1:]}")
    train.add_argument("--dry-run", action="store_true",
                       help=f"a quick check: 1 epoch on {DRY_RUN_IMAGES[0]} images; saves only where --out/--plot say")

    bench = commands.add_parser("bench", help="time training and prediction: numba vs numpy (and peers)")
    cores = os.cpu_count() or 1
    bench.add_argument("--batch-sizes", type=_number(int, 1, maximum=60_001, what="must be 1 to 60,000"), nargs="+",
                       default=[1, 32, 128], metavar="N", help="batch sizes to time")
    bench.add_argument("--threads", type=_number(int, 1, maximum=cores + 1, what=f"must be 1 to {cores}"),
                       nargs="+", default=sorted({1, cores}), metavar="N",
                       help="numba thread counts to time; numpy and peers use the largest")
    bench.add_argument("--epochs", type=_number(int, 1, what="must be at least 1"), default=1,
                       help="epochs per measurement (the fastest is reported)")
    bench.add_argument("--rounds", type=_number(int, 1, maximum=101, what="must be 1 to 100"), default=1,
                       metavar="N", help="measure every system N times, in turn, and report the median round and "
                                         "the median of the rounds' speed ratios (steadier on a shared machine)")
    bench.add_argument("--peers", action="store_true",
                       help="also time PyTorch, scikit-learn and JAX where installed (optional extras)")
    bench.add_argument("--hidden", type=_widths, default=defaults.hidden, metavar="N[,N...]",
                       help=f"units of each hidden layer, as for train (default: {','.join(map(str, defaults.hidden))})")
    bench.add_argument("--activation", choices=ACTIVATIONS, default=Workload.activation,  # the seed network's
                       help="activation of the hidden layers")
    bench.add_argument("--optimizer", choices=OPTIMIZERS, default=Workload.optimizer,
                       help="plain sgd at min(1, 0.05 x batch), or adam at 0.001")
    bench.add_argument("--dense", type=_number(int, 0, maximum=100_001, what="must be 0 to 100000"), default=0,
                       metavar="N", help="train on N synthetic dense float features (10,000 rows) instead of MNIST")
    bench.add_argument("--augment", action="store_true",
                       help="also time fastnet's epochs with augmentation (numba-augment), on MNIST")
    bench.add_argument("--busy", type=_number(int, 0, maximum=65, what="must be 0 to 64"), default=0, metavar="N",
                       help="measure with N competing processes each keeping a core busy, as on a shared machine")
    bench.add_argument("--sklearn", action="store_true",
                       help="instead: fastnet.MLPClassifier beside scikit-learn's on digits, breast cancer and MNIST "
                            "(accuracy and fit time; needs scikit-learn)")
    bench.add_argument("--dry-run", action="store_true",
                       help="a quick check: compile into an empty cache once, not twice, and time as asked "
                            "(with --sklearn: one seed, 5,000 MNIST images)")
    bench.add_argument("--json", type=Path, help="write the records as a JSON list")
    bench.add_argument("--plot", type=Path, help="draw seconds per epoch as a PNG")

    _add_sweep_parser(commands)

    serve = commands.add_parser("serve", help="a page to draw digits on and watch the network read them")
    serve.add_argument("--parameters", type=Path, help=PARAMETERS_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    serve.add_argument("--port", type=_number(int, 0, maximum=65536, what="must be 0 to 65535"), default=8000,
                       help="port to listen on (0: any free one)")
    _add_backend_flags(serve)

    fetch = commands.add_parser("fetch", help="download the MNIST IDX files from public mirrors, verified")
    fetch.add_argument("folder", type=Path, nargs="?", default=Path("mnist"), metavar="DIR",
                       help="where to put them; then: train --data DIR")
    fetch.add_argument("--mirror", action="append", metavar="URL", help="a mirror to try first (repeatable)")
    fetch.add_argument("--no-default-mirrors", action="store_true", help="try only the --mirror URLs given")
    fetch.add_argument("--timeout", type=_number(float, 0.0, inclusive=False, maximum=86400.0,
                                                 what="must be above 0 and under a day"), default=300.0,
                       help="seconds one file's whole download from a mirror may take before the next mirror is "
                            "tried")

    export = commands.add_parser("export", help="write the shipped MNIST as PNG folders DIR/{train,test}/<label>/")
    export.add_argument("folder", type=Path, metavar="DIR", help="a new folder to create")
    export.add_argument("--split", choices=("train", "test", "both"), default="both", help="which images to write")

    evaluate = commands.add_parser("evaluate", help="accuracy of stored parameters on the MNIST test set")
    evaluate.add_argument("--parameters", type=Path, help=PARAMETERS_HELP)
    evaluate.add_argument("--confusion", type=Path, metavar="PNG", help="also draw the confusion matrix")
    _add_backend_flags(evaluate)

    predict = commands.add_parser("predict", help="classify image files and folders (labelled folders are scored)")
    predict.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="image files and folders (recursive)")
    predict.add_argument("--parameters", type=Path, help=PARAMETERS_HELP)
    predict.add_argument("--format", choices=("table", "csv", "json"), default="table", help="rows as")
    predict.add_argument("--top", type=_number(int, 1, what="must be at least 1"), default=1,
                         help="show the K most probable classes")
    predict.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                         help="dark ink on light paper is inverted to MNIST's light on dark (auto: detect it)")
    predict.add_argument("--confusion", type=Path, metavar="PNG", help="draw the confusion matrix of labelled images")
    _add_backend_flags(predict)
    return parser


class Stopped(KeyboardInterrupt):
    """A quitting signal (SIGTERM, SIGHUP) turned into an exception, as Python does SIGINT into
    KeyboardInterrupt: the work in progress unwinds through its clean-up code."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def _quit_now(signum, frame):
    """SIGQUIT, or a second stop signal: quit at once, leaving the files on disk complete and no temporary file."""
    from .files import remove_temporaries

    remove_temporaries()
    os._exit(128 + signum)


@contextlib.contextmanager
def _signal_handlers(handlers: dict[str, object]):
    """Install handlers (by signal name, those the platform has) for the duration, from the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {name: signal.signal(getattr(signal, name), handler) for name, handler in handlers.items()
                if hasattr(signal, name)}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


# SIGTERM and SIGHUP unwind like Ctrl-C (clean-up runs, exit 128 + signal); SIGQUIT quits at once, cleanly.
# Training replaces these with a stop at the next batch boundary (_stop_on_signals).
QUITTING = {"SIGTERM": _raise_stopped, "SIGHUP": _raise_stopped, "SIGQUIT": _quit_now}


def _quit_if_interrupted(unraisable) -> None:
    """sys.unraisablehook: a Ctrl-C or stop signal that arrived inside a callback from C (Numba's compiler calls
    back into Python while it loads the kernels) is swallowed there, and the work would go on: quit at once
    instead, as for a second signal. Anything else is reported as Python would."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _say("fastnet: interrupted")
        _quit_now(getattr(unraisable.exc_value, "signum", signal.SIGINT), None)
    sys.__unraisablehook__(unraisable)


# train's flags that set how a run trains: a resumed run takes them from its checkpoint
TRAINING_FLAGS = ("--epochs", "--batch-size", "--hidden", "--activation", "--optimizer", "--lr", "--momentum",
                  "--nesterov", "--no-nesterov", "--weight-decay", "--schedule", "--seed", "--augment", "--no-augment",
                  "--backend")


def train_flag_problem(args: argparse.Namespace, argv: list[str]) -> str | None:
    """What is wrong with train's flags together, in words (None if nothing): flags that contradict each other,
    and flags given that the run would ignore."""
    given = [token.split("=", 1)[0] for token in argv if token.startswith("--")]  # (no abbreviations: Parser)

    def ignored(flags) -> str:
        return ", ".join(dict.fromkeys(flag for flag in given if flag in flags))

    if args.no_training:
        unused = ignored((*TRAINING_FLAGS[:-1], "--out", "--plot", "--checkpoint", "--resume", "--dry-run",
                          "--val-split", "--image-size", "--color", "--strict"))
        if unused:
            return f"--no-training only scores --parameters: {unused} would be ignored"
    elif args.parameters is not None:
        return "--parameters is read only with --no-training; --out says where a run saves its parameters"
    elif args.resume is not None:
        unused = ignored((*TRAINING_FLAGS, "--checkpoint"))
        if unused:
            return (f"--resume continues with its checkpoint's settings: {unused} would be ignored (start a new "
                    "run to change them)")
    if args.optimizer == "adam" and args.momentum:
        return "--momentum is SGD's: with --optimizer adam leave it out (Adam's first moment has its own, 0.9)"
    if args.nesterov and (args.optimizer != "sgd" or args.momentum == 0):
        return "--nesterov needs --optimizer sgd and a --momentum above 0"
    if args.resume is None and not args.no_training:
        try:
            train_config(args)
        except FastnetError as error:  # "setting weight_decay=...: ..." is the flag --weight-decay's fault
            setting, _, rest = str(error).removeprefix("setting ").partition("=")
            flag = "lr" if setting == "learning_rate" else setting.replace("_", "-")  # TrainConfig's names
            return f"--{flag} {rest}" if setting.isidentifier() else str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":
        problem = train_flag_problem(args, sys.argv[1:] if argv is None else list(argv))
        if problem:
            parser.exit(2, f"fastnet train: error: {printable(problem)} (see --help)\n")
    warnings.formatwarning = warning_line
    previous_hook, sys.unraisablehook = sys.unraisablehook, _quit_if_interrupted
    try:
        with _signal_handlers(QUITTING):
            return _run(args)
    finally:
        sys.unraisablehook = previous_hook


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "bench":
            return bench(args)
        if args.command == "sweep":
            return sweep(args)
        if args.command == "fetch":
            from .fetch import MIRRORS, fetch

            mirrors = list(args.mirror or []) + ([] if args.no_default_mirrors else list(MIRRORS))
            if not mirrors:
                raise FastnetError("no mirrors to try: give --mirror URL, or drop --no-default-mirrors")
            fetch(args.folder, mirrors, args.timeout)
            return 0
        if args.command == "export":
            from .export import export

            splits = ("train", "test") if args.split == "both" else (args.split,)
            started = time.perf_counter()
            count = export(args.folder, splits)
            print(f"wrote {count:,} PNG images to {shown_path(args.folder)} in {time.perf_counter() - started:.1f} s")
            return 0
        _set_threads(args.threads, args.backend)
        if getattr(args, "parameters", None) is None and (args.command != "train" or args.no_training):
            from .parameters import default_path

            args.parameters = default_path()
        if args.command == "predict":
            return predict(args)
        if args.command == "serve":
            return serve(args)
        if args.command == "train" and args.no_training and args.data != "mnist":
            raise FastnetError(f"--no-training scores the parameters on MNIST's test set, not on --data {args.data}; "
                               f"to score them on a labelled folder: python -m fastnet predict FOLDER --parameters "
                               f"{args.parameters}")
        if args.command == "evaluate" or args.no_training:
            return evaluate(args.parameters, args.backend, getattr(args, "confusion", None))
        return train(args)
    except FastnetError as error:
        print(f"fastnet: error: {printable(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:
        print("fastnet: interrupted", file=sys.stderr)
        return 128 + getattr(interrupt, "signum", signal.SIGINT)
    except BrokenPipeError:  # the reader went away (`fastnet predict ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _set_threads(threads: int | None, backend: str) -> None:
    """--threads: Numba's worker threads, or for the numpy backend the BLAS library's (OpenBLAS, MKL), which
    otherwise start one per core whatever the flag says: on a busy machine those fight for the cores."""
    if threads is None:
        return
    if backend == "numba":
        import numba

        numba.set_num_threads(threads)
    else:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)


def evaluate(parameters_path: Path, backend_name: str, confusion: Path | None = None) -> int:
    from .trained import load
    from .predict import evaluate_on_mnist, plot_confusion, score_report

    check_outputs({"--confusion": confusion}, {"--parameters": parameters_path})
    model = load(parameters_path, backend_name)
    matrix = evaluate_on_mnist(model, parameters_path)
    correct, total = int(np.trace(matrix)), int(matrix.sum())
    print(f"{shown_path(parameters_path)}: {model.network.describe()} network; "
          f"MNIST test accuracy {100 * correct / total:.2f}% ({correct}/{total})")
    print(score_report(matrix, model.class_names).split("\n", 1)[1])
    if confusion is not None:
        plot_confusion(matrix, model.class_names, confusion)
        print(f"confusion matrix: {shown_path(confusion)}")
    return 0


def serve(args: argparse.Namespace) -> int:
    from .trained import load
    from .serve import make_server

    try:
        server = make_server(load(args.parameters, args.backend), args.host, args.port)
    except OSError as error:
        what = ("try another --port" if error.errno in (errno.EADDRINUSE, errno.EACCES) else
                "give --host an address of this machine (127.0.0.1: this machine only; 0.0.0.0 or :: for all)")
        raise FastnetError(f"cannot listen on {args.host} port {args.port} ({error.strerror or error}); {what}"
                           ) from None
    host, port = server.server_address[:2]
    print(f"fastnet serve: {shown_path(args.parameters)}; open http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("fastnet serve: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def predict(args: argparse.Namespace) -> int:
    from .trained import load
    from .images import decode_all, plural, skip_line
    from .predict import (Prediction, confusion_matrix, find_images, plot_confusion, score_report, true_labels,
                          write_rows)

    check_outputs({"--confusion": args.confusion}, {"--parameters": args.parameters,
                                                    **{f"input {path}": path for path in args.paths}})
    check_not_among({"--confusion": args.confusion}, {"input": path for path in args.paths}, IMAGE_SUFFIXES)
    model = load(args.parameters, args.backend)
    model.invert = args.invert
    prep = model.prep()
    model.predict_proba(np.zeros((1, prep.row_size), np.uint8))  # load the kernels now: start-up is not prediction
    startup = time.perf_counter() - STARTED
    started = time.perf_counter()
    paths, skipped = find_images(args.paths)
    inputs = ", ".join(map(path_text, args.paths))
    if not paths and not skipped:
        raise FastnetError(f"no images found in {inputs} "
                           f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))} files, hidden ones skipped)")
    rows, failures = decode_all(paths, prep)
    failed = {path for path, _ in failures}
    skipped += failures
    keep = [i for i, path in enumerate(paths) if path not in failed]
    probabilities = model.predict_proba(rows[keep])
    labels = true_labels([paths[i] for i in keep], model.class_names)
    predictions = [Prediction(paths[i], p, label) for i, p, label in zip(keep, probabilities, labels)]
    if predictions:
        write_rows(predictions, model.class_names, args.format, min(args.top, len(model.class_names)))
        sys.stdout.flush()
    seconds = time.perf_counter() - started
    for path, reason in skipped:
        print(skip_line(path, reason), file=sys.stderr)
    if not predictions:  # nothing to show is a failure, even though each skip alone is not
        raise FastnetError(f"no image in {inputs} could be read: {len(skipped):,} skipped (listed above)")
    summary = sys.stdout if args.format == "table" else sys.stderr  # keep csv and json machine-readable
    print(f"{plural(len(predictions), 'image')} in {seconds:.2f} s ({len(predictions) / max(seconds, 1e-9):,.0f} "
          f"images/s, first file opened to last row written; start-up {startup:.2f} s before that)"
          + (f"; {len(skipped):,} unreadable, skipped" if skipped else "")
          + f"; parameters {shown_path(args.parameters)}", file=summary)
    labelled = [(model.class_names.index(p.label), int(p.probabilities.argmax())) for p in predictions if p.label]
    if labelled:
        matrix = confusion_matrix(*zip(*labelled), len(model.class_names))
        print(score_report(matrix, model.class_names), file=summary)
        if args.confusion is not None:
            plot_confusion(matrix, model.class_names, args.confusion)
            print(f"confusion matrix: {shown_path(args.confusion)}", file=summary)
    return 0


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The settings a `train` run uses, from its flags."""
    return TrainConfig(epochs=1 if args.dry_run else args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                       momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
                       schedule=args.schedule, hidden=args.hidden, activation=args.activation,
                       optimizer=args.optimizer, seed=args.seed, backend=args.backend, augment=args.augment)


def _resume_command(checkpoint: Path, args: argparse.Namespace, *more: str) -> str:
    """The command that resumes a run from its checkpoint, with the flags that chose its training data (a
    resumed run must be given them again) and more, quoted for a shell (paths may hold spaces)."""
    import shlex

    data = ((["--data", str(args.data)] if args.data != "mnist" else [])
            + (["--val-split", str(args.val_split)] if args.val_split is not None else [])
            + (["--image-size", f"{args.image_size[1]}x{args.image_size[0]}"] if args.image_size else [])
            + (["--color"] if args.color else []) + (["--strict"] if args.strict else [])
            + (["--dry-run"] if args.dry_run else []))
    return shlex.join(["python", "-m", "fastnet", "train", "--resume", str(checkpoint), *data, *more])


def _dry_run_part(images_and_labels: tuple, count: int, seed: int) -> tuple:
    """count of the images (and their labels), drawn with seed and kept in their order: not the first count,
    which in a folder dataset, stored class by class, would be one or two classes."""
    images, labels = images_and_labels
    if len(images) <= count:
        return images, labels
    chosen = np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))
    return images[chosen], labels[chosen]


def train(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .datasets import check_data_options, load_data
    from .images import plural
    from .kernels import get_backend
    from .kernels.common import input_scale
    from .parameters import Parameters, save
    from .plot import plot_history
    from .kernels.threads import thread_count
    from .training import (Interrupted, check_augmentable, check_data, check_size, train as run_training, warm_up,
                           with_augment, with_learning_rate)

    resume = load_checkpoint(args.resume) if args.resume else None
    config = TrainConfig(**resume.config) if resume is not None else train_config(args)
    if config.backend != args.backend:  # a resumed run's, from its checkpoint: --threads is for that one
        _set_threads(args.threads, config.backend)
    out = args.out or (None if args.dry_run else Path("parameters.npz"))
    plot = args.plot or (None if args.dry_run else Path("error.png"))
    outputs = (["--out", str(out)] if out else []) + (["--plot", str(plot)] if plot else [])  # for resuming
    checkpoint = args.resume or args.checkpoint or (out.with_name(f"{out.stem}.checkpoint.npz") if out else None)
    check_outputs({"--out": out, "--plot": plot, "--checkpoint": checkpoint}, _dataset_files(args.data))
    if args.data != "mnist":
        check_not_among({"--plot": plot}, {"--data": Path(args.data)}, IMAGE_SUFFIXES)
    if resume is None and checkpoint is not None and checkpoint.exists():
        raise FastnetError(f"--checkpoint {checkpoint} already exists (an interrupted run's?): continue that run with "
                           f"--resume {checkpoint}, or delete it, or give another --checkpoint")

    if args.image_size and not check_data_options(args.data, args.val_split, args.image_size, args.color):
        height, width = args.image_size  # the network these images make (two classes at least), before decoding
        check_size(config, (height * width * (3 if args.color else 1), *config.hidden, 2), None, _flag_name,
                   "choose a smaller --image-size or fewer hidden units")
    started = time.perf_counter()
    dataset = load_data(args.data, args.val_split, args.strict, config.seed, args.image_size, args.color)
    train_set, test_set, classes = dataset.train, dataset.test, dataset.classes
    if args.dry_run:
        train_set, test_set = (_dry_run_part(part, count, config.seed)
                               for part, count in zip((train_set, test_set), DRY_RUN_IMAGES))
    height, width, channels = dataset.input_shape  # shown as --image-size takes it: width x height
    shape = f"{width}x{height}" + (" colour" if channels == 3 else "")
    print(f"{shown_path(args.data)}: {len(train_set[0]):,} training and {len(test_set[0]):,} test images ({shape}), "
          f"{len(classes)} classes (loaded in {time.perf_counter() - started:.2f} s)")
    check_data(*train_set, len(classes))
    check_data(*test_set, len(classes), "test")
    sizes = (train_set[0].shape[1], *config.hidden, len(classes))
    check_size(config, sizes, len(train_set[0]),
               (lambda name: f"the checkpoint's {name}") if resume is not None else _flag_name)
    if resume is not None and resume.network.layer_sizes != sizes:
        raise FastnetError(f"{args.resume} holds a {'-'.join(map(str, resume.network.layer_sizes))} network, but its "
                           f"settings and {args.data} make {'-'.join(map(str, sizes))}: resume with the --data "
                           "(and --image-size, --color) it was trained on")
    backend = get_backend(config.backend)
    threads = f", {thread_count()} threads" if config.backend == "numba" else ""
    config = with_learning_rate(with_augment(config, train_set[0], dataset.input_shape), train_set[0])
    check_augmentable(config, train_set[0], dataset.input_shape)
    compile_seconds = warm_up(backend, config, *train_set, n_classes=len(classes),
                              child_environment=_child_environment(), input_shape=dataset.input_shape)
    print(f"backend {config.backend}{threads}: kernels compiled or loaded from cache in {compile_seconds:.2f} s")
    resuming = f"; resuming epoch {resume.epoch + 1} at batch {resume.next_batch + 1}" if resume else ""
    description = f"{'-'.join(map(str, sizes))} {config.activation}"
    print(f"training {description}: {plural(config.epochs, 'epoch')}, batch {config.batch_size}, {config.describe()}, "
          f"seed {config.seed}{', augmented' if config.augment else ''}{resuming}")

    def report(s):
        print(f"epoch {s.epoch:3d}/{config.epochs}  lr {s.learning_rate:.4f}  loss {s.loss:.4f}  "
              f"train {100 * s.train_accuracy:6.2f}%  test {100 * s.test_accuracy:6.2f}%  "
              f"{s.seconds:6.2f} s  {s.images_per_second:11,.0f} img/s", flush=True)

    try:
        with _stop_on_signals() as stop:
            network, history = run_training(config, train_set, test_set, len(classes), report, resume=resume,
                                            checkpoint_path=checkpoint, stop=stop, input_shape=dataset.input_shape)
        _check_learned(history[-1], train_set[1], test_set[1], len(classes),
                       config.epochs * -(-len(train_set[1]) // config.batch_size))
    except FastnetError:
        if resume is None and checkpoint is not None:
            checkpoint.unlink(missing_ok=True)  # this run's own, and it led nowhere: no leftover to refuse next time
        raise
    except Interrupted as interrupted:
        if interrupted.checkpoint_path is None:
            print(f"fastnet: interrupted ({interrupted}); nothing saved", file=sys.stderr)
        else:
            print(f"fastnet: interrupted ({interrupted}); checkpoint saved to {interrupted.checkpoint_path}\n"
                  f"resume with: {_resume_command(interrupted.checkpoint_path, args, *outputs)}", file=sys.stderr)
        return 128 + int(stop[1])
    final = history[-1].test_accuracy
    try:
        if out is not None:
            save(out, Parameters(network, classes, dict(config.as_dict(), data=str(args.data)), final,
                                 dataset.preprocessing, dataset.input_shape, input_scale(train_set[0].dtype)))
        if plot is not None:
            plot_history(history, plot, f"fastnet {description}, batch {config.batch_size}")
    except FastnetError as error:  # a full disk, say: the trained network is in the checkpoint, not lost
        if checkpoint is None or not checkpoint.exists():
            raise
        raise FastnetError(f"{error}; the trained network is kept in {checkpoint}: once there is room, "
                           f"{_resume_command(checkpoint, args, *outputs)} saves it") from None
    except KeyboardInterrupt as interrupt:  # Ctrl-C (or SIGTERM, SIGHUP) after the last epoch, while saving
        if checkpoint is None or not checkpoint.exists():
            raise
        print(f"fastnet: interrupted while saving; the trained network is kept in {checkpoint}: "
              f"{_resume_command(checkpoint, args, *outputs)} saves it", file=sys.stderr)
        return 128 + getattr(interrupt, "signum", signal.SIGINT)
    kept = ""
    if checkpoint is not None and (out is not None or resume is None):
        checkpoint.unlink(missing_ok=True)  # the run is complete: --out holds its result
    elif checkpoint is not None:  # a resumed run that saved no parameters (--dry-run): its checkpoint is all there is
        kept = f"; the trained network is kept in {shown_path(checkpoint)} (resume it with --out FILE to save it)"
    saved = ", ".join(f"{what} {shown_path(path)}" for what, path in (("saved", out), ("plot", plot))
                      if path is not None)
    print(f"test accuracy {100 * final:.2f}% after {plural(config.epochs, 'epoch')}; "
          f"{time.perf_counter() - started:.1f} s in all" + (f"; {saved}" if saved else "") + kept)
    return 0


def bench(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from . import bench as benchmarks

    check_outputs({"--json": args.json, "--plot": args.plot})
    if args.sklearn:
        if args.plot is not None:
            raise FastnetError("bench --sklearn draws no plot; write its results with --json")
        if args.rounds > 1:
            raise FastnetError("bench --sklearn takes no --rounds: it repeats each small dataset over seeds of its own")
        return bench_sklearn(args)
    if args.augment and args.dense:
        raise FastnetError("bench --augment transforms MNIST's images; --dense features have none")
    workload = benchmarks.Workload(args.hidden, args.activation, args.optimizer, args.dense, args.augment)
    print(f"fastnet bench: {workload.describe()}; {args.epochs} epoch(s) per measurement, "
          + (f"{args.rounds} rounds of every system in turn, " if args.rounds > 1 else "")
          + ("adam at lr 0.001" if args.optimizer == "adam" else "plain SGD at lr min(1, 0.05 x batch)")
          + f", each in a fresh process; {os.cpu_count()} cores"
          + (f"; {args.busy} competing busy process(es) during the epochs" if args.busy else ""))
    repeats = 1 if args.dry_run else 2
    start = benchmarks.startup_seconds(workload, repeats)
    print(f"numba kernels (best of {repeats} each): compile into an empty cache {start['compile_empty_cache']:.2f} s; "
          f"from a warm cache load {start['load_warm_cache']:.2f} s, start-up in all {start['startup_warm_cache']:.2f} s")
    for threads in args.threads:
        rate = benchmarks.predict_images_per_second(threads)
        print(f"numba prediction over the 10,000 test images, {threads} thread(s): {rate:,.0f} images/s")
    print()
    measured = collections.Counter()

    def report(record) -> None:  # with rounds, a line per measurement: a long run shows its progress
        system = record.backend, record.threads, record.batch_size
        measured[system] += 1
        print(f"round {measured[system]}/{args.rounds}: {record.backend}, batch {record.batch_size}, "
              f"{record.threads} thread(s): {record.seconds_per_epoch:.3f} s an epoch", flush=True)

    records = benchmarks.run(args.batch_sizes, args.threads, args.epochs, args.peers,
                             report=report if args.rounds > 1 else lambda record: None, busy=args.busy,
                             workload=workload, rounds=args.rounds)
    if args.rounds > 1:
        print()
    print(benchmarks.format_table(records))
    if args.rounds > 1:
        print(f"\nthe median of {args.rounds} rounds; speed ratios, round by round:")
        print(benchmarks.format_ratios(records))
    if args.json is not None:
        _write_json(args.json, [asdict(r) for r in records])
    if args.plot is not None:
        benchmarks.plot(records, args.plot)
    return 0


def _write_json(path: Path, rows: list[dict]) -> None:
    """bench's --json: the rows as a JSON list, written atomically."""
    import json

    from .files import write_atomically

    text = json.dumps(rows, indent=1).encode()
    write_atomically(path, lambda file: file.write(text))


def bench_sklearn(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    try:
        import sklearn  # noqa: F401

        from . import bench_sklearn as versus
    except ImportError:
        raise FastnetError("bench --sklearn needs scikit-learn: pip install scikit-learn") from None
    seeds = 1 if args.dry_run else 5
    print(f"fastnet bench --sklearn: fastnet.MLPClassifier and scikit-learn's, same data and settings; "
          f"{os.cpu_count()} cores")
    results = versus.compare(seeds, 5000 if args.dry_run else None)
    print(versus.format_table(results, seeds))
    if args.json is not None:
        _write_json(args.json, [asdict(r) for r in results])
    return 0


def sweep(args: argparse.Namespace) -> int:
    import shlex

    from . import sweep as sweeps

    texts, options = sweeps.read_toml(args.config) if args.config else ({}, {})
    texts.update({flag: getattr(args, flag.replace("-", "_")) for flag in sweeps.SETTINGS
                  if getattr(args, flag.replace("-", "_")) is not None})
    if not texts:
        raise FastnetError("sweep: give the settings to try, e.g. --lr 0.02,0.05,0.1 --hidden 64,128 (see --help)")
    unknown = sorted(set(options) - set(sweeps.OPTIONS))
    if unknown:
        raise FastnetError(f"{args.config}: unknown options {unknown}; the options are {', '.join(sweeps.OPTIONS)}")
    chosen = {name: getattr(args, name) if getattr(args, name) is not None else options.get(name, default)
              for name, default in sweeps.OPTIONS.items()}
    sweeps.check_options(chosen)
    space = sweeps.Space.parse(texts)
    trials, left_out = space.trials(chosen["random"], chosen["random_seed"])
    if left_out:
        print(f"sweep: {len(left_out)} combination(s) left out, e.g. {left_out[0]}")
    dataset_files = _dataset_files(args.data)  # (checks --data) before --out is made
    if Path(chosen["out"]).exists() and not Path(chosen["out"]).is_dir():
        raise FastnetError(f"--out {chosen['out']}: is a file, not a folder; give a folder for the sweep's results")
    try:
        Path(chosen["out"]).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FastnetError(f"--out {chosen['out']}: cannot make this folder ({error.strerror or error})") from None
    check_outputs({f"--out {chosen['out']}: its {name}": Path(chosen["out"]) / name
                   for name in ("results.csv", "results.png", "parameters.npz")}, dataset_files)
    plan = sweeps.Plan(space, trials, args.data, args.val_split, args.image_size, args.color, args.strict,
                       chosen["validation"], chosen["random_seed"], Path(chosen["out"]), chosen["scheduler"],
                       chosen["workers"], chosen["threads"], shlex.join(["python", "-m", "fastnet", *sys.argv[1:]]))
    return sweeps.run(plan)


def _dataset_files(data: str) -> dict[str, Path]:
    """The files training reads or writes inside --data (its caches), which no output may be."""
    from .datasets import check_data_argument
    from .folders import CACHE_NAME

    check_data_argument(data)
    if data == "mnist":
        return {}
    return {f"the dataset cache {Path(data, *sub, CACHE_NAME)}": Path(data, *sub, CACHE_NAME)
            for sub in ((), ("train",), ("test",))}


def _check_learned(last: EpochStats, train_labels: np.ndarray, test_labels: np.ndarray, n_classes: int,
                   steps: int) -> None:
    """A run that ends no better than always guessing the commonest class learned nothing: say so, rather than
    replace whatever parameters file is there. Judged on the test set when it has 100 images or more (enough to
    tell), else on the training images of the last epoch. After fewer than MIN_STEPS steps, with the loss
    still near guessing's (ln K), the advice is to train longer rather than slower."""
    if len(test_labels) >= 100:
        labels, accuracy, where = test_labels, last.test_accuracy, "test"
    else:
        labels, accuracy, where = train_labels, last.train_accuracy, "training"
    chance = np.bincount(labels, minlength=n_classes).max() / len(labels)
    if accuracy <= chance + 0.01:
        undertrained = steps < MIN_STEPS and last.loss <= 1.1 * math.log(n_classes)  # near guessing's loss
        advice = (f"only {steps} steps were taken: train longer (--epochs, a smaller --batch-size)" if
                  undertrained else "the learning rate (or momentum) is probably too high; try a smaller --lr")
        raise FastnetError(f"training ended at chance accuracy ({100 * accuracy:.1f}% of the {where} images; "
                           f"always guessing the commonest class gives {100 * chance:.1f}%): {advice}. Nothing was "
                           "saved")


def _flag_name(setting: str) -> str:
    """The train flag of a TrainConfig setting: batch_size -> --batch-size."""
    return f"--{setting.replace('_', '-')}"


MIN_STEPS = 100  # fewer steps than this may end at chance whatever the learning rate

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


@contextlib.contextmanager
def _stop_on_signals():
    """A stop flag raised by the first Ctrl-C, SIGTERM or SIGHUP (training ends at the batch boundary, and
    stop[1] holds the signal's number); a second one quits at once, as does SIGQUIT."""
    from .kernels.threads import new_stop_flag

    stop = new_stop_flag()

    def on_signal(signum, frame):
        if stop[0]:
            _say("\nfastnet: stopped again: quitting now (files on disk are complete)")
            _quit_now(signum, frame)
        stop[0], stop[1] = 1, signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        _say(f"\nfastnet: {name}: stopping at the end of this batch (Ctrl-C again to quit at once)")

    with _signal_handlers(dict.fromkeys(STOP_SIGNALS, on_signal)):
        yield stop


def _say(message: str) -> None:
    """Print to stderr from a signal handler: the terminal may be gone (SIGHUP)."""
    with contextlib.suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)
