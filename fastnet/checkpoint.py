"""Checkpoints: everything needed to continue training to the very same weights.

A checkpoint is an .npz file (no pickle) with the weights W1, b1, W2, b2, the
momentum velocities v_W1, v_b1, v_W2, v_b2, and `state`, a JSON string with
the config, the epoch and batch to continue from, the random generator's state
at the start of that epoch (so the same shuffle is drawn again), the running
loss and correct count of the unfinished epoch, and the history so far.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import FastnetError
from .model import Network
from .parameters import WEIGHTS, checked_network, write_atomically, write_npz

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    config: dict
    network: Network
    velocity: list[np.ndarray]
    epoch: int  # 0-based epoch to continue
    next_batch: int  # first batch of that epoch not yet done
    rng_state: dict  # numpy bit generator state at the start of that epoch
    loss_sum: float = 0.0  # of the batches of that epoch already done
    correct: int = 0
    history: list[dict] = field(default_factory=list)


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint atomically: the file on disk is always a complete one."""
    state = {key: value for key, value in asdict(checkpoint).items() if key not in ("network", "velocity")}
    state.update(format_version=FORMAT_VERSION, activation=checkpoint.network.activation)
    arrays = {name: getattr(checkpoint.network, name) for name in WEIGHTS}
    arrays.update({f"v_{name}": v for name, v in zip(WEIGHTS, checkpoint.velocity)})
    arrays["state"] = np.str_(json.dumps(state))
    write_atomically(Path(path), lambda file: write_npz(file, arrays))


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        state = json.loads(str(arrays["state"]))
        if state.get("format_version", 0) > FORMAT_VERSION:
            raise FastnetError(f"{path}: checkpoint format {state['format_version']} is newer than this fastnet reads")
        W1, W2 = arrays["W1"], arrays["W2"]
        sizes = (W1.shape + W2.shape[1:]) if W1.ndim == 2 and W2.ndim == 2 else W1.shape
        network = checked_network(path, arrays, sizes, state["activation"])
        velocity = [np.ascontiguousarray(arrays[f"v_{name}"], np.float32) for name in WEIGHTS]
        fields = ("config", "epoch", "next_batch", "rng_state", "loss_sum", "correct", "history")
        checkpoint = Checkpoint(network=network, velocity=velocity, **{key: state[key] for key in fields})
    except FileNotFoundError:
        raise FastnetError(f"{path}: no such checkpoint") from None
    except FastnetError:
        raise
    except Exception as error:  # a damaged or foreign file: zip, npy, JSON or key errors alike
        raise FastnetError(f"{path}: not a readable fastnet checkpoint ({type(error).__name__}: {error})") from None
    if any(v.shape != p.shape or not np.isfinite(v).all() for v, p in zip(velocity, network.params)):
        raise FastnetError(f"{path}: checkpoint velocities do not match its weights or are not finite")
    return checkpoint
