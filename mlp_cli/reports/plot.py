"""Figures: learning curves of one or more runs (matplotlib) and the first layer's weights.

``plot_curves`` draws two panels, loss and accuracy per epoch, with train dashed and dev solid
and one colour per run, so several runs (CS229 with and without L2, say) compare on the same
axes. matplotlib is the optional extra ``mlp[plot]``; it is imported inside the function, with
the non-interactive Agg backend, and its absence is a :class:`PlotError` saying how to install it.

``weights_grid`` needs only numpy: each hidden unit j owns one column W1[:, j] of 784 input
weights, which reshaped to 28 x 28 is the pattern of pixels that excites (red) or inhibits (blue)
that unit. Each tile is scaled by its own largest |w|, so white is always 0 and the strongest
weight of every unit is full colour. ``save_weights_image`` writes the grid with Pillow.

A network started from N(0, 1) weights (CS229) keeps most of its random start: 30 epochs add
a pattern of about 0.03 to weights of about 1, and the grid looks like noise. ``remove_initial``
subtracts the initial weights -- re-drawn from the checkpoint's seed exactly as training drew
them -- scaled by the factor c that best explains W1 (least squares, c = <W1, W0> / <W0, W0>):
about 1 without L2, and the accumulated decay prod (1 - 2 eta lambda) with it (0.22 for the
CS229 L2 run). What remains is what training added.

Every file is rendered in memory and written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlp_cli.atomic import write_output_file
from mlp_cli.errors import MlpError, UsageError

if TYPE_CHECKING:
    from mlp_cli.training.checkpoint import Checkpoint

FIGURE_FORMATS = ("png", "svg", "pdf")
IMAGE_FORMATS = ("png",)
# from a checkout (the tool is not on PyPI): the extra of the project in the current directory
INSTALL_HINT = "pip install -e '.[plot]' (in the mlp checkout), or pip install matplotlib"


class PlotError(MlpError):
    """A figure cannot be made (matplotlib missing, nothing to plot)."""


@dataclass(frozen=True)
class RunCurves:
    """The per-epoch metrics of one run, as plotted."""

    label: str
    epochs: list[int]
    train_loss: list[float]
    train_accuracy: list[float]
    dev_loss: list[float | None]
    dev_accuracy: list[float | None]
    changes: list[tuple[int, str]] = field(default_factory=list)  # (epoch, "lr 5 -> 1"), resumes

    @classmethod
    def from_rows(cls, label: str, rows: Sequence[dict[str, Any]]) -> RunCurves:
        if not rows:
            raise PlotError(f"run {label} has no epochs recorded yet")
        return cls(
            label=label,
            epochs=[int(r["epoch"]) for r in rows],
            train_loss=[float(r["train_loss"]) for r in rows],
            train_accuracy=[float(r["train_accuracy"]) for r in rows],
            dev_loss=[r.get("dev_loss") for r in rows],
            dev_accuracy=[r.get("dev_accuracy") for r in rows],
            changes=[(int(r["epoch"]), describe_changes(r["changes"]))
                     for r in rows if isinstance(r.get("changes"), dict)],
        )

    @property
    def has_dev(self) -> bool:
        return any(v is not None for v in self.dev_accuracy)


def describe_changes(changes: dict[str, Any]) -> str:
    """{"optimizer.lr": [5.0, 1.0]} -> "lr 5 -> 1" (the key's last part; at most three)."""
    parts = []
    for key, values in list(changes.items())[:3]:
        old, new = values if isinstance(values, list) and len(values) == 2 else ("?", "?")
        parts.append(f"{str(key).split('.')[-1]} {old:g} -> {new:g}" if _numbers(old, new) else f"{key}")
    return ", ".join(parts)


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def output_format(path: str | Path, allowed: tuple[str, ...] = FIGURE_FORMATS) -> str:
    """The file format named by ``path``'s suffix; UsageError if it is not one of ``allowed``."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in allowed:
        raise UsageError(
            f"cannot write {path}: the file name must end in {' or '.join('.' + f for f in allowed)}"
        )
    return suffix


def import_pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or PlotError telling how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise PlotError(f"plotting needs matplotlib, which is not installed; install it with: {INSTALL_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    runs: Sequence[RunCurves], out: str | Path, *, title: str | None = None, dpi: int = 100
) -> Path:
    """Write the learning curves of ``runs`` to ``out`` (.png, .svg or .pdf), atomically."""
    out = Path(out)
    fmt = output_format(out)
    plt = import_pyplot()
    fig = curves_figure(runs, title=title, dpi=dpi)
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt)
    finally:
        plt.close(fig)
    write_output_file(out, buffer.getvalue(), PlotError)
    return out


def curves_figure(runs: Sequence[RunCurves], *, title: str | None = None, dpi: int = 100) -> Any:
    """A matplotlib Figure (11 x 4.2 inches): loss (left) and accuracy in percent (right, as the
    CLI prints it) per epoch; train dashed, dev solid; one colour per run; one legend, to the
    right of the curves, never over them. The caller closes it."""
    if not runs:
        raise PlotError("no runs to plot")
    plt = import_pyplot()
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=dpi)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        colour = colours[i % len(colours)]
        for ax, train, dev in ((loss_ax, run.train_loss, run.dev_loss),
                               (acc_ax, run.train_accuracy, run.dev_accuracy)):
            ax.plot(run.epochs, train, linestyle="--", color=colour, label=f"{run.label} train")
            if run.has_dev:
                ax.plot(run.epochs, [np.nan if v is None else v for v in dev], linestyle="-",
                        color=colour, label=f"{run.label} dev")
            for epoch, what in run.changes:  # a resume changed settings from this epoch on
                ax.axvline(epoch - 0.5, color=colour, linestyle=":", linewidth=1)
                ax.annotate(what, (epoch - 0.5, 1), xycoords=("data", "axes fraction"), rotation=90,
                            va="top", ha="right", fontsize="x-small", color=colour)
    for ax, name in ((loss_ax, "loss (cross-entropy)"), (acc_ax, "accuracy (%)")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    acc_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))  # the data stay fractions
    acc_ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    loss_ax.set_title("Loss")
    acc_ax.set_title("Accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def write_png(picture: np.ndarray, out: Path) -> None:
    """The tool's one PNG writer: a uint8 picture, grey (H, W) or RGB (H, W, 3)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    write_output_file(out, buffer.getvalue(), PlotError)


# --------------------------------------------------------------------------------------------
# First-layer weights


def weights_grid(
    W1: np.ndarray, *, columns: int | None = None, scale: int = 2, gap: int = 2
) -> np.ndarray:
    """An RGB uint8 image (H, W, 3) of the columns of W1 (784, h), each as a 28 x 28 tile.

    Tiles run left to right, top to bottom in unit order; ``columns`` defaults to about
    sqrt(h) x 4/3 (landscape); each pixel is ``scale`` x ``scale``; ``gap`` pixels of grey
    separate the tiles."""
    W1 = np.asarray(W1, dtype=np.float64)
    d, h = W1.shape
    side = math.isqrt(d)
    if side * side != d:
        raise ValueError(f"W1 has {d} rows, not a square image")
    columns = columns or max(1, min(h, math.ceil(math.sqrt(h * 4 / 3))))
    rows = math.ceil(h / columns)
    tile = side * scale
    height, width = rows * (tile + gap) + gap, columns * (tile + gap) + gap
    canvas = np.full((height, width, 3), 160, dtype=np.uint8)
    peak = np.abs(W1).max(axis=0)  # (h,)
    normalised = W1 / np.where(peak > 0, peak, 1.0)  # (d, h), in [-1, 1]
    for j in range(h):
        r, c = divmod(j, columns)
        image = diverging(normalised[:, j].reshape(side, side))  # (28, 28, 3)
        image = image.repeat(scale, axis=0).repeat(scale, axis=1)
        top, left = gap + r * (tile + gap), gap + c * (tile + gap)
        canvas[top : top + tile, left : left + tile] = image
    return canvas


def diverging(values: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] -> RGB uint8: blue (-1), white (0), red (+1)."""
    v = np.clip(values, -1.0, 1.0)[..., None]  # (..., 1)
    white = np.array([255.0, 255.0, 255.0])
    red, blue = np.array([178.0, 24.0, 43.0]), np.array([33.0, 102.0, 172.0])
    rgb = np.where(v >= 0, white + v * (red - white), white - v * (blue - white))
    return np.round(rgb).astype(np.uint8)


def initial_weights(checkpoint: Checkpoint) -> np.ndarray:
    """W1 (784, h) float64 as the checkpoint's run initialised it, re-drawn from its seed."""
    from mlp_cli.nn.network import init_params

    scheme = checkpoint.meta.get("rng", {}).get("init")
    if scheme != "default_rng(seed)":
        raise PlotError(f"the checkpoint does not say how its initial weights were drawn (rng.init = {scheme!r})")
    try:
        seed, init = int(checkpoint.config["train"]["seed"]), checkpoint.config["model"]["init"]
        return init_params(checkpoint.params.hidden, np.random.default_rng(seed), init, "float64").W1
    except (KeyError, TypeError, ValueError) as err:
        raise PlotError(f"cannot re-draw the checkpoint's initial weights: {err}") from None


def remove_initial(W1: np.ndarray, W1_init: np.ndarray) -> tuple[np.ndarray, float]:
    """(W1 - c W1_init, c) with c = <W1, W1_init> / <W1_init, W1_init>: the part of W1 that its
    (scaled) random start does not explain."""
    W1, W1_init = np.asarray(W1, dtype=np.float64), np.asarray(W1_init, dtype=np.float64)
    norm = float(np.vdot(W1_init, W1_init))
    c = float(np.vdot(W1, W1_init)) / norm if norm > 0 else 0.0
    return W1 - c * W1_init, c


def save_weights_image(
    W1: np.ndarray, out: str | Path, *, columns: int | None = None, scale: int = 2
) -> tuple[Path, tuple[int, int]]:
    """Write the weights grid as a PNG; return the path and the image's (width, height)."""
    out = Path(out)
    output_format(out, IMAGE_FORMATS)
    grid = weights_grid(W1, columns=columns, scale=scale)
    write_png(grid, out)
    return out, (grid.shape[1], grid.shape[0])
