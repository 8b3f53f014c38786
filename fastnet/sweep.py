"""`fastnet sweep`: train many settings on Dask workers, score each on a validation split, keep the best.

    search space  train settings, each a list of values (--lr 0.02,0.05,0.1; --hidden 128,256-128) or, with
                  --random N, a range sampled log-uniformly (--lr 1e-3:0.3); from flags or a TOML file
    trials        the grid of every combination, or N seeded random points; each trains on the training set less
                  a validation split carved from it (seeded), and is scored on that split, never on the test set
    results       OUT/results.csv, rewritten atomically after every finished trial (a crash leaves the last
                  complete file); the same command again skips the trials it holds
    the best      retrained on the whole training set, scored once on the test set, saved as OUT/parameters.npz
    Dask          a LocalCluster of processes (workers x threads per trial = cores) or --scheduler ADDRESS;
                  the data goes to each worker once; a trial whose worker dies is run again elsewhere

Each trial runs fastnet's own training (training.train) with its own threads, in a worker process whose Numba
kernels come from the cache after its first trial.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import signal
import sys
import time
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import FastnetError
from .training import DEFAULT_LEARNING_RATE, TrainConfig, default_learning_rate


def _truth(text: str) -> bool:
    """A true-or-false setting as written: true/yes or false/no (KeyError otherwise)."""
    return {"true": True, "yes": True, "false": False, "no": False}[text.lower()]


# The train settings a sweep may vary, by flag: (TrainConfig field, how one value is read).
SETTINGS = {
    "epochs": ("epochs", int),
    "batch-size": ("batch_size", int),
    "hidden": ("hidden", lambda text: tuple(int(width) for width in text.split("-"))),
    "activation": ("activation", str),
    "optimizer": ("optimizer", str),
    "lr": ("learning_rate", float),
    "momentum": ("momentum", float),
    "nesterov": ("nesterov", _truth),
    "augment": ("augment", _truth),
    "weight-decay": ("weight_decay", float),
    "schedule": ("schedule", str),
    "seed": ("seed", int),
}
RANGES = ("epochs", "batch-size", "lr", "momentum", "weight-decay")  # may be LOW:HIGH with --random
CONNECT_TIMEOUT = "10s"  # to reach a --scheduler
# The sweep's own options (flags or TOML keys) and their defaults.
MAX_TRIALS = 10_000  # a sweep's trials (planned up front; more would take days on one machine)
OPTIONS = {"random": None, "random_seed": 0, "validation": 0.1, "out": "sweep", "scheduler": None, "workers": None,
           "threads": 1}
OUTCOMES = ("status", "validation_accuracy", "train_accuracy", "loss", "seconds", "kernel_seconds", "worker", "error")


def check_options(options: dict) -> None:
    """The sweep's options (flags, or a TOML file's keys, which no argparse has checked): one error naming any
    that is wrong."""
    def whole(name, low):
        value = options[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise FastnetError(f"sweep option {name} = {value!r}: must be a whole number, at least {low}")

    for name, low in (("random", 1), ("random_seed", 0), ("workers", 1), ("threads", 1)):
        whole(name, low)
    if options["random"] is not None and options["random"] > MAX_TRIALS:
        raise FastnetError(f"sweep option random = {options['random']}: at most {MAX_TRIALS:,} trials")
    share = options["validation"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise FastnetError(f"sweep option validation = {share!r}: must be a share of the training images in (0, 1)")
    for name in ("out", "scheduler"):
        if options[name] is not None and not isinstance(options[name], (str, Path)):
            raise FastnetError(f"sweep option {name} = {options[name]!r}: must be text")
    if not str(options["out"]).strip():  # "" would be the current folder, its parameters.npz overwritten
        raise FastnetError("sweep option out = '': must name a folder for the results")


@dataclass
class Space:
    """Values (lists) or ranges ((low, high)) per flag; flags with one value are the same in every trial."""

    values: dict[str, list | tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def parse(cls, texts: dict[str, str]) -> "Space":
        """A space from flag -> text ('0.1,0.3,1', '1e-3:1', '128,256-128')."""
        space = cls()
        for flag, text in texts.items():
            name, read = SETTINGS[flag]
            text = str(text).strip()
            try:
                if ":" in text:
                    if flag not in RANGES:
                        raise ValueError(f"a range is for {', '.join('--' + r for r in RANGES)}")
                    parts = text.split(":")
                    if len(parts) != 2:
                        raise ValueError("a range is LOW:HIGH")
                    low, high = (read(part) for part in parts)
                    if not 0 < low < high:
                        raise ValueError("a range LOW:HIGH needs 0 < LOW < HIGH (it is sampled log-uniformly)")
                    space.values[flag] = (low, high)
                else:
                    space.values[flag] = [read(part) for part in text.split(",")]
            except (ValueError, KeyError) as error:
                raise FastnetError(f"sweep --{flag} {text}: {error}" if isinstance(error, ValueError) else
                                   f"sweep --{flag} {text}: each value must be true or false") from None
        for flag, values in space.values.items():
            if flag != "nesterov":  # (Nesterov's rules are about combinations)
                for value in values:  # every value (a range's ends) TrainConfig accepts, before any trial runs
                    try:
                        TrainConfig(**{SETTINGS[flag][0]: value})
                    except FastnetError as error:
                        raise FastnetError(f"sweep --{flag}: {error}") from None
        return space

    @property
    def swept(self) -> list[str]:
        """The flags that vary between trials."""
        return [flag for flag, values in self.values.items() if isinstance(values, tuple) or len(values) > 1]

    def trials(self, random: int | None, seed: int) -> tuple[list[dict], list[str]]:
        """(The settings of every trial, all of TrainConfig's fields, those not in the space at their defaults;
        why each combination TrainConfig refuses was left out): the grid, or `random` seeded draws. A space
        whose every combination is refused is an error."""
        flags = list(self.values)
        if random is None:
            ranged = [flag for flag in flags if isinstance(self.values[flag], tuple)]
            if ranged:
                raise FastnetError(f"sweep --{ranged[0]}: a range is sampled only with --random N; give a list "
                                   "of values for a grid")
            size = math.prod(len(self.values[flag]) for flag in flags)
            if size > MAX_TRIALS:
                raise FastnetError(f"sweep: a grid of {size:,} trials, more than {MAX_TRIALS:,}; give fewer values, "
                                   "or sample some with --random N")
            points = [dict(zip(flags, combination)) for combination in itertools.product(
                *(self.values[flag] for flag in flags))]
        else:
            rng = np.random.default_rng(seed)
            points = [{flag: self._draw(flag, rng) for flag in flags} for _ in range(random)]
        trials, left_out, seen = [], [], set()
        for point in points:  # Nesterov without momentum, Adam with SGD's momentum: combinations, left out
            try:
                settings = TrainConfig(**{SETTINGS[flag][0]: value for flag, value in point.items()}).as_dict()
            except FastnetError as error:
                left_out.append(f"{_describe(point, self.swept)}: {error}")
                continue
            key = json.dumps(settings, sort_keys=True)
            if key not in seen:  # a random draw may repeat one: it is the same trial
                seen.add(key)
                trials.append(settings)
        if not trials:
            raise FastnetError(f"sweep: no combination of these settings can run ({left_out[0]})")
        return trials, left_out

    def _draw(self, flag: str, rng: np.random.Generator):
        values = self.values[flag]
        if isinstance(values, list):
            return values[rng.integers(len(values))]
        low, high = values
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
        return int(round(value)) if SETTINGS[flag][1] is int else float(f"{value:.4g}")


def read_toml(path: Path) -> tuple[dict[str, str], dict]:
    """(flag -> text for Space.parse, other sweep options) from a TOML file:

        random = 8          # optional: the other options are those of the command line, with _ for -
        [space]
        lr = [0.02, 0.05, 0.1]      # a list of values, or "1e-3:0.3" (a range, with random)
        hidden = ["128", "256-128"]
    """
    from .files import open_regular

    try:
        with open_regular(path, "sweep file") as file:  # (a FIFO would block: refused)
            document = tomllib.loads(file.read().decode())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise FastnetError(f"{path}: cannot read this sweep file ({error})") from None
    space = document.pop("space", {})
    if not isinstance(space, dict):
        raise FastnetError(f"{path}: [space] must be a table of settings")
    texts = {}
    for key, value in space.items():
        flag = key.replace("_", "-")
        if flag == "learning-rate":
            flag = "lr"
        if flag not in SETTINGS:
            raise FastnetError(f"{path}: unknown setting {key!r} in [space]; the settings are {', '.join(SETTINGS)}")
        texts[flag] = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return texts, {key.replace("-", "_"): value for key, value in document.items()}


# ---------------------------------------------------------------- results


def setting_text(name: str, value) -> str:
    """A setting as results.csv holds it: widths joined by '-' for hidden, else str()."""
    return "-".join(map(str, value)) if name == "hidden" else str(value)


class Results:
    """OUT/results.csv: one row per finished trial (its number, every setting, the outcome), rewritten whole and
    atomically after each, so that it is always a complete file. A trial is known by its settings; one whose
    worker or cluster failed it ('lost') is not finished, and runs again on resume."""

    def __init__(self, path: Path, setting_names: list[str]):
        self.path, self.names = path, setting_names
        self.columns = ["trial", *setting_names, *OUTCOMES]
        self.rows: dict[str, dict] = {}  # by _key
        if path.exists():
            self._read()

    def _read(self) -> None:
        try:
            with open(self.path, newline="") as file:
                reader = csv.DictReader(file)
                rows, columns = list(reader), reader.fieldnames or []
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise FastnetError(f"{self.path}: cannot read it ({error}); move it away to start a new sweep") from None
        if columns != self.columns:
            raise FastnetError(f"{self.path} holds another sweep (columns {', '.join(columns)}); give another --out "
                               "or move it away")
        for line, row in enumerate(rows, start=2):
            damage = _damage(row)
            if damage:
                raise FastnetError(f"{self.path}, line {line}: {damage}; mend it, or move it away to start a new "
                                   "sweep")
            self.rows[self._key(row)] = row

    def _key(self, texts: dict) -> str:
        return json.dumps([texts[name] for name in self.names])

    def _texts(self, settings: dict) -> dict:
        return {name: setting_text(name, value) for name, value in settings.items()}

    def done(self, settings: dict) -> bool:
        row = self.rows.get(self._key(self._texts(settings)))
        return row is not None and row["status"] != "lost"

    def outcome(self, settings: dict) -> dict:
        return self.rows[self._key(self._texts(settings))]

    def add(self, number: int, settings: dict, outcome: dict) -> None:
        from .files import write_atomically

        row = {"trial": str(number), **self._texts(settings),
               **{name: _cell(outcome.get(name, "")) for name in OUTCOMES}}
        self.rows[self._key(row)] = row
        text = io.StringIO()
        writer = csv.DictWriter(text, self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(self.rows.values(), key=lambda r: int(r["trial"])))
        data = text.getvalue().encode()
        write_atomically(self.path, lambda file: file.write(data))


def _damage(row: dict) -> str:
    """What is wrong with a row read back from results.csv, in words ('' if nothing): the summary and the plot
    read a finished trial's numbers as numbers."""
    trial = row["trial"] or ""  # (None in a row cut short)
    if not (trial.isascii() and trial.isdigit()):
        return f"trial {row['trial']!r} is not a whole number"
    if row["status"] not in ("ok", "failed", "lost"):
        return f"status {row['status']!r} is none of ok, failed, lost"
    for name in ("validation_accuracy", "train_accuracy", "loss", "seconds") if row["status"] == "ok" else ():
        try:
            float(row[name] or "")
        except ValueError:
            return f"{name} {row[name]!r} is not a number"
    return ""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return " ".join(str(value).split())  # one line, whatever an error message held


# ---------------------------------------------------------------- one trial, on a worker


def run_trial(settings: dict, data: dict, threads: int) -> dict:
    """Train one trial's settings on data['train'], score on data['validation']; failures are outcomes too."""
    from .kernels import get_backend
    from .training import accuracy, check_size, train, warm_up

    _use_threads(threads)
    start = time.perf_counter()
    outcome = {"worker": _worker_name()}
    inputs = data["train"][0]
    try:
        config = TrainConfig(**settings)
        check_size(config, (inputs.shape[1], *config.hidden, data["classes"]), len(inputs))  # as train refuses
        backend = get_backend(config.backend)
        # The kernels from Numba's cache: loaded by a worker's first trial of a kind, then already in memory.
        outcome["kernel_seconds"] = warm_up(backend, config, inputs, data["train"][1], data["classes"],
                                            input_shape=data["input_shape"])
        network, history = train(config, data["train"], None, data["classes"], input_shape=data["input_shape"])
        outcome.update(status="ok", validation_accuracy=accuracy(backend, network, *data["validation"]),
                       train_accuracy=history[-1].train_accuracy, loss=history[-1].loss)
    except FastnetError as error:  # divergence, a batch larger than the data, a network too big: recorded
        outcome.update(status="failed", error=str(error))
    outcome["seconds"] = time.perf_counter() - start
    return outcome


def _data(data: dict) -> dict:
    return data


def _held_by_dask(client, data: dict):
    """The data as one task's result, which each worker fetches once and every trial depends on.

    Not `client.scatter`: scattered data has no recipe, so when every worker holding it dies (a worker that
    joins late holds none until it runs a trial) Dask cancels every trial. A task's result is made again
    from its arguments, which the scheduler keeps, so a killed worker costs only its own trial."""
    with warnings.catch_warnings():  # the size warning is the point here: the data travels once, in the graph
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        held = client.submit(_data, data, pure=False)
    # Onto every worker now: with one copy the scheduler sends the trials to its holder. Only for speed, so a
    # failure is not the sweep's (the holder killed while its copies are made fails the scheduler's assert).
    with contextlib.suppress(Exception):
        client.replicate([held])
    return held


def _use_threads(threads: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


# ---------------------------------------------------------------- the sweep, from the client


@dataclass
class Plan:
    """What `fastnet sweep` was asked to do (cli.sweep makes it from the flags)."""

    space: Space
    trials: list[dict]
    data: str = "mnist"
    val_split: float | None = None  # a DIR/<class>/ dataset's test share, as for train
    image_size: tuple[int, int] | None = None
    color: bool = False
    strict: bool = False
    validation: float = 0.1  # share of the training images each trial is scored on
    seed: int = 0  # of the validation split and the random draws
    out: Path = Path("sweep")
    scheduler: str | None = None
    workers: int | None = None  # of a LocalCluster; None: cores / threads
    threads: int = 1  # per trial
    command: str = "python -m fastnet sweep"  # this run's, for the resume line

    def fingerprint(self) -> dict:
        """What the trials' scores depend on besides their settings: a results file is resumed only with these."""
        return {"data": str(Path(self.data).resolve()) if self.data != "mnist" else "mnist",
                "val_split": self.val_split, "image_size": list(self.image_size or ()), "color": self.color,
                "validation": self.validation, "seed": self.seed}


def split_validation(inputs: np.ndarray, labels: np.ndarray, share: float, seed: int):
    """(training part, validation part) of a training set: a seeded random share held out."""
    order = np.random.default_rng(seed).permutation(len(inputs))
    count = max(1, int(round(share * len(inputs))))
    if count >= len(inputs):
        raise FastnetError(f"--validation {share}: it leaves no training images of the {len(inputs)}")
    held, kept = np.sort(order[:count]), np.sort(order[count:])
    return (inputs[kept], labels[kept]), (inputs[held], labels[held])


def run(plan: Plan) -> int:
    """Run the plan's trials not yet in its results, then retrain the best; returns the exit status."""
    from .datasets import load_data

    with _only_sweep_in(plan.out):
        names = sorted(plan.trials[0])
        results = Results(plan.out / "results.csv", names)
        recorded_rates = _check_fingerprint(plan, results)
        try:
            dataset = load_data(plan.data, plan.val_split, plan.strict, plan.seed, plan.image_size, plan.color)
            rates = _decide_learning_rates(plan.trials, dataset.train[0])
            _record_fingerprint(plan, results, recorded_rates, rates)
            return _run(plan, results, dataset)
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM and SIGHUP (cli.Stopped)
            if any(settings["learning_rate"] is None for settings in plan.trials):  # (still loading the data)
                where = "while loading the data"
            else:
                done = sum(results.done(settings) for settings in plan.trials)
                where = f"{done} of {len(plan.trials)} trials are in {results.path}"
            with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                print(f"fastnet sweep: stopped; {where}\nresume with: {plan.command}", file=sys.stderr, flush=True)
            return 128 + getattr(stop, "signum", signal.SIGINT)


@contextlib.contextmanager
def _only_sweep_in(out: Path):
    """Hold OUT/.sweep.lock while a sweep runs there: a second sweep into the same folder is refused, where the
    two would each rewrite results.csv without the other's trials. (An advisory lock, POSIX only; the OS drops
    it with the process, however it ends.)"""
    from .files import CAN_LOCK, lock

    if not CAN_LOCK:
        yield
        return
    try:
        descriptor = os.open(out / ".sweep.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as error:
        raise FastnetError(f"--out {out}: cannot lock it for this sweep ({error.strerror or error})") from None
    try:
        try:
            lock(descriptor)
        except OSError:
            raise FastnetError(f"--out {out}: another sweep is running into this folder; wait for it to end, or "
                               "give another --out") from None
        yield
    finally:
        os.close(descriptor)


def _decide_learning_rates(trials: list[dict], inputs: np.ndarray) -> dict:
    """Fill in the learning rate of every trial that leaves it to the data: the default for all the training
    images (the trials train on a part, the best is retrained on all: one rate for both). Returns those rates by
    optimiser."""
    rates = {}
    for settings in trials:
        if settings["learning_rate"] is None:
            optimizer = settings["optimizer"]
            if optimizer not in rates:
                rates[optimizer] = default_learning_rate(optimizer, inputs)
            settings["learning_rate"] = rates[optimizer]
    return rates


def _check_fingerprint(plan: Plan, results: Results) -> dict:
    """OUT/sweep.json records the data and split the results were scored on, and the default learning rates the
    data gave (by optimiser); another data or split is refused here, before the data are loaded. Returns the
    recorded rates ({} for a sweep with no results yet)."""
    from .files import read_json

    path = plan.out / "sweep.json"
    if not (results.rows and path.exists()):
        return {}
    try:
        found = read_json(path.read_text())
    except (OSError, ValueError) as error:
        raise FastnetError(f"{path}: cannot read it ({error}); move {plan.out} away to start afresh") from None
    if not isinstance(found, dict) or not isinstance(found.get("default_learning_rates", {}), dict):
        raise FastnetError(f"{path}: not what sweep writes there (a JSON object); move {plan.out} away to start "
                           "afresh")
    # written before the defaults followed the data: the optimisers' own
    rates = found.pop("default_learning_rates", dict(DEFAULT_LEARNING_RATE))
    wanted = plan.fingerprint()
    if found != wanted:
        differ = ", ".join(f"{key} {found.get(key)!r} (now {value!r})" for key, value in wanted.items()
                           if found.get(key) != value)
        raise FastnetError(f"{results.path} was scored with {differ}; give another --out to sweep this")
    return rates


def _record_fingerprint(plan: Plan, results: Results, recorded: dict, rates: dict) -> None:
    """Refuse results scored at another default learning rate than the data give an optimiser now (their trials
    would run again under the same numbers); then write OUT/sweep.json with every optimiser's rate so far."""
    from .files import write_atomically

    changed = [f"{name} {recorded[name]!r} (now {rate!r})" for name, rate in rates.items()
               if name in recorded and recorded[name] != rate]
    if changed:
        raise FastnetError(f"{results.path} was scored with default learning rates {', '.join(changed)}; give "
                           "another --out to sweep this")
    text = json.dumps(dict(plan.fingerprint(), default_learning_rates={**recorded, **rates}), indent=1).encode()
    write_atomically(plan.out / "sweep.json", lambda file: file.write(text))


def _run(plan: Plan, results: Results, dataset) -> int:
    pending = [(number, settings) for number, settings in enumerate(plan.trials) if not results.done(settings)]
    train_part, validation_part = split_validation(*dataset.train, plan.validation, plan.seed)
    swept = ", ".join(f"--{flag}" for flag in plan.space.swept) or "nothing"
    print(f"sweep: {len(plan.trials)} trials over {swept}; {len(plan.trials) - len(pending)} already in "
          f"{results.path}; {len(train_part[0]):,} training and {len(validation_part[0]):,} validation images",
          flush=True)
    if pending:
        _run_trials(plan, pending, results, {"train": train_part, "validation": validation_part,
                                             "classes": len(dataset.classes), "input_shape": dataset.input_shape})
    return _finish(plan, results, dataset)


def local_cluster(workers: int):
    """Dask's LocalCluster of worker processes, one task each, as a sweep starts it."""
    import logging

    from distributed import LocalCluster

    with _ctrl_c_ignored():  # by the worker processes started now: the client stops them
        # No dashboard; the scheduler's HTTP server (always started) on a free port, not on 8787, which another
        # Dask may hold (Dask then warns that the port is in use). Dask's own logs silenced, its errors too: the
        # sweep reports every trial's fate itself, and a worker still running a trial when Ctrl-C closed the
        # cluster logged a heartbeat's traceback.
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.CRITICAL)


def _run_trials(plan: Plan, pending: list, results: Results, data: dict) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise FastnetError('sweep runs on Dask: pip install "dask[distributed]"') from None

    cluster = client = None
    finished, best, busy = 0, None, 0.0
    try:
        if plan.scheduler is None:
            workers = plan.workers or max(1, (os.cpu_count() or 1) // plan.threads)
            cluster = local_cluster(workers)
            where = f"a local Dask cluster of {workers} worker process(es), {plan.threads} thread(s) per trial"
        else:
            where = f"the Dask scheduler at {plan.scheduler}"
        try:
            client = Client(cluster if cluster is not None else plan.scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, ValueError) as error:  # ValueError: an address Dask cannot read
            raise FastnetError(f"sweep: cannot reach the Dask scheduler at {plan.scheduler} ({error}); is it "
                               "running, at an address such as tcp://HOST:8786?") from None
        print(f"sweep: on {where}; results stream to {results.path}", flush=True)
        if not client.scheduler_info()["workers"]:
            print("sweep: the scheduler has no workers yet; waiting for one to join", flush=True)
        start = time.perf_counter()
        shared = _held_by_dask(client, data)
        futures = {client.submit(run_trial, settings, shared, plan.threads, pure=False): (number, settings)
                   for number, settings in pending}
        for future in as_completed(futures):
            number, settings = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # KilledWorker after Dask's retries, a lost scheduler, no fastnet there
                outcome = {"status": "lost", "error": f"{type(error).__name__}: {error}"}
            results.add(number, settings, outcome)
            finished, busy = finished + 1, busy + outcome.get("seconds", 0.0)
            if outcome.get("status") == "ok" and (best is None or outcome["validation_accuracy"] > best[1]):
                best = (number, outcome["validation_accuracy"])
            elapsed = time.perf_counter() - start
            eta = elapsed / finished * (len(pending) - finished)
            result = (f"validation {100 * outcome['validation_accuracy']:.2f}%" if outcome.get("status") == "ok"
                      else f"{outcome['status']}: {outcome.get('error', '')}")  # failed, or lost to the cluster
            print(f"trial {number} ({_describe(settings, plan.space.swept)}): {result}; {finished}/{len(pending)} "
                  f"done" + (f", best {100 * best[1]:.2f}% (trial {best[0]})" if best else "")
                  + (f", about {eta:.0f} s to go" if finished < len(pending) else ""), flush=True)
        wall, workers = time.perf_counter() - start, len(client.scheduler_info()["workers"])
        print(f"sweep: {finished} trials in {wall:.1f} s on {workers} worker(s): {60 * finished / wall:.1f} trials a "
              f"minute; inside the trials {busy:.1f} s, so {max(0.0, wall * workers - busy) / finished:.2f} s a trial "
              "went to scheduling, sending data and idle workers", flush=True)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


@contextlib.contextmanager
def _ctrl_c_ignored():
    """SIGINT ignored while it lasts, in the main thread: processes started then inherit that, so a terminal's
    Ctrl-C (sent to the whole process group) reaches only the sweep, which stops its workers in order."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _describe(settings: dict, swept: list[str]) -> str:
    """name=value of the swept settings (settings by TrainConfig field, or by flag)."""
    names = [SETTINGS[flag][0] if SETTINGS[flag][0] in settings else flag for flag in swept]
    return " ".join(f"{name}={setting_text(name, settings[name])}" for name in names)


def _finish(plan: Plan, results: Results, dataset) -> int:
    """The summary, the plot, and the best trial retrained on all training images, tested once, saved."""
    from .kernels import get_backend
    from .kernels.common import input_scale
    from .parameters import Parameters, save
    from .training import accuracy, train, with_augment

    rows = [(number, settings, results.outcome(settings)) for number, settings in enumerate(plan.trials)]
    scored = sorted((row for row in rows if row[2]["status"] == "ok"),
                    key=lambda row: (-float(row[2]["validation_accuracy"]), row[0]))
    lost = sum(row[2]["status"] == "lost" for row in rows)
    failed = len(rows) - len(scored) - lost
    print(summary_table(scored[:10], plan.space.swept)
          + (f"\n{failed} trial(s) failed: see {results.path}" if failed else "")
          + (f"\n{lost} trial(s) lost to their workers: run the same command again to run them" if lost else ""))
    plot_results(rows, plan.space.swept, plan.out / "results.png")
    if not scored:
        raise FastnetError(f"every trial failed; their errors are in {results.path}")
    number, settings, outcome = scored[0]
    config = with_augment(TrainConfig(**settings), dataset.train[0], dataset.input_shape)
    _use_threads(os.cpu_count() or 1)
    print(f"best: trial {number} ({_describe(settings, plan.space.swept)}), validation "
          f"{100 * float(outcome['validation_accuracy']):.2f}%; retraining it on all {len(dataset.train[0]):,} "
          "training images", flush=True)
    network, _ = train(config, dataset.train, None, len(dataset.classes), input_shape=dataset.input_shape)
    test_accuracy = accuracy(get_backend(config.backend), network, *dataset.test)
    path = plan.out / "parameters.npz"
    recorded = dict(config.as_dict(), data=plan.data, sweep_trial=number,
                    validation_accuracy=float(outcome["validation_accuracy"]))
    save(path, Parameters(network, dataset.classes, recorded, test_accuracy, dataset.preprocessing,
                          dataset.input_shape, input_scale(dataset.train[0].dtype)))
    print(f"test accuracy {100 * test_accuracy:.2f}% (the test set's only use); saved {path}; "
          f"plot {plan.out / 'results.png'}")
    return 0


def summary_table(scored: list, swept: list[str]) -> str:
    names = [SETTINGS[flag][0] for flag in swept]
    header = ["trial", *names, "validation", "train", "loss", "seconds"]
    lines = [header] + [[str(number), *(setting_text(name, settings[name]) for name in names),
                         f"{100 * float(o['validation_accuracy']):.2f}%", f"{100 * float(o['train_accuracy']):.2f}%",
                         f"{float(o['loss']):.4f}", f"{float(o['seconds']):.1f}"] for number, settings, o in scored]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines)


def plot_results(rows: list, swept: list[str], path: Path) -> None:
    """Validation accuracy against each swept setting, one panel each (failed trials left out)."""
    from .plot import plt, save_figure

    flags = swept or list(SETTINGS)[:1]
    figure, axes = plt.subplots(1, len(flags), figsize=(4 * len(flags), 3.5), squeeze=False, constrained_layout=True)
    ok = [(settings, float(outcome["validation_accuracy"])) for _, settings, outcome in rows
          if outcome["status"] == "ok"]
    for axis, flag in zip(axes[0], flags):
        name = SETTINGS[flag][0]
        values = [setting_text(name, settings[name]) for settings, _ in ok]
        numeric = SETTINGS[flag][1] in (int, float)
        positions = [float(v) for v in values] if numeric else \
            [sorted(set(values)).index(v) for v in values]
        axis.scatter(positions, [100 * accuracy for _, accuracy in ok], alpha=0.7)
        if numeric and positions and min(positions) > 0 and max(positions) / min(positions) >= 10:
            axis.set_xscale("log")
        if not numeric:
            axis.set_xticks(range(len(set(values))), sorted(set(values)))
        axis.set(xlabel=f"--{flag}", ylabel="validation accuracy (%)")
    save_figure(figure, path)
