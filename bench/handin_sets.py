"""Digits as people hand them in, as image folders OUT/<set>/<label>/*.png, scored with
`python -m fastnet predict OUT/<set> --format csv --parameters P` (docs/performance.md, "Augmentation").

    realworld  MNIST test digits 0-1,999 photographed and scanned (tests/realworld.py: paper, lighting,
               blur, noise, off-centre on big canvases, inverted, JPEG)
    scans      scikit-learn's 1,797 handwritten digits (other writers than MNIST's; 8x8 at 16 grey levels)
               enlarged to 64x64 bicubic: blurry low-resolution scans, dark on light
    pens       MNIST test digits 5,000-6,999 with the stroke thickened or thinned (grey dilation or
               erosion at 4x), off-centre on a light canvas 1.5-3x the digit: kept aside, scored last

Usage: python bench/handin_sets.py OUT   (needs scikit-learn: the [test] extra)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastnet.datasets import load_mnist  # noqa: E402
from tests.realworld import write_realworld_set  # noqa: E402

PEN_FILTERS = {"thin": ImageFilter.MinFilter(5), "thick": ImageFilter.MaxFilter(7),
               "very thick": ImageFilter.MaxFilter(13)}


def save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_scans(out: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        paper = Image.fromarray((255 - image * 255 / 16).astype(np.uint8))
        save(out / str(label) / f"{i:05d}.png", np.asarray(paper.resize((64, 64), Image.Resampling.BICUBIC)))


def write_pens(out: Path, images: np.ndarray, labels: np.ndarray, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    for i in range(5000, 7000):
        digit = Image.fromarray(images[i].reshape(28, 28)).resize((112, 112), Image.Resampling.BICUBIC)
        ink = np.asarray(digit.filter(PEN_FILTERS[rng.choice(list(PEN_FILTERS))]), np.float32) / 255
        height, width = (int(112 * rng.uniform(1.5, 3)) for _ in range(2))
        canvas = np.zeros((height, width), np.float32)
        top, left = rng.integers(0, height - 111), rng.integers(0, width - 111)
        canvas[top:top + 112, left:left + 112] = ink
        gray = 0.9 - 0.8 * canvas + rng.normal(0, 0.02, canvas.shape)
        save(out / str(labels[i]) / f"{i:05d}.png", np.clip(gray * 255, 0, 255).astype(np.uint8))


def main(out: Path) -> None:
    images, labels = load_mnist("test")
    write_realworld_set(out / "realworld", images[:2000], labels[:2000], seed=0)
    write_scans(out / "scans")
    write_pens(out / "pens", images, labels)
    for name in ("realworld", "scans", "pens"):
        print(f"{out / name}: {sum(1 for _ in (out / name).rglob('*.*')):,} images")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
