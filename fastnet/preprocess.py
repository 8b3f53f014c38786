"""Turn an image as people have it into a 28x28 MNIST digit, the way MNIST itself was made.

MNIST digits are light ink on a black background, scaled so the longer side of
the ink is 20 pixels (antialiased, aspect kept), and placed in a 28x28 field
with their centre of mass at the centre. For any image:

1. decode (Pillow), honour EXIF orientation, composite transparency onto white;
2. grayscale, any mode (1, L, LA, P, RGB, RGBA, I;16, I, F) to 0-255;
3. a photo of paper with a darker table around it is cropped to the paper;
4. polarity: dark ink on light paper is inverted (`invert="auto"` decides from
   the median pixel, which is paper: ink covers a minority of the image; or,
   where thick ink covers most of a tight crop, from the border and the edges);
5. background and noise: big images are area-averaged down to 112 px first;
   the paper's brightness, estimated at every pixel so that uneven lighting
   goes too, is subtracted; faint pixels (below a threshold from Otsu's
   method) are set to 0, isolated specks do not count for the bounding box,
   and ink regions touching the border (a form's box) are dropped when enough
   ink lies inside them;
6. crop to the ink's bounding box, erode strokes much thicker than MNIST's
   towards its width, scale the longer side to 20 px with a high-quality
   filter, bring the strokes up to white, and paste into 28x28 centred on the
   centre of mass.

An image that is already MNIST-like (28x28, dark border) is left as it is.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFile, ImageFilter, ImageOps, UnidentifiedImageError

from .errors import FastnetError
from .files import open_regular

SIZE, INK_BOX = 28, 20
WORKING_SIZE = 112  # longest side the cleaning works at (4x MNIST's)
INVERT_CHOICES = ("auto", "yes", "no")
MAX_PIXELS = 40_000_000  # one image's budget (a 40-megapixel photo): decoded, it is 40-160 MB, and the
# conversions after it a few times that; a bigger image is refused from its header, before decoding, except
# a JPEG, which is decoded at a reduced scale (1/2 to 1/8: Pillow's draft) to fit.
Image.MAX_IMAGE_PIXELS = 2 * MAX_PIXELS  # Pillow's own guard stays behind ours; its warning for images
# between the two says less than our error does
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning, module="PIL")
ImageFile.LOAD_TRUNCATED_IMAGES = False


def open_image(source: str | Path | bytes | Image.Image) -> Image.Image:
    """A decoded Pillow image from a path (a regular file only), bytes or an Image, within MAX_PIXELS;
    FastnetError if it cannot be read."""
    name = "image data" if isinstance(source, (bytes, Image.Image)) else str(source)
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, bytes):
            image = _decoded(Image.open(io.BytesIO(source)), name)
        else:
            with open_regular(source, "image file") as file:
                image = _decoded(Image.open(file), name)
    except FileNotFoundError:
        raise FastnetError(f"{name}: no such file") from None
    except FastnetError:  # a ValueError, but already the message to give
        raise
    except UnidentifiedImageError:  # its message names the file object, not the file
        raise FastnetError(f"{name}: not a readable image (not a format Pillow reads, or damaged)") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise FastnetError(f"{name}: not a readable image ({error})") from None
    if image.width == 0 or image.height == 0:
        raise FastnetError(f"{name}: the image is empty (0 pixels)")
    return image


def _decoded(image: Image.Image, name: str) -> Image.Image:
    """image (opened: only its header read so far) decoded, if its size is within MAX_PIXELS."""
    width, height = image.size
    if width * height > MAX_PIXELS and image.format == "JPEG":
        scale = math.ceil(math.sqrt(width * height / MAX_PIXELS))
        image.draft(image.mode, (max(1, width // scale), max(1, height // scale)))
        width, height = image.size
    if width * height > MAX_PIXELS:
        raise FastnetError(f"{name}: {width}x{height} pixels is over fastnet's limit of {MAX_PIXELS:,} for one image; "
                           "shrink it first")
    image.load()
    return image


class Prep(NamedTuple):
    """How an image becomes a row of a network's input: 'digit' (MNIST-style, below; grayscale) or 'resize'
    (as it is, resized), to height x width pixels of channels (1: grayscale, 3: RGB), flattened in (height,
    width, channel) order. invert: for 'digit', whether dark ink on light paper is inverted (INVERT_CHOICES)."""

    kind: str = "digit"
    height: int = SIZE
    width: int = SIZE
    channels: int = 1
    invert: str = "auto"

    @property
    def row_size(self) -> int:
        return self.height * self.width * self.channels


def _upright(image: Image.Image) -> Image.Image:
    """After EXIF orientation (exif_transpose costs 12 us even with no EXIF: only where there may be some)."""
    if "exif" in image.info or image.format in ("TIFF", "MPO"):
        return ImageOps.exif_transpose(image)
    return image


def _on_white(image: Image.Image) -> Image.Image:
    """Transparency composited onto white; other images as they are."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def grayscale(image: Image.Image) -> np.ndarray:
    """(H, W) uint8, 0 black to 255 white, after EXIF orientation and compositing transparency onto white."""
    image = _upright(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image.convert("F") if image.mode != "F" else image, np.float32)
        low, high = float(values.min()), float(values.max())
        return np.zeros(values.shape, np.uint8) if high <= low else \
            np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
    image = _on_white(image)
    if image.mode == "LAB":  # Pillow converts LAB to nothing else; its L channel is the lightness, 0-255
        return np.asarray(image.getchannel(0), np.uint8)
    try:
        return np.asarray(image.convert("L") if image.mode in ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr")
                          else image.convert("RGB").convert("L"), np.uint8)
    except ValueError as error:  # a mode Pillow cannot convert
        raise FastnetError(f"cannot make a grayscale image of mode {image.mode} ({error})") from None


def colour(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB, after EXIF orientation and compositing transparency onto white; grayscale modes
    become three equal channels."""
    image = _upright(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F", "LAB"):
        gray = grayscale(image)
        return np.repeat(gray[:, :, None], 3, axis=2)
    try:
        return np.asarray(_on_white(image).convert("RGB"), np.uint8)
    except ValueError as error:
        raise FastnetError(f"cannot make an RGB image of mode {image.mode} ({error})") from None


def _border(gray: np.ndarray) -> np.ndarray:
    width = max(1, min(gray.shape) // 10)
    return np.concatenate([gray[:width].ravel(), gray[-width:].ravel(), gray[:, :width].ravel(),
                           gray[:, -width:].ravel()])


def _median(values: np.ndarray) -> int:
    """The (lower) median of uint8 values, from their histogram: np.median costs 20 us on 784 values."""
    return int(np.searchsorted(np.cumsum(np.bincount(values.ravel(), minlength=256)), (values.size + 1) // 2))


def _tight_dark_ink(gray: np.ndarray) -> bool:
    """A thick dark digit cropped tight to its ink: it may cover most of the image, but then the border is mostly
    paper, bright, and the ink touches all four edges. (Light ink on dark inside a light frame or margin has a
    bright border too, but nothing dark on its edges.)"""
    return _median(_border(gray)) >= 128 and all((edge < 128).any()
                                                 for edge in (gray[0], gray[-1], gray[:, 0], gray[:, -1]))


def is_mnist_like(gray: np.ndarray) -> bool:
    """28x28 with a dark border: already a digit in MNIST's form."""
    return gray.shape == (SIZE, SIZE) and _median(_border(gray)) < 32


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of uint8 values: the split that best separates two groups."""
    histogram = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    weights = np.cumsum(histogram)
    means = np.cumsum(histogram * np.arange(256))
    total, total_mean = weights[-1], means[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * weights - means * total) ** 2 / (weights * (total - weights))
    return float(np.nanargmax(between)) if np.isfinite(between).any() else 0.0


def mnist_digit(gray: np.ndarray, invert: str = "auto") -> np.ndarray:
    """A grayscale image (H, W) uint8 as an MNIST digit: (28, 28) uint8, light ink on black."""
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {INVERT_CHOICES}, not {invert!r}")
    if invert != "no" and not (gray.shape == (SIZE, SIZE) and (is_mnist_like(gray) or is_mnist_like(255 - gray))):
        gray = _paper(gray)  # (255 - gray of a big photo only for is_mnist_like to refuse its shape: not made)
    # Ink covers a minority of a digit's image, so the median pixel is paper: bright paper means dark ink.
    # (The border alone misleads on a photo of white paper on a dark table.)
    dark_ink = invert == "yes" or (invert == "auto" and (_median(gray) >= 128 or _tight_dark_ink(gray)))
    ink = (255 - gray) if dark_ink else gray
    if invert != "yes" and gray.shape == (SIZE, SIZE) and is_mnist_like(ink):
        return np.ascontiguousarray(ink, np.uint8)
    image = Image.fromarray(np.ascontiguousarray(ink, np.uint8))
    if max(image.size) > WORKING_SIZE:  # area-average big photos down first: less noise, less work
        factor = WORKING_SIZE / max(image.size)
        image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))),
                             Image.Resampling.BOX)
    ink = np.asarray(image, np.float32) - _background(image)
    np.clip(ink, 0, None, out=ink)
    if ink.max() <= 0:
        return np.zeros((SIZE, SIZE), np.uint8)
    ink *= 255.0 / ink.max()
    threshold = max(_otsu(ink.astype(np.uint8)) * 0.5, 25.0)  # faint specks and paper texture are not ink
    ink[ink < threshold] = 0
    mask = _without_frame(Image.fromarray((ink > 0).astype(np.uint8) * 255).filter(ImageFilter.MedianFilter(3)))
    ink[mask == FRAME] = 0
    rows, cols = np.nonzero(mask == 255)
    if rows.size == 0:
        rows, cols = np.nonzero(ink)
    crop = _thinned(ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
    height, width = crop.shape
    scale = INK_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    box = np.asarray(Image.fromarray(crop, "F").resize(size, Image.Resampling.LANCZOS))
    # MNIST's strokes are white (255) along their middle: the stroke level, the upper end of the ink's
    # values (a bright speck or a dimmer background subtracted must not set it), becomes 255.
    peak = box.max()
    if peak > 0:
        box = np.clip(box * (255.0 / np.percentile(box[box > 0.5 * peak], 90)), 0, 255)
    total = box.sum()
    if total <= 0:
        return np.zeros((SIZE, SIZE), np.uint8)
    ys, xs = np.indices(box.shape)
    centre_y, centre_x = (ys * box).sum() / total, (xs * box).sum() / total
    top = min(max(int(round(SIZE / 2 - centre_y)), 0), SIZE - box.shape[0])
    left = min(max(int(round(SIZE / 2 - centre_x)), 0), SIZE - box.shape[1])
    digit = np.zeros((SIZE, SIZE), np.float32)
    digit[top:top + box.shape[0], left:left + box.shape[1]] = box
    return np.round(digit).astype(np.uint8)


# A stroke's half-width, as a share of the ink's longer side: MNIST's digits, enlarged, have 0.05-0.10 (5th to 95th
# percentile; 0.07 typical), thick pens 0.13-0.20. Strokes over the limit are eroded to the target.
STROKE_LIMIT, STROKE_TARGET = 0.11, 0.10


def _thinned(crop: np.ndarray) -> np.ndarray:
    """The ink crop (float, 0 = none) with strokes much thicker than MNIST's eroded towards its width (and cropped
    again); others as they are. A stroke's half-width is the ink's area over its boundary pixels' count."""
    ink = crop > 0.5 * crop.max()
    padded = np.pad(ink, 1)
    boundary = ink & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    half_width, side = np.count_nonzero(ink) / max(np.count_nonzero(boundary), 1), max(crop.shape)
    radius = round(half_width - STROKE_TARGET * side)
    if half_width <= STROKE_LIMIT * side or radius < 1:
        return crop
    image = Image.fromarray(crop, "F")
    for _ in range(radius):  # a (2 radius + 1)-square minimum, in steps that each cost 9 reads a pixel
        image = image.filter(ImageFilter.MinFilter(3))
    thinned = np.asarray(image)
    rows, cols = np.nonzero(thinned > 0)
    if rows.size == 0:
        return crop
    return np.ascontiguousarray(thinned[rows.min():rows.max() + 1, cols.min():cols.max() + 1])


def _paper(gray: np.ndarray) -> np.ndarray:
    """A photo of light paper with a darker table (or desk, or floor) around it, cropped to the paper; other
    images as they are.

    The paper is the largest light region (split from the dark by Otsu's threshold, on a working-size copy):
    it is taken when it fills at least a fifth of the photo and three quarters of its own bounding box (paper
    is solid; chalk strokes on a blackboard are not), has something dark written on it, and the dark covers
    most of the photo's edge (the table around it; a digit's strokes touch the edge only here and there). The
    crop keeps the paper's inside, less a sliver at its edges, where the shadow of its rim lies."""
    if min(gray.shape) < 16:
        return gray
    factor = max(1, max(gray.shape) // WORKING_SIZE)
    small = gray[::factor, ::factor]
    light = small > _otsu(small)
    if light.mean() > 0.9 or np.count_nonzero(~_border(light)) < 0.6 * _border(light).size:
        return gray
    # The light region at the photo's middle: the paper, if there is one.
    ys, xs = np.nonzero(light)
    middle = (np.abs(ys - light.shape[0] / 2) < light.shape[0] / 4) & \
             (np.abs(xs - light.shape[1] / 2) < light.shape[1] / 4)
    if not middle.any():
        return gray
    regions = Image.fromarray(light.astype(np.uint8) * 255).copy()  # (a copy: fromarray's image is read-only)
    ImageDraw.floodfill(regions, (int(xs[middle][0]), int(ys[middle][0])), 128)
    rows, cols = np.nonzero(np.asarray(regions) == 128)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    box_area = (bottom - top) * (right - left)
    writing = np.count_nonzero(~light[top:bottom, left:right])  # the ink on the paper
    if rows.size < 0.2 * light.size or rows.size < 0.75 * box_area or box_area > 0.9 * light.size or \
            writing < 0.005 * box_area:
        return gray
    inset_y, inset_x = (bottom - top) // 20 + 1, (right - left) // 20 + 1
    return gray[(top + inset_y) * factor:(bottom - inset_y) * factor,
                (left + inset_x) * factor:(right - inset_x) * factor]


FRAME = 128  # mask value of ink regions that touch the border and are dropped


def _without_frame(mask: Image.Image) -> np.ndarray:
    """The ink mask (0/255) with regions touching the image border marked FRAME, when there is other ink.

    A table around the paper, the paper's edge or a form's box touches the border; a digit cropped
    tightly may too, so border regions are dropped only if enough ink (a fifth) lies inside."""
    marked = mask.copy()
    width, height = marked.size
    pixels = marked.load()
    border = [(x, y) for x in range(width) for y in (0, height - 1)] + \
             [(x, y) for y in range(height) for x in (0, width - 1)]
    for xy in border:
        if pixels[xy] == 255:
            ImageDraw.floodfill(marked, xy, FRAME)
    result = np.asarray(marked)
    inside, frame = np.count_nonzero(result == 255), np.count_nonzero(result == FRAME)
    return result if frame and inside >= 0.2 * (inside + frame) else np.asarray(mask)


def _background(image: Image.Image) -> np.ndarray:
    """The paper's brightness at each pixel (light ink on dark): a small thumbnail with the ink
    removed by a minimum filter, smoothed and scaled back up. Follows uneven lighting."""
    small = image.resize((max(1, min(16, image.width)), max(1, min(16, image.height))), Image.Resampling.BOX)
    small = small.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.BoxBlur(1))
    estimate = np.asarray(small.resize(image.size, Image.Resampling.BILINEAR), np.float32)
    # Where ink fills the thumbnail (a tight crop of a '1'), the estimate would be ink: cap it near the
    # median pixel, which is paper (ink is a minority), leaving room for uneven lighting.
    return np.minimum(estimate, _median(np.asarray(image)) + 20)


def load_image(source: str | Path | bytes | Image.Image, prep: Prep = Prep()) -> np.ndarray:
    """Any image source as one row of a network's input, (height * width * channels,) uint8 (Prep)."""
    image = open_image(source)
    if prep.kind == "digit":
        pixels = mnist_digit(grayscale(image), prep.invert)
        return resized(pixels, prep.height, prep.width).reshape(-1)
    pixels = colour(image) if prep.channels == 3 else grayscale(image)
    return resized(pixels, prep.height, prep.width).reshape(-1)


def load_digit(source: str | Path | bytes | Image.Image, invert: str = "auto") -> np.ndarray:
    """Any image source as an MNIST digit, (784,) uint8."""
    return load_image(source, Prep("digit", invert=invert))


def resized(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """A grayscale (H, W) or RGB (H, W, 3) image resized to height x width as it is (aspect not kept):
    area-averaged when shrinking, bicubic when growing."""
    if pixels.shape[:2] == (height, width):
        return pixels
    image = Image.fromarray(pixels)
    shrinking = image.width > width or image.height > height
    return np.asarray(image.resize((width, height), Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC))
