"""`mlp augment-preview`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlp_cli.cli.app import app
from mlp_cli.cli.download import make_reporter
from mlp_cli.cli.options import DataDir, Mirror, Quiet, complete_config, complete_set
from mlp_cli.words import plural

if TYPE_CHECKING:
    import numpy as np

EXAMPLES_AUGMENT = """
Examples:

  mlp augment-preview --set augment.rotate=15 --set augment.shift=2

  mlp augment-preview --config configs/record-800.yaml --n 8 --seed 3

  mlp augment-preview -c record-800 --out preview.png
"""

GAP = 2  # pixels between the tiles: 2 columns, and one text line between the two rows


@app.command("augment-preview", epilog=EXAMPLES_AUGMENT)
def augment_preview_command(
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", autocompletion=complete_config,
                     help="YAML config file, or a name from configs/; its augment section is shown."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", autocompletion=complete_set,
                     help="Override any key: section.key=value (e.g. augment.rotate=15). Repeatable."),
    ] = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=256, help="How many training images to show.")] = 16,
    seed: Annotated[int, typer.Option(min=0, help="Seed that picks the images and draws their distortions.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write a PNG grid here instead of drawing in the terminal.")
    ] = None,
    scale: Annotated[int, typer.Option(min=1, max=16, help="PNG only: screen pixels per image pixel.")] = 4,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    quiet: Quiet = False,
) -> None:
    """Show training images (top row) above their randomly distorted versions (bottom row).

    The distortions are the config's augment section, drawn as training draws them (as if it were enabled).
    In the terminal each row is labelled (original, distorted), in bands as wide as the terminal.
    """
    from mlp_cli.config_file import load_config, resolve_config_path
    from mlp_cli.data.augment import is_identity
    from mlp_cli.data.cache import load_dataset
    from mlp_cli.reports.preview import grid_image, preview_pairs, save_png

    resolved = load_config(resolve_config_path(config), sets=tuple(set_ or ()))
    if out is not None:  # before the dataset is read
        from mlp_cli.atomic import check_output

        check_output(out)
    settings = resolved.augment
    images, _ = load_dataset(
        resolved.data.dataset, "train", data_dir=data_dir, mirrors=tuple(mirror or ()),
        reporter=make_reporter(quiet),
    )
    originals, distorted = preview_pairs(images, settings, n, seed)
    if out is not None:
        width, height = save_png(grid_image([originals, distorted], gap=GAP, fill=96), out, scale=scale)
        if not quiet:
            typer.echo(f"wrote {out} ({plural(n, 'original')} above their distorted versions; {width}x{height} pixels)")
    else:
        _print_grid(originals, distorted)
    if quiet:
        return
    if is_identity(replace(settings, enabled=True)):
        typer.echo("note: every distortion is 0, so the images are unchanged; e.g. --set augment.rotate=15", err=True)
    elif not settings.enabled:
        typer.echo("note: augment.enabled is false in this config, so training would not use these", err=True)


def _print_grid(originals: np.ndarray, distorted: np.ndarray) -> None:
    """Bands as wide as the terminal: a row of originals, then their distorted versions, each
    under a label saying which it is."""
    from rich.console import Console

    from mlp_cli.cli.render import halfblock_text, uses_colour
    from mlp_cli.reports.preview import grid_image

    console = Console(highlight=False)
    per_band = max(1, (console.width + GAP) // (originals.shape[2] + GAP))
    colour = uses_colour(console)
    for lo in range(0, len(originals), per_band):
        if lo:
            console.print()
        for label, row in (("original", originals), ("distorted", distorted)):
            console.print(f"[bold]{label}[/]")
            console.print(halfblock_text(grid_image([row[lo : lo + per_band]], gap=GAP), colour), soft_wrap=True)
