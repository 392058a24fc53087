"""`mlp runs`: a table of the runs and sweep trials found, to compare them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlp_cli.cli.app import table_console
from mlp_cli.errors import MissingFileError

if TYPE_CHECKING:
    from rich.table import Table

    from mlp_cli.reports.runs import RunInfo

from mlp_cli.cli.app import app, strict_json

EXAMPLES_RUNS = """
Examples:

  mlp runs                              (everything in runs/ and sweeps/)

  mlp runs sweeps/tiny-20261201-142000 --sort dev

  mlp runs runs/cs229 runs/cs229-l2 --sort optimizer.lr

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
    json_output: Annotated[bool, typer.Option("--json", help="Print the runs as a JSON list.")] = False,
) -> None:
    """Compare runs: the settings that differ, epochs done/planned, best dev accuracy, test accuracy, time, status.

    Test accuracy appears once `mlp eval` has evaluated the run. Status is finished, running, interrupted,
    diverged or failed; a directory without metrics is a failed run.
    """
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

    table = _table(runs)
    table_console(table).print(table)


def _table(runs: list[RunInfo]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    from mlp_cli.cli.sweep_view import duration, pct

    keys = list(runs[0].differing)
    table = Table(title=f"{len(runs)} runs", title_justify="left")
    table.add_column("run")
    for key in keys:
        table.add_column(key, justify="right")
    done = "done" if "epochs" in keys else "epochs"  # epochs done of planned (beside a train.epochs column)
    for name in (done, "best dev (epoch)", "test", "time", "status"):
        table.add_column(name, justify="left" if name == "status" else "right")
    colours = {"finished": "green", "running": "cyan", "interrupted": "yellow", "diverged": "red", "failed": "red"}
    for run in runs:
        best = f"{pct(run.best_dev_accuracy)} ({run.best_epoch})" if run.best_epoch else "-"
        status = f"[{colours[run.status]}]{run.status}[/]" + (f" [dim]{escape(run.note)}[/]" if run.note else "")
        table.add_row(escape(run.name), *[escape(_show(run.differing.get(k))) for k in keys],
                      f"{run.epochs}/{run.planned_epochs or '?'}", best, pct(run.test_accuracy),
                      duration(run.seconds), status)
    return table


def _show(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)
