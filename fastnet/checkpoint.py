"""Checkpoints: everything needed to continue training to the very same weights.

A checkpoint is an .npz file (no pickle) with the weights W1, b1, ..., WL, bL, the
optimiser's moments beside them (m_W1 ...: SGD's velocity or Adam's first moment;
s_W1 ...: Adam's second moment), and `state`, a JSON string with the config, the
epoch and batch to continue from, the optimiser's steps so far, the random
generator's state at the start of that epoch (so the same shuffle is drawn
again), the running loss and correct count of the unfinished epoch, the history
so far, and a fingerprint of the training data (so that it is never resumed on
other data).

A checkpoint is untrusted input like any file: every field is checked for its
type and range when it is loaded (load_checkpoint), and against the data when
training resumes (Checkpoint.check_resumable), before any kernel runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import FastnetError
from .files import read_json, read_npz, write_atomically, write_npz
from .kernels.common import OptimizerState
from .model import Network
from .parameters import checked_network, layer_sizes, weight_names, weight_shapes

MAX_LOSS = 88.0  # an image's cross-entropy is at most -ln(the smallest float32), 87.3
FORMAT_VERSION = 3  # 2: the training data's fingerprint is recorded; 3: any number of layers, any optimiser


@dataclass
class Checkpoint:
    config: dict
    network: Network
    optimizer_state: OptimizerState
    epoch: int  # 0-based epoch to continue
    next_batch: int  # first batch of that epoch not yet done
    rng_state: dict  # numpy bit generator state at the start of that epoch
    loss_sum: float = 0.0  # of the batches of that epoch already done
    correct: int = 0
    history: list[dict] = field(default_factory=list)
    data: dict | None = None  # training.data_fingerprint of the training data

    def check_resumable(self, config, fingerprint: dict, n_batches: int) -> None:
        """Refuse to continue on data other than the checkpoint's, or from a batch the data does not have."""
        if self.data != fingerprint:
            raise FastnetError(f"this checkpoint was made on other training data ({self.data['images']:,} images "
                               f"of {self.data['inputs']} inputs in {self.data['classes']} classes, not these "
                               f"{fingerprint['images']:,} of {fingerprint['inputs']} in {fingerprint['classes']}, "
                               "or the same counts with other contents): resume with the --data it was trained on, "
                               "and with --dry-run only a --dry-run's checkpoint (it trains on a sample)")
        done = self.next_batch * config.batch_size
        if self.next_batch >= n_batches or self.correct > done or self.loss_sum > MAX_LOSS * done:
            raise FastnetError(f"this checkpoint continues at batch {self.next_batch + 1} with {self.correct} images "
                               f"right and a loss of {self.loss_sum:g} so far, but the data has {n_batches} batches "
                               "and no image's loss exceeds 88: it is damaged")


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint atomically: the file on disk is always a complete one."""
    state = {key: value for key, value in asdict(checkpoint).items() if key not in ("network", "optimizer_state")}
    moments = checkpoint.optimizer_state
    state.update(format_version=FORMAT_VERSION, activation=checkpoint.network.activation,
                 layer_sizes=list(checkpoint.network.layer_sizes), steps=int(moments.step[0]),
                 moments=[prefix for prefix, kept in (("m_", moments.first), ("s_", moments.second)) if kept is not None])
    names = weight_names(len(checkpoint.network.weights))
    arrays = dict(zip(names, checkpoint.network.params))
    for prefix, kept in (("m_", moments.first), ("s_", moments.second)):
        if kept is not None:
            arrays.update({prefix + name: array for name, array in zip(names, kept)})
    arrays["state"] = np.str_(json.dumps(state))
    write_atomically(Path(path), lambda file: write_npz(file, arrays))


STATE_KEYS = ({f.name for f in fields(Checkpoint)} - {"network", "optimizer_state"}
              | {"format_version", "activation", "layer_sizes", "steps", "moments"})


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint and check every field; any problem is one FastnetError saying what."""
    path = Path(path)
    try:
        arrays = read_npz(path, ["state"], "checkpoint")
        state = read_json(str(arrays["state"])) if "state" in arrays else None
        sizes = state.get("layer_sizes") if isinstance(state, dict) else None
        if isinstance(sizes, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in sizes):
            shapes = weight_shapes(layer_sizes(path, np.array(sizes, np.int64)))
            shapes.update({prefix + name: shape for prefix in ("m_", "s_") for name, shape in list(shapes.items())})
            arrays.update(read_npz(path, list(shapes), "checkpoint", max_bytes=None, shapes=shapes))
    except FileNotFoundError:
        raise FastnetError(f"{path}: no such checkpoint") from None
    except FastnetError:  # a ValueError, but already the message to give
        raise
    except (json.JSONDecodeError, OverflowError, ValueError) as error:
        raise FastnetError(f"{path}: not a usable fastnet checkpoint ({type(error).__name__}: {error})") from None
    try:
        return _checked(path, arrays)
    except FastnetError as error:
        raise FastnetError(f"{path}: {error}" if not str(error).startswith(str(path)) else str(error)) from None
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError, json.JSONDecodeError) as error:
        raise FastnetError(f"{path}: not a usable fastnet checkpoint ({type(error).__name__}: {error})") from None


def _whole(value, name: str, low: int, high: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FastnetError(f"checkpoint field {name}={value!r} must be a whole number from {low} to {high:g}")
    return value


def _finite(value, name: str, low: float = -math.inf, nan_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not (value >= low if math.isfinite(value) else nan_ok and math.isnan(value)):
        raise FastnetError(f"checkpoint field {name}={value!r} must be a finite number, at least {low:g}")
    return float(value)


def _checked(path: Path, arrays: dict) -> Checkpoint:
    from .training import EpochStats, TrainConfig  # training imports this module

    state = read_json(str(arrays["state"]))
    if not isinstance(state, dict):
        raise TypeError("state is not a JSON object")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise FastnetError(f"checkpoint format {version} is newer than this fastnet reads: upgrade fastnet")
        raise FastnetError(f"checkpoint format {version!r} is from an older fastnet, which did not record its "
                           "training data: start the training again")
    if set(state) != STATE_KEYS:
        unknown, missing = sorted(set(state) - STATE_KEYS), sorted(STATE_KEYS - set(state))
        raise FastnetError(f"checkpoint state has unknown fields {unknown} or lacks {missing}")
    if not isinstance(state["config"], dict):
        raise TypeError("config is not a JSON object")
    state["config"].setdefault("augment", False)  # checkpoints from before augmentation trained without it
    config = TrainConfig(**state["config"])  # checks every setting (an unknown one is a TypeError)
    if config.learning_rate is None:  # decided when the run began, and always saved
        raise FastnetError("checkpoint config has no learning rate: it is damaged")
    if state["activation"] != config.activation:
        raise FastnetError(f"checkpoint activation {state['activation']!r} is not its config's {config.activation!r}")
    sizes = layer_sizes(path, np.array(state["layer_sizes"], np.int64))
    if sizes[1:-1] != config.hidden:
        raise FastnetError(f"checkpoint layer sizes {sizes} do not have its config's hidden layers {config.hidden}")
    network = checked_network(path, arrays, sizes, config.activation)
    names = weight_names(len(sizes) - 1)
    expected = [prefix for prefix, wanted in (("m_", config.optimizer == "adam" or config.momentum != 0),
                                              ("s_", config.optimizer == "adam")) if wanted]
    if state["moments"] != expected:
        raise FastnetError(f"checkpoint moments {state['moments']} are not what its optimiser keeps ({expected})")
    moments = []
    for prefix in ("m_", "s_"):
        if prefix not in expected:
            moments.append(None)
            continue
        kept = [arrays.get(prefix + name) for name in names]
        if any(m is None or m.shape != p.shape or m.dtype.kind != "f" or not np.isfinite(m).all()
               for m, p in zip(kept, network.params)):
            raise FastnetError("checkpoint optimiser moments do not match its weights or are not finite")
        if prefix == "s_" and any((m < 0).any() for m in kept):  # a mean of squares: its square root is taken
            raise FastnetError("checkpoint second moments are negative: the file is damaged")
        moments.append([np.ascontiguousarray(m, np.float32) for m in kept])
    steps = _whole(state["steps"], "steps", 0)
    epoch = _whole(state["epoch"], "epoch", 0, config.epochs)
    history = state["history"]
    if not isinstance(history, list) or len(history) != epoch:
        raise FastnetError(f"checkpoint history must list the {epoch} epochs done")
    stat_fields = {f.name for f in fields(EpochStats)}
    for number, entry in enumerate(history, 1):
        if not isinstance(entry, dict) or set(entry) != stat_fields or entry["epoch"] != number:
            raise FastnetError(f"checkpoint history entry {number} is not a record of epoch {number}")
        for name in stat_fields - {"epoch"}:
            _finite(entry[name], f"history[{number}].{name}", 0.0, nan_ok=name == "test_accuracy")
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng_state"]  # numpy checks its form (ValueError, TypeError, KeyError)
    data = state["data"]
    if not (isinstance(data, dict) and set(data) == {"images", "inputs", "classes", "digest"}
            and all(isinstance(data[k], int) and not isinstance(data[k], bool) for k in ("images", "inputs", "classes"))
            and isinstance(data["digest"], str)):
        raise FastnetError("checkpoint data fingerprint is malformed")
    if (data["inputs"], data["classes"]) != (network.layer_sizes[0], network.layer_sizes[-1]):
        raise FastnetError("checkpoint data fingerprint does not match its network's inputs and classes")
    return Checkpoint(state["config"], network, OptimizerState(np.array([steps], np.int64), *moments), epoch,
                      _whole(state["next_batch"], "next_batch", 0), state["rng_state"],
                      _finite(state["loss_sum"], "loss_sum", 0.0), _whole(state["correct"], "correct", 0), history,
                      data)
