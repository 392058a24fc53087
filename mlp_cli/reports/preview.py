"""Pictures of what augmentation does (``mlp augment-preview``): originals above their distorted
versions, as a grey grid for the terminal or a PNG (written by reports.plot's one PNG writer)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlp_cli.data.augment import augment
from mlp_cli.errors import UsageError
from mlp_cli.reports.plot import write_png

if TYPE_CHECKING:
    from mlp_cli.config import AugmentConfig


def preview_pairs(
    images: np.ndarray, settings: AugmentConfig, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """n images picked at random from ``images`` (N, H, W) and their distorted versions, both
    uint8 (n, H, W). The settings apply as if ``enabled`` were true: a preview shows what
    switching them on would do. The same seed picks and distorts the same images."""
    if not 1 <= n <= len(images):
        raise UsageError(f"cannot preview {n} images out of {len(images)}; expected 1 to {len(images)}")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(images), size=n, replace=False))  # (n,)
    originals = np.asarray(images[picked])
    distorted = augment(originals, dataclasses.replace(settings, enabled=True), rng)
    return originals.astype(np.uint8), np.clip(np.rint(distorted), 0, 255).astype(np.uint8)


def grid_image(rows: list[np.ndarray], gap: int = 2, fill: int = 0) -> np.ndarray:
    """Image rows (each (n, H, W) uint8) side by side: one uint8 picture of
    (len(rows) H + (len(rows) - 1) gap, n W + (n - 1) gap), gaps filled with ``fill``."""
    tiles = np.stack(rows)  # (R, n, H, W)
    R, n, H, W = tiles.shape
    padded = np.full((R, n, H + gap, W + gap), fill, dtype=np.uint8)
    padded[:, :, :H, :W] = tiles  # each tile with its gap below and to the right
    canvas = padded.transpose(0, 2, 1, 3).reshape(R * (H + gap), n * (W + gap))
    return canvas[: R * (H + gap) - gap, : n * (W + gap) - gap]


def save_png(picture: np.ndarray, out: str | Path, scale: int = 4) -> tuple[int, int]:
    """Write a grey uint8 picture as a PNG, each pixel a ``scale`` x ``scale`` square; returns
    its (width, height)."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"cannot write {out}: the file name must end in .png")
    big = picture.repeat(scale, axis=0).repeat(scale, axis=1)
    write_png(big, out)
    return big.shape[1], big.shape[0]
