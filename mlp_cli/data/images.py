"""The user's own images: read from disk, then made to look like the dataset's images.

Reading (``read_grayscale``) turns any file Pillow decodes into grey levels: colour photos,
palettes, 16-bit images, alpha (a transparent background is composited over white, or over black
when white leaves no contrast, i.e. white ink on transparency), with a phone's EXIF rotation
honoured. Finding the digit in those grey levels and giving it MNIST's size and position is
``mlp_cli.data.extract`` (background removal, denoising, Otsu's threshold, connected strokes, the
20 x 20 box and the centre of mass).

The result is uint8 (28, 28); the checkpoint's own preprocessing (``Preprocessing.apply``) turns
it into the network's input, exactly as for the dataset's images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlp_cli.data.extract import extract
from mlp_cli.errors import MissingFileError, MlpError

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
    notes: list[str] = field(default_factory=list)  # why the extraction may be poor


def load_digit(path: str | Path, style: str = "digit") -> Digit:
    """Read an image file and make it dataset-like (``style``: "digit" for MNIST, "object" for
    Fashion-MNIST); ImageError naming the file on failure."""
    path = Path(path)
    gray, size = read_grayscale(path)
    try:
        found = extract(gray, style)
    except ValueError as err:
        raise ImageError(f"image {path}: {err}") from None
    return Digit(path=path, size=size, inverted=found.inverted, pixels=found.pixels, notes=found.notes)


FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # raster formats Pillow decodes itself
MAX_PIXELS = 24_000_000  # after JPEG draft reduction: a 6000 x 4000 photo, ~1 GB to process
DRAFT_SIDE = 1024  # large JPEGs are decoded at 1/2, 1/4 or 1/8 scale, no smaller than this


def read_grayscale(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """(float64 (H, W) grey levels in 0..255, (width, height)) of a PNG, JPEG, BMP, GIF, TIFF or
    WebP file. Never another format (EPS would run Ghostscript), never a file that is not a
    regular one, never more than MAX_PIXELS decoded: the size is read from the header first."""
    import os
    import stat
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise MissingFileError(f"image {path} not found")
    if path.is_dir():
        raise MissingFileError(f"image {path} is a directory, not an image file")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageError(f"image {path} is not a regular file")
        with warnings.catch_warnings():  # Pillow warns of sizes _bound refuses itself, in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path, formats=FORMATS)
        with opened:
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
        if not np.isfinite(values).all():  # a float TIFF can hold them: no grey level to scale
            raise ValueError("it holds pixel values that are not finite numbers (NaN or infinity)")
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


def to_mnist(gray: np.ndarray, style: str = "digit") -> tuple[np.ndarray, bool]:
    """Grey levels (H, W) -> (uint8 (28, 28) white-on-black image, whether it was inverted);
    the extraction itself is ``mlp_cli.data.extract``. Raises ValueError when there is no digit."""
    result = extract(gray, style)
    return result.pixels, result.inverted
