"""`fastnet bench --sklearn`: fastnet.MLPClassifier beside scikit-learn's MLPClassifier, same data and settings.

- digits (8x8, 1,797 images) and breast cancer (30 features, standardised on the training part): scikit-learn's
  default settings in both, a stratified 70/30 split per seed, mean test accuracy over the seeds, fastnet's
  kernels compiled (or loaded from the cache) beforehand by a one-epoch fit;
- MNIST as float32 X / 255 for both (as a scikit-learn user passes it), hidden_layer_sizes=(128,), adam,
  max_iter=10, batch_size=200: test accuracy and fit seconds, fastnet's kernels compiled (or loaded from the
  cache) beforehand by a small fit, both measured in this one process.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

MNIST_SETTINGS = dict(hidden_layer_sizes=(128,), solver="adam", max_iter=10, batch_size=200)


@dataclass
class Comparison:
    dataset: str
    fastnet_accuracy: float  # mean over the seeds
    sklearn_accuracy: float
    fastnet_seconds: float  # mean fit time
    sklearn_seconds: float


def compare(seeds: int = 5, mnist_rows: int | None = None) -> list[Comparison]:
    """The three comparisons (module docstring); mnist_rows: train on the first rows only (a quick check)."""
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as ScikitLearnMLP
    from sklearn.preprocessing import StandardScaler

    from .datasets import load_mnist
    from .estimator import MLPClassifier

    def fit_and_score(estimator, X, y, X_test, y_test):
        start = time.perf_counter()
        model = estimator.fit(X, y)
        return model.score(X_test, y_test), time.perf_counter() - start

    warnings.simplefilter("ignore", ConvergenceWarning)
    results = []
    for name, loader, standardise in (("digits", load_digits, False), ("breast cancer", load_breast_cancer, True)):
        X, y = loader(return_X_y=True)
        runs = {"fastnet": [], "sklearn": []}
        for seed in range(seeds):
            X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
            if standardise:
                scaler = StandardScaler().fit(X_train)
                X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
            if seed == 0:  # compile fastnet's kernels for this data (or load them from the cache): not timed
                MLPClassifier(max_iter=1).fit(X_train, y_train)
            for system, estimator in (("fastnet", MLPClassifier), ("sklearn", ScikitLearnMLP)):
                runs[system].append(fit_and_score(estimator(random_state=seed), X_train, y_train, X_test, y_test))
        ours, theirs = np.mean(runs["fastnet"], axis=0), np.mean(runs["sklearn"], axis=0)  # (accuracy, seconds)
        results.append(Comparison(name, ours[0], theirs[0], ours[1], theirs[1]))
    (X, y), (X_test, y_test) = load_mnist("train"), load_mnist("test")
    X, y = (X[:mnist_rows], y[:mnist_rows]) if mnist_rows else (X, y)
    X, X_test = X.astype(np.float32) / np.float32(255), X_test.astype(np.float32) / np.float32(255)
    MLPClassifier(**MNIST_SETTINGS).fit(X[:1000], y[:1000])  # compile, or load from the cache: not timed
    ours = fit_and_score(MLPClassifier(**MNIST_SETTINGS, random_state=0), X, y, X_test, y_test)
    theirs = fit_and_score(ScikitLearnMLP(**MNIST_SETTINGS, random_state=0), X, y, X_test, y_test)
    results.append(Comparison("MNIST X / 255, (128,) adam, 10 epochs", ours[0], theirs[0], ours[1], theirs[1]))
    return results


def format_table(results: list[Comparison], seeds: int) -> str:
    header = ("dataset", "fastnet acc", "sklearn acc", "fastnet fit s", "sklearn fit s", "fit time ratio")
    rows = [header] + [(r.dataset + (f" (mean of {seeds} seeds)" if not r.dataset.startswith("MNIST") else ""),
                        f"{100 * r.fastnet_accuracy:.2f}%", f"{100 * r.sklearn_accuracy:.2f}%",
                        f"{r.fastnet_seconds:.3f}", f"{r.sklearn_seconds:.3f}",
                        f"{r.sklearn_seconds / r.fastnet_seconds:.1f}x") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width)
                               in enumerate(zip(row, widths))) for row in rows)
