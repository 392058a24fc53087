"""The user's own digit images, made to look like MNIST digits.

MNIST's digits were size-normalised to fit a 20 x 20 box keeping their aspect ratio
(anti-aliased, hence grey levels), then placed in a 28 x 28 field so that their centre of mass
sits at the centre. White ink (255) on black (0). ``to_mnist`` repeats that recipe for any
picture of one digit:

1. grayscale (colour photos, palettes, alpha: a transparent background is composited over white,
   or over black when white leaves no contrast, i.e. white ink on transparency);
2. the background level is the median of the border pixels; a light background means dark ink on
   light paper, and the image is inverted;
3. the background level is subtracted and the contrast stretched so the darkest ink becomes 255;
   faint noise (under 10 % of full ink) becomes 0, as MNIST's background is exactly 0;
4. cropped to the bounding box of the ink;
5. scaled (Lanczos) so the larger side is 20 pixels, keeping the aspect ratio;
6. pasted into 28 x 28 with its centre of mass at pixel (14, 14) -- where MNIST's average centre
   of mass lies -- shifted back inside the frame if the digit would stick out.

The result is uint8 (28, 28); the checkpoint's own preprocessing (``Preprocessing.apply``) turns
it into the network's input, exactly as for the dataset's images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlp_cli.errors import MissingFileError, MlpError
from mlp_cli.nn.network import IMAGE_SIDE

SIDE = IMAGE_SIDE  # the MNIST field
BOX = 20  # the digit's larger side after scaling
CENTRE = 14.0  # MNIST's mean centre of mass (row, column), in pixel indices
NOISE = 0.1  # ink below this fraction of full ink is background
MIN_CONTRAST = 24.0  # grey levels between background and ink below which the image is blank


class ImageError(MlpError):
    """An input image is unreadable, or has no digit in it (a missing one is a MissingFileError)."""


@dataclass(frozen=True)
class Digit:
    """An image file made MNIST-like."""

    path: Path
    size: tuple[int, int]  # the original (width, height)
    inverted: bool  # dark ink on a light background was inverted
    pixels: np.ndarray  # (28, 28) uint8, white ink on black


def load_digit(path: str | Path) -> Digit:
    """Read an image file and normalise it like MNIST; ImageError naming the file on failure."""
    path = Path(path)
    gray, size = read_grayscale(path)
    try:
        pixels, inverted = to_mnist(gray)
    except ValueError as err:
        raise ImageError(f"image {path}: {err}") from None
    return Digit(path=path, size=size, inverted=inverted, pixels=pixels)


FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # raster formats Pillow decodes itself
MAX_PIXELS = 24_000_000  # after JPEG draft reduction: a 6000 x 4000 photo, ~1 GB to process
DRAFT_SIDE = 1024  # large JPEGs are decoded at 1/2, 1/4 or 1/8 scale, no smaller than this


def read_grayscale(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """(float64 (H, W) grey levels in 0..255, (width, height)) of a PNG, JPEG, BMP, GIF, TIFF or
    WebP file. Never another format (EPS would run Ghostscript), never a file that is not a
    regular one, never more than MAX_PIXELS decoded: the size is read from the header first."""
    import os
    import stat

    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise MissingFileError(f"image {path} not found")
    if path.is_dir():
        raise MissingFileError(f"image {path} is a directory, not an image file")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageError(f"image {path} is not a regular file")
        with Image.open(path, formats=FORMATS) as opened:
            original_width = opened.size[0]
            _bound(opened, path)
            opened.load()
            image = ImageOps.exif_transpose(opened) or opened  # phone photos: honour the rotation
            gray = _grayscale(image)
            factor = original_width / opened.size[0]  # 1, or what JPEG draft mode divided by
            size = (round(image.size[0] * factor), round(image.size[1] * factor))
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image file mlp reads (PNG, JPEG, BMP, GIF, TIFF or WebP)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"image {path} is too large to open safely") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated or corrupt files
        reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise ImageError(f"image {path} cannot be read: {reason}") from None
    if gray.size == 0:
        raise ImageError(f"image {path} is empty")
    return gray, size


def _bound(image: Any, path: Path) -> None:
    """Refuse, from the header alone, an image too large to decode; reduce a large JPEG."""
    width, height = image.size
    if image.format == "JPEG" and width * height > DRAFT_SIDE * DRAFT_SIDE:
        image.draft("L", (DRAFT_SIDE, DRAFT_SIDE))  # the DCT decodes at a fraction of the size
        width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"image {path} is {width} x {height} pixels, more than the "
            f"{MAX_PIXELS // 1_000_000} megapixels mlp decodes; scale it down first"
        )


def _grayscale(image: Any) -> np.ndarray:
    """Grey levels 0..255 as float64 (H, W), whatever the mode."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16-bit and float images
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 255.0)
        return values * (255.0 / top) if top > 255.0 else values
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.float64)
    rgba = image.convert("RGBA")
    gray = _composite(rgba, (255, 255, 255, 255))
    if np.ptp(gray) < MIN_CONTRAST:  # light ink on transparency: nothing shows over white
        gray = _composite(rgba, (0, 0, 0, 255))
    return gray


def _composite(rgba: Any, background: tuple[int, int, int, int]) -> np.ndarray:
    from PIL import Image

    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, background), rgba)
    return np.asarray(flat.convert("L"), dtype=np.float64)


def to_mnist(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """Grey levels (H, W) -> (uint8 (28, 28) white-on-black digit, whether it was inverted).

    Raises ValueError when there is no digit (no contrast)."""
    from PIL import Image

    gray = np.asarray(gray, dtype=np.float64)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    inverted = background > 127.5
    if inverted:  # dark ink on light paper
        gray, background = 255.0 - gray, 255.0 - background
    ink_level = float(gray.max())
    if ink_level - background < MIN_CONTRAST:
        raise ValueError("no digit found (the image is blank or has almost no contrast)")
    ink = np.clip((gray - background) / (ink_level - background), 0.0, 1.0)  # (H, W) in [0, 1]
    ink[ink < NOISE] = 0.0

    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # the digit's bounding box
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # PIL: (width, height)
    patch_image = Image.fromarray(np.round(crop * 255).astype(np.uint8)).resize(
        size, Image.Resampling.LANCZOS
    )
    patch = np.asarray(patch_image, dtype=np.float64)  # (h', w'), larger side 20

    total = patch.sum()
    if total <= 0:  # a speck that vanished in scaling
        raise ValueError("no digit found (the ink is too faint or too small)")
    cy = float(np.arange(patch.shape[0]) @ patch.sum(axis=1)) / total
    cx = float(np.arange(patch.shape[1]) @ patch.sum(axis=0)) / total
    top = int(np.clip(round(CENTRE - cy), 0, SIDE - patch.shape[0]))
    left = int(np.clip(round(CENTRE - cx), 0, SIDE - patch.shape[1]))
    field = np.zeros((SIDE, SIDE), dtype=np.uint8)
    field[top : top + patch.shape[0], left : left + patch.shape[1]] = np.clip(np.round(patch), 0, 255)
    return field, inverted
