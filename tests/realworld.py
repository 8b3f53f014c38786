"""Digits as people photograph and scan them, made from MNIST test digits (for the predict tests).

Each image: dark ink on light paper (sometimes coloured, sometimes light ink on
dark), the digit scaled 3x-12x, placed off-centre on a larger canvas, with
blur, noise, uneven lighting, and saved as PNG (gray, RGB or RGBA with a
transparent background) or JPEG of varying quality.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def realistic(digit: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    """One (28, 28) uint8 MNIST digit as the bytes of a real-world-looking image file, and its suffix."""
    scale = rng.uniform(3, 12)
    size = int(28 * scale)
    ink = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255
    ink = np.asarray(Image.fromarray((np.clip(ink, 0, 1) * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0, scale / 3))), np.float32) / 255
    height, width = int(size * rng.uniform(1.3, 2.5)), int(size * rng.uniform(1.3, 2.5))
    canvas = np.zeros((height, width), np.float32)
    top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
    canvas[top:top + size, left:left + size] = ink
    light = rng.uniform(0.75, 1.0) + rng.uniform(-0.1, 0.1) * np.linspace(-1, 1, width)[None, :]
    paper, pen = light, rng.uniform(0.0, 0.3)
    gray = paper * (1 - canvas) + pen * canvas + rng.normal(0, rng.uniform(0, 0.06), canvas.shape)
    if rng.random() < 0.15:  # chalk on a blackboard: light ink on dark
        gray = 1 - gray
    gray = np.clip(gray * 255, 0, 255).astype(np.uint8)
    kind = rng.choice(["gray-png", "rgb-jpeg", "rgb-png", "rgba-png"])
    if kind == "gray-png":
        image = Image.fromarray(gray)
    else:
        tint = rng.uniform(0.8, 1.0, 3)
        rgb = np.clip(gray[..., None] * tint[None, None, :], 0, 255).astype(np.uint8)
        if kind == "rgb-jpeg":
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, "JPEG", quality=int(rng.integers(40, 95)))
            return buffer.getvalue(), ".jpg"
        image = Image.fromarray(rgb)
        if kind == "rgba-png":  # ink drawn on a transparent layer
            alpha = (canvas * 255).astype(np.uint8)
            dark = np.zeros_like(rgb)
            image = Image.fromarray(np.dstack([dark, alpha]))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue(), ".png"


def write_realworld_set(folder: Path, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> list[Path]:
    """Write one file per image under folder/<label>/ and return their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        data, suffix = realistic(image.reshape(28, 28), rng)
        path = folder / str(label) / f"{i:05d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


# ---------------------------------------------------------------- one hard case at a time (grayscale arrays)


def _enlarged(digit: np.ndarray, size: int = 112) -> np.ndarray:
    """A (28, 28) MNIST digit as ink (0 to 1) at size x size."""
    return np.asarray(Image.fromarray(digit.reshape(28, 28)).resize((size, size), Image.Resampling.BICUBIC),
                      np.float32) / 255


def _on_paper(ink: np.ndarray, rng: np.random.Generator, margin: tuple[float, float] = (0.3, 0.8)) -> np.ndarray:
    """Ink (0-1) as dark pen on light paper (0-1 gray), off-centre with a random margin, slightly noisy."""
    height, width = ink.shape
    canvas = np.zeros((int(height * (1 + rng.uniform(*margin))), int(width * (1 + rng.uniform(*margin)))),
                      np.float32)
    top, left = rng.integers(0, canvas.shape[0] - height + 1), rng.integers(0, canvas.shape[1] - width + 1)
    canvas[top:top + height, left:left + width] = ink
    return 0.9 - 0.8 * canvas + rng.normal(0, 0.02, canvas.shape)


def hard_case(kind: str, digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One MNIST digit as a (H, W) uint8 photo or scan of one hard kind:
    table     the paper photographed with a dark table around it
    thick     a very thick pen (strokes ~4x MNIST's)
    thin      a thin pen (the strokes eroded by 4 of their ~10 px at 112 px)
    lighting  light falling off to half across the page, at a random angle
    scan      scanned at 8-12 px and enlarged to 64 px (bicubic): blurry, dark on light
    edges     cropped tight to the ink: the strokes touch every edge, dark on light"""
    if kind == "table":
        paper = _on_paper(_enlarged(digit), rng, margin=(0.5, 1.0))
        height, width = paper.shape
        photo = rng.uniform(0.1, 0.35) + rng.normal(0, 0.05, (int(height * rng.uniform(1.3, 1.8)),
                                                              int(width * rng.uniform(1.3, 1.8))))
        top, left = rng.integers(0, photo.shape[0] - height + 1), rng.integers(0, photo.shape[1] - width + 1)
        photo[top:top + height, left:left + width] = paper
    elif kind == "thick":
        pen = Image.fromarray((_enlarged(digit) * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(15))
        photo = _on_paper(np.asarray(pen, np.float32) / 255, rng)
    elif kind == "thin":
        pen = Image.fromarray((_enlarged(digit) * 255).astype(np.uint8)).filter(ImageFilter.MinFilter(5))
        photo = _on_paper(np.asarray(pen, np.float32) / 255, rng)
    elif kind == "scan":
        size = int(rng.integers(8, 13))
        small = Image.fromarray(digit.reshape(28, 28)).resize((size, size), Image.Resampling.BOX)
        ink = np.asarray(small.resize((64, 64), Image.Resampling.BICUBIC), np.float32) / 255
        photo = 0.9 - 0.8 * np.clip(ink, 0, 1) + rng.normal(0, 0.02, ink.shape)
    elif kind == "edges":
        ink = _enlarged(digit)
        rows, columns = np.flatnonzero(ink.max(axis=1) > 0.5), np.flatnonzero(ink.max(axis=0) > 0.5)
        ink = ink[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
        photo = 0.9 - 0.8 * ink + rng.normal(0, 0.02, ink.shape)
    elif kind == "lighting":
        photo = _on_paper(_enlarged(digit), rng)
        ys, xs = np.mgrid[0:photo.shape[0], 0:photo.shape[1]] / max(photo.shape)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xs + np.sin(angle) * ys
        photo *= 1 - 0.55 * (ramp - ramp.min()) / (np.ptp(ramp) + 1e-9)
    else:
        raise ValueError(kind)
    return np.clip(photo * 255, 0, 255).astype(np.uint8)
