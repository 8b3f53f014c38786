"""The error-against-epochs plot of the original project, as a PNG (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from .files import write_atomically  # noqa: E402
from .training import EpochStats  # noqa: E402


def plot_history(history: list[EpochStats], path: str | Path, title: str = "") -> None:
    """Train and test error (%) and loss per epoch, written atomically to path."""
    epochs = [s.epoch for s in history]
    figure, (errors, losses) = plt.subplots(1, 2, figsize=(10, 4))
    errors.plot(epochs, [100 * (1 - s.train_accuracy) for s in history], "o-", label="train (during the epoch)")
    errors.plot(epochs, [100 * (1 - s.test_accuracy) for s in history], "o-", label="test")
    errors.set(xlabel="epoch", ylabel="error (%)", title="error against epochs")
    errors.legend()
    errors.grid(alpha=0.3)
    losses.plot(epochs, [s.loss for s in history], "o-", color="tab:red")
    losses.set(xlabel="epoch", ylabel="cross-entropy", title="training loss", yscale="log")
    losses.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    # Fixed margins that fit these labels and a one-line title: constrained layout, which measures every text,
    # took longer than the drawing itself.
    figure.subplots_adjust(left=0.07, right=0.985, bottom=0.12, top=0.84, wspace=0.22)
    save_figure(figure, path)


def save_figure(figure, path: str | Path) -> None:
    """Write a matplotlib figure as PNG, atomically, and release it."""
    try:
        write_atomically(Path(path), lambda file: figure.savefig(file, format="png", dpi=100))
    finally:
        plt.close(figure)
