"""How `mlp sweep` shows itself: progress while it runs (a live display on a terminal, one line
per finished trial otherwise, nothing with --quiet) and the table of trials at the end."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from mlp_cli.sweeps.spec import short_key
from mlp_cli.sweeps.sweep import SweepObserver
from mlp_cli.words import plural

if TYPE_CHECKING:
    from rich.progress import TaskID
    from rich.table import Table

    from mlp_cli.sweeps.executors import Executor
    from mlp_cli.sweeps.sweep import SweepPlan


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def trial_line(row: dict[str, Any]) -> str:
    best = f"dev {pct(row.get('best_dev_accuracy'))} (epoch {row.get('best_epoch')})" if row.get("best_epoch") else ""
    attempts = row.get("attempts", 1)
    retried = f", {attempts} attempts: {', '.join(row.get('tried_on', []))}" if attempts > 1 else ""
    error = f"  {row['error']}" if row.get("error") and row["status"] != "ok" else ""
    return (f"{row['trial']}  {row['status']}  {best}  {duration(row.get('seconds'))}"
            f" on {row.get('where', '?')}{retried}{error}").replace("   ", " ")


def planned(plan: SweepPlan) -> int:
    """The sweep's trials: a model-based one's are proposed as it goes (its spec says how many)."""
    return len(plan.trials) if plan.spec.search != "tpe" else plan.spec.trials


def promotions(plan: SweepPlan) -> str:
    """What a pruned sweep's header adds: its count grows as trials go on to their next rung (a
    rerun whose trials all stopped at a rung may run none new and still promote one)."""
    return "; then the trials promoted to their next rung" if plan.spec.prune is not None else ""


class PlainSweepObserver(SweepObserver):
    """A line when the sweep starts, then one per finished trial with the overall count and ETA."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.done = self.failed = self.todo = self.workers = 0
        self.start = time.perf_counter()

    def on_start(self, plan: SweepPlan, todo: int, executor: Executor) -> None:
        self.todo, self.workers = todo, executor.workers
        settled = planned(plan) - todo
        again = f", {settled} already done" if settled else ""
        print(f"sweep {plan.directory}: {plural(planned(plan), 'trial')}{again}; "
              f"running {todo} on {executor.description}{promotions(plan)}",
              file=self.stream, flush=True)

    def on_trial(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.failed += row["status"] in ("failed", "diverged")
        running = min(self.workers, self.todo - self.done)
        print(f"[{self.done}/{self.todo}] {trial_line(row)}  ({running} running, {self.failed} failed, "
              f"ETA {duration(self.eta())})", file=self.stream, flush=True)

    def on_promoted(self, row: dict[str, Any]) -> None:
        self.todo += 1

    def eta(self) -> float | None:
        if not self.done:
            return None
        return (time.perf_counter() - self.start) / self.done * (self.todo - self.done)


class RichSweepObserver(PlainSweepObserver):
    """One live bar (done of total, running, failed, ETA) and a line per finished trial above it."""

    task: TaskID  # added by on_start

    def __enter__(self) -> RichSweepObserver:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[info]}"), console=self.console, transient=True)
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def on_start(self, plan: SweepPlan, todo: int, executor: Executor) -> None:
        from rich.markup import escape

        self.todo, self.workers = todo, executor.workers
        settled = planned(plan) - todo
        again = f", {settled} already done" if settled else ""
        self.console.print(f"[bold]Sweep[/] {escape(str(plan.directory))}: {plural(planned(plan), 'trial')}{again}; "
                           f"running {todo} on {escape(executor.description)}{promotions(plan)}")
        self.task = self.progress.add_task("trials", total=todo, info=self._info())

    def on_trial(self, row: dict[str, Any]) -> None:
        from rich.markup import escape

        self.done += 1
        self.failed += row["status"] in ("failed", "diverged")
        colour = "green" if row["status"] == "ok" else "red" if row["status"] in ("failed", "diverged") else "yellow"
        self.console.print(f"[{colour}]{escape(trial_line(row))}[/]")
        self.progress.update(self.task, completed=self.done, info=self._info())

    def on_promoted(self, row: dict[str, Any]) -> None:
        self.todo += 1
        self.progress.update(self.task, total=self.todo, info=self._info())

    def _info(self) -> str:
        running = min(self.workers, self.todo - self.done)
        return f"{running} running, {self.failed} failed, ETA {duration(self.eta())}"


def trials_table(rows: list[dict[str, Any]], title: str) -> Table:
    """A rich Table of the trials, best dev accuracy first (failed and diverged last)."""
    from rich.markup import escape
    from rich.table import Table

    keys = list(dict.fromkeys(key for row in rows for key in row.get("overrides", {})))
    shorts = [short_key(key) for key in keys]
    table = Table(title=title, title_justify="left")
    table.add_column("trial", justify="right")  # its index: the directory is trials/<index>-<overrides>
    for key, short in zip(keys, shorts, strict=True):
        table.add_column(short if shorts.count(short) == 1 else key, justify="right")
    done = "done" if "epochs" in shorts else "epochs"  # epochs done of planned (beside a train.epochs column)
    for name in ("status", "best dev (epoch)", "train acc", done, "time", "where"):
        table.add_column(name, justify="left" if name in ("status", "where") else "right")
    ordered = sorted(rows, key=lambda r: (r["status"] != "ok", -(r.get("best_dev_accuracy") or 0.0)))
    for row in ordered:
        overrides = row.get("overrides", {})
        best = f"{pct(row.get('best_dev_accuracy'))} ({row['best_epoch']})" if row.get("best_epoch") else "-"
        cells = [row["trial"].split("-")[0], *[_value(overrides.get(k)) for k in keys], row["status"], best,
                 pct(row.get("train_accuracy")), f"{row.get('epochs', 0)}/{row.get('planned_epochs', '?')}",
                 duration(row.get("seconds")), str(row.get("where", "-"))]
        table.add_row(*[escape(cell) for cell in cells])  # trials.jsonl is read back: no markup
    return table


def _value(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)
