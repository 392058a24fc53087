"""How `mlp runs` lays its table out: which columns, how they fit a terminal, and the plain
tab-separated lines it writes into a pipe or a file.

The columns are the run's name, then status, epochs (done/planned), best dev accuracy (and its
epoch), test accuracy and time, then the settings that differ between the runs shown. On a
terminal the default keeps the settings that fit its width; a run's name is never cut (it wraps,
and a folder every run shares moves into the title). ``--columns`` chooses, ``--wide`` takes all.
"""

from __future__ import annotations

import difflib
import os.path
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlp_cli.errors import UsageError
from mlp_cli.sweeps.spec import short_key
from mlp_cli.words import plural, printable

if TYPE_CHECKING:
    from rich.table import Table

    from mlp_cli.reports.runs import RunInfo

FIXED_COLUMNS = ("run", "status", "epochs", "dev", "test", "time")
HEADERS = {"run": "run", "status": "status", "epochs": "epochs", "dev": "best dev", "test": "test",
           "time": "time"}
NAME_AT_LEAST = 20  # characters kept for the run's name before settings are left out to fit
COLOURS = {"finished": "green", "running": "cyan", "interrupted": "yellow", "diverged": "red", "failed": "red",
           "pruned": "magenta"}


@dataclass(frozen=True)
class Column:
    name: str  # what --columns calls it: a fixed column, or a setting (section.key)
    header: str

    def cell(self, run: RunInfo) -> str:
        return cell(run, self.name)


def setting_names(runs: list[RunInfo]) -> dict[str, str]:
    """Every setting of the runs, by its full name and by its short one (lr -> optimizer.lr)."""
    full = sorted({key for run in runs for key in run.settings} - {"run.dir", "run.name"})
    names = {key: key for key in full}
    for key in full:
        names.setdefault(short_key(key), key)
    return names


def differing_keys(runs: list[RunInfo]) -> list[str]:
    """The full names of the settings that differ between the runs, in the table's order."""
    by_short = {short_key(key): key for run in runs for key in run.settings}
    shorts = list(dict.fromkeys(key for run in runs for key in run.differing))
    return [by_short.get(key, key) for key in shorts]


def choose_columns(runs: list[RunInfo], names: str | None) -> list[Column]:
    """The columns asked for by ``--columns`` (validated), else the fixed ones and every differing setting."""
    settings = setting_names(runs)
    if names is None:
        wanted = [*FIXED_COLUMNS, *differing_keys(runs)]
    else:
        wanted = [name.strip() for name in names.split(",") if name.strip()]
        if not wanted:
            raise UsageError("--columns: name at least one column")
        for name in wanted:
            if name not in FIXED_COLUMNS and name not in settings:
                raise UsageError(_unknown_column(name, settings))
    full = list(dict.fromkeys(n if n in FIXED_COLUMNS else settings.get(n, n) for n in wanted))
    done_header = "done" if "train.epochs" in full else "epochs"  # epochs done of planned, beside the setting
    columns = []
    for name in full:
        header = done_header if name == "epochs" else HEADERS.get(name, short_key(name))
        columns.append(Column(name, header))
    return columns


def _unknown_column(name: str, settings: dict[str, str]) -> str:
    choices = [*FIXED_COLUMNS, *settings]
    close = difflib.get_close_matches(name.lower(), [c.lower() for c in choices], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return (f"--columns {name!r} is not a column{hint}; expected {', '.join(FIXED_COLUMNS)} "
            "or a setting such as lr or optimizer.lr")


def cell(run: RunInfo, name: str, *, with_note: bool = True) -> str:
    from mlp_cli.cli.sweep_view import duration, pct

    if name == "run":
        return run.name
    if name == "status":
        return f"{run.status}: {' '.join(run.note.split())}" if run.note and with_note else run.status
    if name == "epochs":
        return f"{run.epochs}/{run.planned_epochs or '?'}"
    if name == "dev":
        return f"{pct(run.best_dev_accuracy)} ({run.best_epoch})" if run.best_epoch else "-"
    if name == "test":
        return pct(run.test_accuracy)
    if name == "time":
        return duration(run.seconds)
    return show(run.settings.get(name))


def show(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def fit(runs: list[RunInfo], columns: list[Column], width: int) -> list[Column]:
    """The columns that fit ``width`` with the run's name given at least NAME_AT_LEAST characters:
    the fixed ones always, then the settings in order while they fit (a boxed column costs 3 more)."""
    def need(column: Column) -> int:
        return width_of(runs, column) + 3

    names = [display_name(run.name, common_folder(runs)) for run in runs]
    used = 1 + min(max(map(len, names)), NAME_AT_LEAST) + 3
    kept = []
    for column in columns:
        if column.name == "run":
            kept.append(column)
            continue
        if column.name in FIXED_COLUMNS or used + need(column) <= width:
            used += need(column)
            kept.append(column)
    return kept


def width_of(runs: list[RunInfo], column: Column) -> int:
    """The characters a column needs: its header and its cells, a status without its note (which wraps)."""
    return max(len(column.header), *(len(cell(run, column.name, with_note=False)) for run in runs))


def common_folder(runs: list[RunInfo]) -> str:
    """The folder every run's name starts with ('' when they share none), shown in the title."""
    parents = [os.path.dirname(run.name) for run in runs]
    try:
        common = os.path.commonpath(parents) if all(parents) else ""
    except ValueError:  # absolute and relative names mixed
        return ""
    return "" if common in ("", ".", "/") else common


def display_name(name: str, folder: str) -> str:
    return os.path.relpath(name, folder) if folder else name


def rich_table(runs: list[RunInfo], columns: list[Column]) -> Table:
    from rich.markup import escape
    from rich.table import Table

    folder = common_folder(runs)
    title = plural(len(runs), "run") + (f" in {folder}/" if folder else "")
    table = Table(title=escape(printable(title)), title_justify="left")
    for column in columns:
        wraps = column.name in ("run", "status")  # a long name or note wraps; numbers never
        table.add_column(escape(column.header), justify="left" if wraps else "right", no_wrap=not wraps,
                         overflow="fold" if wraps else "ellipsis",
                         min_width=None if column.name == "run" else width_of(runs, column))
    for run in runs:
        row = []
        for column in columns:
            if column.name == "run":
                row.append(escape(printable(display_name(run.name, folder))))
            elif column.name == "status":
                note = f" [dim]{escape(printable(run.note))}[/]" if run.note else ""
                row.append(f"[{COLOURS[run.status]}]{run.status}[/]{note}")
            else:
                row.append(escape(printable(column.cell(run))))
        table.add_row(*row)
    return table


def plain_lines(runs: list[RunInfo], columns: list[Column]) -> list[str]:
    """Tab-separated lines, a header first, nothing shortened: for a pipe or a file."""
    header = "\t".join(column.header for column in columns)  # a tab or newline in a cell would split its fields
    return [header, *("\t".join(printable(column.cell(run)) for column in columns) for run in runs)]
