"""`mlp eval`: loss and accuracy of a checkpoint on a split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mlp_cli.cli.app import app
from mlp_cli.cli.options import DataDir, Mirror, Quiet, download_reporter

EXAMPLES_EVAL = """
Examples:

  mlp eval runs/cs229/last.npz

  mlp eval runs/cs229/best.npz --split dev --json
"""


@app.command("eval", epilog=EXAMPLES_EVAL)
def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file (.npz) written by mlp train.")],
    split: Annotated[str, typer.Option(help="test (the official 10,000), dev or train.")] = "test",
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    quiet: Quiet = False,
) -> None:
    """Evaluate a checkpoint: loss and accuracy on the test (default), dev or train split."""
    from mlp_cli.checkpoint import load_checkpoint
    from mlp_cli.errors import UsageError
    from mlp_cli.evaluate import SPLITS, evaluate, load_split

    if split not in SPLITS:
        raise UsageError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    ckpt = load_checkpoint(checkpoint)
    _, X, y = load_split(ckpt, split, data_dir=data_dir, mirrors=tuple(mirror or ()),
                         reporter=download_reporter(quiet or json_output))
    result = evaluate(ckpt, X, y, split)
    if json_output:
        typer.echo(json.dumps({"checkpoint": str(checkpoint), "epoch": ckpt.epoch, **result.to_dict()}))
        return
    if quiet:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{checkpoint} (epoch {ckpt.epoch})", title_justify="left")
    for column in ("split", "examples", "loss", "accuracy"):
        table.add_column(column, justify="right" if column != "split" else "left")
    table.add_row(split, f"{result.examples:,}", f"{result.loss:.4f}", f"{100 * result.accuracy:.2f}%")
    Console(highlight=False).print(table)
