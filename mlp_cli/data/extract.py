"""Finding the digit (or the garment) in a picture, the way a document scanner would, and
making it look like the dataset's own images.

A phone photo of a digit is not a scan: the light falls off across the page, the lens darkens
the corners, a hand casts a shadow, the sensor adds noise and JPEG adds blocks. A fixed threshold
then keeps a few specks of the digit, or half the page. So, on grey levels (H, W):

1. shrink large photos to at most ``WORK_SIDE`` pixels (bounded time; MNIST needs 20);
2. estimate the paper: a median filter much wider than a stroke, computed on a small copy and
   smoothed back to full size, follows gradients, vignettes and shadows but not the ink;
3. the ink is what differs from the paper; its sign says whether the ink is darker than the
   paper (then ``inverted``), by which tail of the difference is longer;
4. denoise with a Gaussian about a stroke's width wide, measure the noise (median absolute
   deviation), and choose the ink by Otsu's threshold, never below four noise deviations;
5. keep the digit: connected strokes (8-connectivity) near the largest one; drop specks and
   anything touching the border (the page's edge, the table) unless nothing else is left;
6. MNIST's own normalisation: the ink's grey levels (so the strokes stay anti-aliased) cropped
   to its box, scaled so the larger side is 20 pixels, placed in 28 x 28 with the centre of mass
   at the centre. For clothes (Fashion-MNIST) the whole object is kept, its holes filled, scaled
   so its larger side is 28 and centred by its box, as Zalando made that dataset.

Every step returns notes on what went wrong (faint ink, noise, a border cut) so that
``mlp predict`` can say when its answer rests on a poor extraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlp_cli.nn.network import IMAGE_SIDE

SIDE = IMAGE_SIDE  # the MNIST field
BOX = 20  # the digit's larger side after scaling
CENTRE = 14.0  # MNIST's mean centre of mass (row, column), in pixel indices
WORK_SIDE = 400  # larger photos are shrunk to this before any filtering
MIN_CONTRAST = 24.0  # grey levels between paper and ink below which the image is blank
NOISE_DEVIATIONS = 4.0  # the ink threshold is at least this many noise deviations
SPECK = 0.03  # components under this fraction of the largest one's ink are specks
DARK_INK_ODDS = 0.8  # the ink is taken as dark unless the light tail is 1.25x the dark one
NEAR = 0.35  # strokes further than this fraction of the digit's size from it are dropped


@dataclass(frozen=True)
class Extraction:
    """A picture made dataset-like, and how much to trust it."""

    pixels: np.ndarray  # (28, 28) uint8, white ink on black
    inverted: bool  # the ink was darker than the paper
    notes: list[str] = field(default_factory=list)  # why the extraction may be poor


def extract(gray: np.ndarray, style: str = "digit") -> Extraction:
    """Grey levels (H, W) in 0..255 -> the dataset-like (28, 28) image.

    ``style`` is "digit" (MNIST: strokes, 20 px box, centre of mass) or "object"
    (Fashion-MNIST: the whole item, 28 px, centred by its box). Raises ValueError when there is
    no digit (no contrast, or nothing left after the specks are dropped)."""
    notes: list[str] = []
    gray = _shrink(np.asarray(gray, dtype=np.float64))
    ink, inverted = _ink(gray) if style == "digit" else _object_ink(gray)  # (h, w), ink bright
    if float(ink.max()) < MIN_CONTRAST:
        raise ValueError("no digit found (the image is blank or has almost no contrast)")
    smooth, threshold, contrast = _threshold(ink, notes)
    keep = _keep(smooth > threshold, smooth, style, notes)  # (h, w) bool
    floor, level = threshold / 2, float(np.percentile(smooth[keep], 90))
    values = np.clip((smooth - floor) / max(level - floor, 1e-9), 0.0, 1.0) * _near(keep)  # (h, w) in [0, 1]
    if contrast < 2 * NOISE_DEVIATIONS:  # on the photo set: 2% of the right answers, a few wrong ones
        notes.append(f"the ink stands only {contrast:.1f} noise deviations above the paper")
    pixels = _fit_digit(values) if style == "digit" else _fit_object(values)
    return Extraction(pixels, inverted, notes)


def _shrink(gray: np.ndarray) -> np.ndarray:
    """The photo at most WORK_SIDE pixels on its larger side (area-averaged)."""
    from PIL import Image

    h, w = gray.shape
    factor = WORK_SIDE / max(h, w)
    if factor >= 1.0:
        return gray
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    image = Image.fromarray(gray.astype(np.float32), mode="F").resize(size, Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float64)


def _ink(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """(denoised ink map (H, W), the paper at 0 give or take the noise, whether the ink is darker than the
    paper). The coarse paper decides which side the ink is on and how wide its strokes are; a
    grey closing (opening for light ink) a little wider than the strokes then gives the paper
    at full resolution: it removes the strokes and keeps a shadow's sharp edge where it is."""
    from scipy import ndimage

    sigma = min(gray.shape) / 250.0  # about a fifth of a photo's stroke width: noise, JPEG blocks
    smooth = ndimage.gaussian_filter(gray, sigma) if sigma >= 0.5 else gray
    coarse = _coarse_paper(smooth)
    inverted = _dark_ink(smooth, coarse)
    sign = -1.0 if inverted else 1.0
    size = int(1.5 * _stroke_width(np.maximum(sign * (smooth - coarse), 0.0))) + 3  # a crossing fits
    close = ndimage.grey_closing if inverted else ndimage.grey_opening
    paper = close(smooth, size=size, mode="nearest")
    ink = _flat_field(smooth, paper) if inverted else smooth - paper
    ink = sign * ink
    return ink - float(np.median(ink)), inverted


def _object_ink(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """Like ``_ink`` for a garment photographed on a plain background: the object is no thin
    stroke but most of the picture, so the background is one level, that of the border."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    inverted = _dark_ink(gray, np.full_like(gray, float(np.median(border))))
    ink = (float(np.median(border)) - gray) if inverted else (gray - float(np.median(border)))
    return ink, inverted


def _dark_ink(gray: np.ndarray, paper: np.ndarray) -> bool:
    """Whether the ink is darker than the paper: the longer tail of the difference from the
    paper is the ink's side. Shadow edges and vignettes add tails on both sides; when the two
    are close, dark ink on light paper (the usual photo) wins."""
    low, high = np.percentile(gray - paper, [0.5, 99.5])
    return bool(-low > DARK_INK_ODDS * high)


def _flat_field(gray: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """How far each pixel is from light paper (H, W), in grey levels of evenly lit paper: light
    multiplies the page's reflectance, so ink in a shadow gets the contrast of ink in full light."""
    level = float(np.median(paper))
    return (gray - paper) * (level / np.maximum(paper, max(0.2 * level, 1.0)))


def _stroke_width(ink: np.ndarray) -> int:
    """The strokes' width in pixels: twice the largest distance from an ink pixel to the paper."""
    from scipy import ndimage

    mask = ink > otsu(ink)
    if not mask.any():
        return 1
    inside = ndimage.distance_transform_edt(mask)[mask]
    return int(np.clip(2 * np.percentile(inside, 99), 1, min(ink.shape) / 2))


def _coarse_paper(gray: np.ndarray) -> np.ndarray:
    """The paper's grey level at every pixel (H, W): a median over half the page on a small
    copy, so that strokes (a few percent of the page) do not pull it, zoomed back to full size."""
    from scipy import ndimage

    h, w = gray.shape
    step = max(1, max(h, w) // 48)
    small = gray[: h - h % step or h, : w - w % step or w]
    small = small.reshape(small.shape[0] // step, step, small.shape[1] // step, step).mean(axis=(1, 3))
    size = max(3, (min(small.shape) // 2) | 1)
    background = ndimage.median_filter(small, size=size, mode="nearest")
    background = ndimage.gaussian_filter(background, 1.0, mode="nearest")  # no blocks when zoomed
    zoom = (h / background.shape[0], w / background.shape[1])
    full = ndimage.zoom(background, zoom, order=1, mode="nearest", grid_mode=True)[:h, :w]
    return np.pad(full, ((0, h - full.shape[0]), (0, w - full.shape[1])), mode="edge")


def _threshold(ink: np.ndarray, notes: list[str]) -> tuple[np.ndarray, float, float]:
    """(the ink map clipped at 0, its threshold, the ink's contrast in noise deviations)."""
    noise = 1.4826 * float(np.median(np.abs(ink)))  # the paper's deviation (ink is a minority)
    smooth = np.maximum(ink, 0.0)
    top = float(smooth.max())
    threshold = max(otsu(smooth), NOISE_DEVIATIONS * noise, 0.15 * top)
    contrast = top / noise if noise > 0 else float("inf")
    if (smooth > threshold).mean() > 0.4:
        notes.append("more than 40% of the picture looks like ink")
    return smooth, threshold, contrast


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the level that maximises the variance between the two classes."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts).astype(np.float64)  # pixels at or below each level
    total = weight[-1]
    mass = np.cumsum(counts * centres)
    below_mean = mass / np.maximum(weight, 1)
    above_mean = (mass[-1] - mass) / np.maximum(total - weight, 1)
    between = weight * (total - weight) * (below_mean - above_mean) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def _keep(mask: np.ndarray, ink: np.ndarray, style: str, notes: list[str]) -> np.ndarray:
    """The digit's strokes in ``mask`` (H, W): the largest connected component by ink, and the
    others that are no specks and lie near it; whatever touches the border only when nothing
    else is left. Objects (``style`` "object") have their holes filled."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        raise ValueError("no digit found (the ink is too faint or too small)")
    ids = np.arange(1, count + 1)
    mass = np.asarray(ndimage.sum_labels(ink, labels, ids))  # (count,)
    solid = mass >= SPECK * mass.max()
    edge = np.zeros(count + 1, dtype=bool)
    edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    inside = solid & ~edge[1:]
    if not inside.any():
        inside = solid
        notes.append("the digit touches the picture's edge")
    boxes = ndimage.find_objects(labels)
    chosen = _near_components(boxes, mass, inside)
    dropped = mass[inside & ~chosen].sum()
    if dropped > 0.25 * mass[chosen].sum():
        notes.append("other marks than the digit were dropped")
    keep = chosen[np.maximum(labels - 1, 0)] & (labels > 0)
    return ndimage.binary_fill_holes(keep) if style == "object" else keep


def _near_components(boxes: list, mass: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Which components (bool (count,)) make the digit: the heaviest candidate, then, heaviest
    first, each candidate whose box lies within NEAR of the digit's box so far."""
    chosen = np.zeros(len(mass), dtype=bool)
    order = [int(i) for i in np.argsort(-mass, kind="stable") if candidates[i]]
    top, left, bottom, right = _box(boxes[order[0]])
    chosen[order[0]] = True
    for i in order[1:]:
        t, l, b, r = _box(boxes[i])
        reach = NEAR * max(bottom - top, right - left)
        if t < bottom + reach and b > top - reach and l < right + reach and r > left - reach:
            chosen[i] = True
            top, left, bottom, right = min(top, t), min(left, l), max(bottom, b), max(right, r)
    return chosen


def _box(slices: tuple[slice, slice]) -> tuple[int, int, int, int]:
    return slices[0].start, slices[1].start, slices[0].stop, slices[1].stop


def _near(keep: np.ndarray) -> np.ndarray:
    """The kept strokes widened by a pixel or two (float (H, W)), so their soft edges stay."""
    from scipy import ndimage

    reach = max(1, min(keep.shape) // 150)
    return ndimage.binary_dilation(keep, iterations=reach).astype(np.float64)


def _resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``values`` (H, W) in [0, 1] resampled (Lanczos, anti-aliased) to ``size`` = (width, height)."""
    from PIL import Image

    image = Image.fromarray(values.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)


def _crop(values: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(values.any(axis=1)), np.flatnonzero(values.any(axis=0))
    if rows.size == 0:
        raise ValueError("no digit found (the ink is too faint or too small)")
    return values[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _fit_digit(values: np.ndarray) -> np.ndarray:
    """MNIST's normalisation: the ink's box scaled to a larger side of 20, placed in 28 x 28
    with its centre of mass at (14, 14) (shifted back inside if it would stick out)."""
    crop = _crop(values)
    height, width = crop.shape
    scale = BOX / max(height, width)
    patch = _resize(crop, (max(1, round(width * scale)), max(1, round(height * scale))))
    total = patch.sum()
    if total <= 0:  # a speck that vanished in scaling
        raise ValueError("no digit found (the ink is too faint or too small)")
    cy = float(np.arange(patch.shape[0]) @ patch.sum(axis=1)) / total
    cx = float(np.arange(patch.shape[1]) @ patch.sum(axis=0)) / total
    top = int(np.clip(round(CENTRE - cy), 0, SIDE - patch.shape[0]))
    left = int(np.clip(round(CENTRE - cx), 0, SIDE - patch.shape[1]))
    return _place(patch, top, left)


def _fit_object(values: np.ndarray) -> np.ndarray:
    """Fashion-MNIST's normalisation: the object's box scaled to a larger side of 28, centred."""
    crop = _crop(values)
    height, width = crop.shape
    scale = SIDE / max(height, width)
    patch = _resize(crop, (max(1, round(width * scale)), max(1, round(height * scale))))
    return _place(patch, (SIDE - patch.shape[0]) // 2, (SIDE - patch.shape[1]) // 2)


def _place(patch: np.ndarray, top: int, left: int) -> np.ndarray:
    field = np.zeros((SIDE, SIDE), dtype=np.uint8)
    field[top : top + patch.shape[0], left : left + patch.shape[1]] = np.round(255 * patch)
    return field
