"""`fastnet predict`: classify image files and folders; with labelled folders, also score the model.

Folders are searched recursively; hidden files and files that are not images
(by extension) are passed over; what cannot be read (unreadable images, a FIFO,
a folder that cannot be listed) is listed and skipped. Paths are written as
fastnet.images.path_text makes them, in every format.
An image whose parent folder is named after a class (`test/3/x.png`) is
labelled with that class, and then accuracy, per-class accuracy and the
confusion matrix are reported too. Decoding and preprocessing run in one
process per core (fastnet.images).
"""

from __future__ import annotations

import csv
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FastnetError, printable
from .images import image_files, not_a_file, path_text, shown_path

FORMATS = ("table", "csv", "json")


def find_images(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files named or found (recursively, hidden ones passed over) under paths, in a stable order,
    and (path, reason) for each named or found that cannot be read. A path that is not there is an error."""
    found, skipped = [], []
    for path in paths:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise FastnetError(f"{path_text(path)}: no such file or folder") from None
        except OSError as error:  # a link that loops, a folder we may not enter
            skipped.append((path, f"cannot look at it ({error.strerror or error})"))
            continue
        if stat.S_ISDIR(mode):
            files, unreadable = image_files(path)
            found += map(Path, files)
            skipped += [(Path(name), reason) for name, reason in unreadable]
        elif stat.S_ISREG(mode):
            found.append(path)
        else:
            skipped.append((path, not_a_file(path)))
    return found, skipped


@dataclass
class Prediction:
    path: Path
    probabilities: np.ndarray
    label: str | None  # the true class, from the folder name, if any


def true_labels(paths: list[Path], class_names: list[str]) -> list[str | None]:
    """Each path's class, where its folder is named after one (as fastnet.folders names classes), else None."""
    known = set(class_names)
    return [name if (name := path_text(p.parent.name)) in known else None for p in paths]


def write_rows(predictions: list[Prediction], class_names: list[str], fmt: str, top: int, out=sys.stdout) -> None:
    """The predictions as a table, csv or json, paths written by path_text (valid UTF-8, whatever the name)."""
    names = np.asarray(class_names)
    ranked = [(p, np.argsort(-p.probabilities, kind="stable")[:top]) for p in predictions]
    if fmt == "json":
        json.dump([{"path": path_text(p.path), "label": str(names[order[0]]),
                    "probability": round(float(p.probabilities[order[0]]), 6),
                    "top": [{"label": str(names[k]), "probability": round(float(p.probabilities[k]), 6)}
                            for k in order], **({"true_label": p.label} if p.label is not None else {})}
                   for p, order in ranked], out, indent=1)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        extra = [column for k in range(2, top + 1) for column in (f"label_{k}", f"probability_{k}")]
        writer.writerow(["path", "label", "probability", *extra, "true_label"])
        for p, order in ranked:
            writer.writerow([path_text(p.path)] + [value for k in order for value in
                                             (names[k], f"{p.probabilities[k]:.6f}")] + [p.label or ""])
    else:  # a line per image: names as printable() shows them
        shown = [shown_path(p.path) for p in predictions]
        width = max([len(path) for path in shown] + [4])
        for path, (p, order) in zip(shown, ranked):
            best = "  ".join(f"{printable(str(names[k]))} {100 * p.probabilities[k]:5.1f}%" for k in order)
            out.write(f"{path:<{width}}  {best}\n")


def confusion_matrix(true: list[int], predicted: list[int], n_classes: int) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (np.asarray(true, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def score_report(matrix: np.ndarray, class_names: list[str]) -> str:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted); class names
    as printable() shows them."""
    class_names = [printable(name) for name in class_names]
    total = matrix.sum()
    lines = [f"accuracy {100 * np.trace(matrix) / total:.2f}% ({np.trace(matrix)}/{total} labelled images)",
             "per class: " + "  ".join(f"{name} {100 * matrix[i, i] / row:.1f}%" for i, (name, row) in
                                       enumerate(zip(class_names, matrix.sum(axis=1))) if row)]
    width = max(5, max(len(n) for n in class_names) + 1, len(str(matrix.max())) + 1)
    lines.append("confusion (rows: true, columns: predicted)")
    lines.append(" " * width + "".join(f"{n:>{width}}" for n in class_names))
    lines += [f"{name:>{width}}" + "".join(f"{v:>{width}}" for v in row) for name, row in zip(class_names, matrix)]
    return "\n".join(lines)


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path, title: str = "") -> None:
    from .plot import plt, save_figure

    figure, axis = plt.subplots(figsize=(6.5, 5.5), constrained_layout=True)
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, shrink=0.8)
    shown = [name.replace("$", r"\$") for name in class_names]  # a pair of $ would start matplotlib's mathtext
    axis.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xticklabels=shown,
             yticklabels=shown, xlabel="predicted", ylabel="true",
             title=title or f"confusion matrix, accuracy {100 * np.trace(matrix) / matrix.sum():.2f}%")
    threshold = matrix.max() / 2
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            axis.text(j, i, str(value), ha="center", va="center", fontsize=7,
                      color="white" if value > threshold else "black")
    save_figure(figure, path)


def evaluate_on_mnist(model, name: str | Path = "this model") -> np.ndarray:
    """The confusion matrix of a model of MNIST-form digits (28x28 grayscale, classes '0'..'9') on the MNIST test
    set."""
    from .datasets import MNIST_CLASSES, load_mnist

    if tuple(model.input_shape) != (28, 28, 1) or list(model.class_names) != list(MNIST_CLASSES):
        shape = "x".join(map(str, model.input_shape))
        instead = ("predict on a labelled folder (DIR/<class>/...)" if model.preprocessing != "none" else
                   f"its features in Python: fastnet.MLPClassifier.from_file({str(name)!r}).score(X, y)")
        raise FastnetError(f"{name}: evaluate scores on the MNIST test set, and this model reads {shape} inputs "
                           f"into classes {', '.join(model.class_names[:5])}{'...' if len(model.class_names) > 5 else ''}"
                           f"; score it with {instead} instead")
    images, labels = load_mnist("test")
    predicted = model.predict_proba(images).argmax(axis=1)
    return confusion_matrix(labels, predicted, len(model.class_names))
