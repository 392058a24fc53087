"""`mlp runs`: a table of the runs and sweep trials found, to compare them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mlp_cli.cli.app import app, is_interactive, strict_json
from mlp_cli.errors import MissingFileError

EXAMPLES_RUNS = """
Examples:

  mlp runs                              (everything in runs/ and sweeps/)

  mlp runs sweeps/tiny-20261201-142000 --sort dev

  mlp runs runs/cs229 runs/cs229-l2 --sort optimizer.lr

  mlp runs --columns run,status,dev,lr,hidden

  mlp runs --wide | less -S

  mlp runs --json | jq '.[0]'
"""

DEFAULT_ROOTS = (Path("runs"), Path("sweeps"))


@app.command("runs", epilog=EXAMPLES_RUNS)
def runs_command(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(metavar="[DIR]...", show_default=False,
                       help="Run directories, sweep directories, or folders of them (default: runs/ and sweeps/)."),
    ] = None,
    sort: Annotated[
        str, typer.Option(help="name, status, epochs, dev, test, time, or a setting such as optimizer.lr.")
    ] = "name",
    columns: Annotated[
        str | None, typer.Option(
            "--columns", metavar="A,B,...", show_default=False,
            help="The columns to show, in order: run, status, epochs, dev, test, time, or settings "
                 "(lr or optimizer.lr). Default: those six, then the settings that differ, as many as fit."),
    ] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Every column, even past the terminal's width.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the runs as a JSON list.")] = False,
) -> None:
    """Compare runs: status, epochs, best dev accuracy (its epoch), test accuracy, time, differing settings.

    On a terminal the table fits its width: a run's name is never cut (it wraps, and a folder all
    the runs share moves into the title), and settings are left out from the right until the rest
    fits (--wide keeps them all). Into a pipe or a file the same columns come as tab-separated
    lines, a header first, nothing shortened (every differing setting unless --columns chooses).
    Test accuracy appears once `mlp eval` has evaluated the run. Status is finished, running,
    interrupted, diverged or failed; a directory without metrics is a failed run.
    """
    from mlp_cli.cli import runs_table
    from mlp_cli.reports.runs import collect

    for directory in dirs or ():
        if not directory.is_dir():
            raise MissingFileError(f"{directory} is not a directory; give run or sweep directories")
    runs = collect(list(dirs or DEFAULT_ROOTS), sort)
    if json_output:
        typer.echo(strict_json([run.to_dict() for run in runs]))
        return
    if not runs:
        where = ", ".join(str(d) for d in (dirs or DEFAULT_ROOTS))
        typer.echo(f"no runs found in {where}")
        return
    chosen = runs_table.choose_columns(runs, columns)
    if not (is_interactive(sys.stdout) or os.environ.get("COLUMNS")):
        typer.echo("\n".join(runs_table.plain_lines(runs, chosen)))
        return
    from rich.console import Console

    console = Console(highlight=False)
    if not (wide or columns):
        chosen = runs_table.fit(runs, chosen, console.width)
    table = runs_table.rich_table(runs, chosen)
    if wide:  # as wide as the table needs, past the terminal's edge
        console = Console(highlight=False, width=max(console.width, console.measure(table).maximum))
    console.print(table)
