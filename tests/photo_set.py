"""Photo-like digits made from MNIST test images, for testing ``mlp predict``'s extraction.

Each photo is a real MNIST test digit drawn large in a grey pen on paper, then put through one
condition a phone camera meets (a lighting gradient, a vignette, a shadow, sensor noise, JPEG,
blur, an off-centre or slightly rotated digit) or several at once. Everything is computed from a
seed, so the set is the same on every run; no image is committed.

Run it as a script to measure a checkpoint per condition (the table of docs/results.md):

    python tests/photo_set.py runs/best/best.npz [--per 60] [--data-dir DIR]
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

Effect = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Photo:
    condition: str
    label: int
    gray: np.ndarray  # (H, W) float64 grey levels 0..255, dark ink on light paper


def draw_on_paper(digit: np.ndarray, rng: np.random.Generator, *, shift: float = 0.08,
                  angle: float = 4.0, pen: tuple[float, float] = (40.0, 90.0)) -> np.ndarray:
    """An MNIST digit (28, 28) drawn about 5-7x larger with a grey pen on light paper, placed at
    a random spot within ``shift`` of the centre and rotated by up to ``angle`` degrees."""
    from scipy import ndimage

    big = ndimage.zoom(digit.astype(np.float64) / 255.0, rng.uniform(5.0, 7.0), order=1)  # ink 0..1
    big = np.clip(ndimage.rotate(big, rng.uniform(-angle, angle), reshape=True, order=1), 0.0, 1.0)
    side = int(max(big.shape) * rng.uniform(1.4, 2.2))  # the 28 x 28 field fills 45-70% of the photo
    ink = np.zeros((side, side))
    top = int((side - big.shape[0]) / 2 + rng.uniform(-shift, shift) * side)
    left = int((side - big.shape[1]) / 2 + rng.uniform(-shift, shift) * side)
    top, left = np.clip(top, 0, side - big.shape[0]), np.clip(left, 0, side - big.shape[1])
    ink[top : top + big.shape[0], left : left + big.shape[1]] = big
    paper, pen_level = rng.uniform(200.0, 235.0), rng.uniform(*pen)
    return paper - ink * (paper - pen_level)  # (side, side)


def gradient(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light falling off across the page: 100% on one side, 45-60% on the other."""
    h, w = gray.shape
    theta = rng.uniform(0, 2 * np.pi)
    rows, cols = np.mgrid[0:h, 0:w]
    t = (np.cos(theta) * (cols / w - 0.5) + np.sin(theta) * (rows / h - 0.5)) / 0.71 + 0.5
    return gray * (1.0 - rng.uniform(0.4, 0.55) * np.clip(t, 0, 1))


def vignette(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Corners 40-55% darker than the centre, as with a phone lens."""
    h, w = gray.shape
    rows, cols = np.mgrid[0:h, 0:w]
    r2 = ((rows - h / 2) / (h / 2)) ** 2 + ((cols - w / 2) / (w / 2)) ** 2
    return gray * (1.0 - rng.uniform(0.2, 0.28) * r2)


def shadow(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft-edged shadow (a hand, a phone) over a third to a half of the page, 40% darker."""
    from scipy import ndimage

    h, w = gray.shape
    theta = rng.uniform(0, 2 * np.pi)
    rows, cols = np.mgrid[0:h, 0:w]
    t = np.cos(theta) * (cols / w - 0.5) + np.sin(theta) * (rows / h - 0.5)
    mask = ndimage.gaussian_filter((t > rng.uniform(0.0, 0.2)).astype(np.float64), 4.0)
    return gray * (1.0 - 0.4 * mask)


def noise(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise, Gaussian with sigma 18-24 grey levels."""
    return gray + rng.normal(0.0, rng.uniform(18.0, 24.0), gray.shape)


def blur(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Out of focus: a Gaussian blur of 2-3.5 pixels."""
    from scipy import ndimage

    return ndimage.gaussian_filter(gray, rng.uniform(2.0, 3.5))


def jpeg(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Saved as a JPEG of quality 15-40 and read back."""
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.round(gray), 0, 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=int(rng.integers(15, 41)))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("L"), dtype=np.float64)


# condition -> (how the digit is drawn, the effects applied in order)
CONDITIONS: dict[str, tuple[dict[str, float], tuple[Effect, ...]]] = {
    "clean scan": ({"shift": 0.0, "angle": 0.0}, ()),
    "grey pen": ({"shift": 0.0, "angle": 0.0}, ()),
    "off-centre, rotated": ({"shift": 0.2, "angle": 12.0}, ()),
    "lighting gradient": ({}, (gradient,)),
    "vignette": ({}, (vignette,)),
    "shadow": ({}, (shadow,)),
    "noise sigma 18-24": ({}, (noise,)),
    "JPEG q15-40": ({}, (jpeg,)),
    "blur": ({}, (blur,)),
    "gradient + noise + JPEG": ({}, (gradient, noise, jpeg)),
    "vignette + shadow + noise + JPEG": ({}, (vignette, shadow, noise, jpeg)),
    "everything": ({"shift": 0.15, "angle": 8.0}, (gradient, vignette, shadow, blur, noise, jpeg)),
}
PEN = {"clean scan": (0.0, 20.0), "grey pen": (110.0, 140.0)}  # default pen: 40-90


def photo_set(images: np.ndarray, labels: np.ndarray, per: int = 40, seed: int = 15) -> Iterator[Photo]:
    """``per`` photos for each condition, from MNIST test images (n, 28, 28) and their labels;
    condition c uses the test images c * per ... (c + 1) * per - 1, so no digit repeats."""
    for c, (name, (draw, effects)) in enumerate(CONDITIONS.items()):
        rng = np.random.default_rng([seed, c])
        for i in range(c * per, (c + 1) * per):
            gray = draw_on_paper(images[i], rng, pen=PEN.get(name, (40.0, 90.0)), **draw)
            for effect in effects:
                gray = effect(gray, rng)
            yield Photo(name, int(labels[i]), np.clip(gray, 0.0, 255.0))


def accuracy_by_condition(classify: Callable[[np.ndarray], int], photos: Iterator[Photo]) -> dict[str, float]:
    """Fraction right per condition (and "all"), with ``classify`` mapping a photo to a class."""
    right: dict[str, list[bool]] = {}
    for photo in photos:
        right.setdefault(photo.condition, []).append(classify(photo.gray) == photo.label)
    table = {name: float(np.mean(hits)) for name, hits in right.items()}
    table["all"] = float(np.mean([hit for hits in right.values() for hit in hits]))
    return table


def checkpoint_classifier(path: Path) -> Callable[[np.ndarray], int]:
    """A photo -> class function: the extraction ``mlp predict`` uses, then the checkpoint."""
    from mlp_cli.data.images import to_mnist
    from mlp_cli.data.preprocess import Preprocessing
    from mlp_cli.nn.network import forward
    from mlp_cli.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    prep = Preprocessing.from_dict(ckpt.meta["preprocessing"])

    def classify(gray: np.ndarray) -> int:
        try:
            pixels = to_mnist(gray)[0]
        except ValueError:
            return -1
        return int(forward(ckpt.params, prep.apply(pixels[None], ckpt.params.dtype)).argmax())

    return classify


def main(argv: list[str]) -> None:
    import argparse

    from mlp_cli.data.cache import load_dataset

    parser = argparse.ArgumentParser(description="Accuracy of a checkpoint on the photo-like set.")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--per", type=int, default=40, help="photos per condition")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    images, labels = load_dataset("mnist", "test", data_dir=args.data_dir)
    table = accuracy_by_condition(checkpoint_classifier(args.checkpoint),
                                  photo_set(np.asarray(images), np.asarray(labels), per=args.per))
    print("| condition | right |\n|---|---|")
    for name, value in table.items():
        print(f"| {name} | {100 * value:.1f}% |")


if __name__ == "__main__":
    main(sys.argv[1:])
