"""`mlp plot`: learning curves to an image file or the terminal, and the first layer's weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlp_cli.cli.app import app
from mlp_cli.errors import UsageError

if TYPE_CHECKING:  # matplotlib-free, but numpy: keep it out of `mlp --help`
    from mlp_cli.reports.plot import RunCurves

EXAMPLES_PLOT = """
Examples:

  mlp plot runs/cs229 --out curves.png

  mlp plot runs/cs229 runs/cs229-l2 --out compare.svg --title "CS229: without and with L2"

  mlp plot --terminal runs/cs229

  mlp plot sweeps/tiny-20261201-142000 --out sweep.png     (every trial of a sweep)

  mlp plot --weights runs/cs229/best.npz --out weights.png

  mlp plot --weights runs/cs229-l2/best.npz --minus-init --out learned.png

Curves in a file need matplotlib: pip install -e '.[plot]' in the checkout. --terminal and --weights do not.
"""


@app.command("plot", epilog=EXAMPLES_PLOT)
def plot_command(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(metavar="[RUN]...", show_default=False,
                       help="Run directories (or their metrics.jsonl files), or sweep directories (their "
                       "trials); several share the axes."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Image file to write: .png, .svg or .pdf (weights: .png). "
                     "Default curves.png, or weights.png with --weights."),
    ] = None,
    terminal: Annotated[
        bool, typer.Option("--terminal", "-t", help="Draw the curves in the terminal instead of a file.")
    ] = False,
    weights: Annotated[
        Path | None,
        typer.Option("--weights", metavar="CHECKPOINT",
                     help="Draw the first-layer weights (each column of W1 as a 28x28 image) of this checkpoint."),
    ] = None,
    title: Annotated[str | None, typer.Option(help="Title above the curves.")] = None,
    columns: Annotated[
        int | None, typer.Option(min=1, help="Tiles per row of the weights grid (default: about sqrt(h)).")
    ] = None,
    scale: Annotated[int | None, typer.Option(min=1, max=16, help="Pixels per weight in the weights grid "
                                              "(default 2).")] = None,
    minus_init: Annotated[
        bool, typer.Option("--minus-init", help="Weights grid: subtract the (scaled) initial weights, re-drawn from "
                           "the checkpoint's seed, to show what training added.")
    ] = False,
) -> None:
    """Plot learning curves of runs (to a file or the terminal), or a checkpoint's first-layer weights.

    Curves: loss and accuracy per epoch, train dashed and dev solid, one colour per run, on shared axes.
    """
    runs = runs or []
    _check_flags(weights is not None, runs, terminal, title, {"--minus-init": minus_init or None,
                                                              "--columns": columns, "--scale": scale})
    if weights is not None:
        _plot_weights(weights, out or Path("weights.png"), columns, scale or 2, minus_init)
        return
    if not runs:
        raise UsageError("give at least one run directory (e.g. mlp plot runs/cs229), or --weights CHECKPOINT")
    if terminal and out is not None:
        raise UsageError("--terminal draws in the terminal; drop --out, or drop --terminal to write a file")
    target = None if terminal else _target(out or Path("curves.png"))
    curves = _read_runs(runs)
    if target is None:
        from mlp_cli.cli.render import run_chart

        typer.echo("\n\n".join(run_chart(c.label, rows) for c, rows in curves))
        return
    from mlp_cli.reports.plot import plot_curves

    written = plot_curves([c for c, _ in curves], target, title=title)
    typer.echo(f"wrote {written} ({', '.join(c.label for c, _ in curves)})")


def _check_flags(weights: bool, runs: list[Path], terminal: bool, title: str | None,
                 grid_flags: dict[str, object]) -> None:
    """Each flag goes with one kind of picture: given with the other, it would do nothing."""
    if weights:
        if runs or terminal:
            raise UsageError("--weights draws one checkpoint; give no run directories and no --terminal with it")
        if title is not None:
            raise UsageError("--title goes above the curves; the weights grid has none: drop it")
        return
    for flag, value in grid_flags.items():
        if value is not None:
            raise UsageError(f"{flag} goes with --weights CHECKPOINT (the weights grid)")
    if terminal and title is not None:
        raise UsageError("--title goes above the curves in a file; the terminal chart has none: drop it, or --out")


def _target(out: Path) -> Path:
    """``out``, once its suffix is known and a file can go there: before anything is read or drawn."""
    from mlp_cli.atomic import check_output
    from mlp_cli.reports.plot import output_format

    output_format(out)
    check_output(out)
    return out


def _expand_sweeps(runs: list[Path]) -> list[Path]:
    """A sweep directory stands for its trials; failed, diverged and empty ones are skipped with
    a note on stderr."""
    from mlp_cli.reports.plot import PlotError
    from mlp_cli.sweeps import records
    from mlp_cli.training.metrics import METRICS_FILE

    out = []
    for run in runs:
        if not (run.is_dir() and records.is_sweep_dir(run)):
            out.append(run)
            continue
        status = {name: row["status"] for name, row in records.latest(records.read_trials(run)).items()}
        kept = []
        for trial in records.trial_dirs(run):
            why = status.get(trial.name) if status.get(trial.name) in ("failed", "diverged") else None
            if why is None and not ((trial / METRICS_FILE).is_file() and (trial / METRICS_FILE).stat().st_size):
                why = "no epochs recorded"
            if why:
                typer.echo(f"note: skipped trial {trial.name} of {run}: {why}", err=True)
            else:
                kept.append(trial)
        if not kept:
            raise PlotError(f"sweep {run} has no trial with curves to plot")
        out += kept
    return out


def _read_runs(runs: list[Path]) -> list[tuple[RunCurves, list[dict[str, Any]]]]:
    """(RunCurves, rows) per run; labels are directory names, or paths where names clash."""
    from mlp_cli.reports import plot as plotting
    from mlp_cli.training.metrics import METRICS_FILE, read_metrics

    runs = _expand_sweeps(runs)

    def directory(run: Path) -> Path:
        return run.parent if run.name == METRICS_FILE or run.suffix == ".jsonl" else run

    names = [directory(run).name or str(directory(run)) for run in runs]
    clash = len(set(names)) < len(names)
    out = []
    for run, name in zip(runs, names, strict=True):
        rows = read_metrics(run)
        label = str(directory(run)) if clash else name
        out.append((plotting.RunCurves.from_rows(label, rows), rows))
    return out


def _plot_weights(checkpoint_path: Path, out: Path, columns: int | None, scale: int, minus_init: bool) -> None:
    from mlp_cli.atomic import check_output
    from mlp_cli.reports.plot import IMAGE_FORMATS, initial_weights, output_format, remove_initial, save_weights_image
    from mlp_cli.training.checkpoint import load_checkpoint

    output_format(out, IMAGE_FORMATS)
    check_output(out)
    checkpoint = load_checkpoint(checkpoint_path)
    W1, what = checkpoint.params.W1, f"{checkpoint.params.hidden} hidden units"
    if columns is not None and columns > W1.shape[1]:  # the grid's width grows with --columns
        raise UsageError(f"--columns {columns} is more than the {W1.shape[1]} hidden units of {checkpoint_path}; "
                         f"expected 1..{W1.shape[1]}")
    _check_grid_memory(W1.shape[1], scale)
    if minus_init:
        W1, c = remove_initial(W1, initial_weights(checkpoint))
        what += f", minus {c:.3f} x their initial weights"
    written, (width, height) = save_weights_image(W1, out, columns=columns, scale=scale)
    typer.echo(f"wrote {written} ({what}; {width}x{height} pixels)")


GRID_BYTES_PER_PIXEL = 8  # the grid as floats, then its RGB image: measured 7.2 (784-20000-10 at --scale 4)


def _check_grid_memory(hidden: int, scale: int) -> None:
    """The grid holds 28 x 28 x scale^2 pixels per hidden unit: refused before it is drawn when it
    cannot fit (--scale 16 on 100,000 units would be tens of GiB)."""
    from mlp_cli.memory import require_memory

    pixels = hidden * 28 * 28 * scale * scale
    require_memory(GRID_BYTES_PER_PIXEL * pixels, f"a weights grid of {hidden} tiles at --scale {scale}",
                   "lower --scale")
