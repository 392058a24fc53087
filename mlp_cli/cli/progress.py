"""How a training run shows its progress: a live rich display on a terminal, one plain line per
epoch otherwise, nothing with --quiet. Each is a ``train.Observer`` and a context manager."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mlp_cli.training.loop import Observer
from mlp_cli.words import plural

if TYPE_CHECKING:
    from rich.progress import TaskID

    from mlp_cli.config import Config
    from mlp_cli.training.metrics import EpochMetrics


def _pct(value: float | None) -> str:
    return "    -  " if value is None else f"{100 * value:6.2f}%"


class SilentObserver(Observer):
    def __enter__(self) -> SilentObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class PlainObserver(SilentObserver):
    """One line per epoch on stderr: readable in logs and CI output."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def on_start(self, config: Config, run_dir: Path, steps_per_epoch: int, start_epoch: int) -> None:
        what = "resuming" if start_epoch > 1 else "training"
        print(
            f"{what} {run_dir}: 784-{config.model.hidden}-10 sigmoid/softmax, "
            f"{config.optimizer.name} lr {config.optimizer.lr:g}, batch {config.train.batch_size}, "
            f"epochs {start_epoch}..{config.train.epochs}, {plural(steps_per_epoch, 'step')}/epoch",
            file=self.stream, flush=True,
        )

    def on_epoch(self, row: EpochMetrics, is_best: bool) -> None:
        dev_loss = "-" if row.dev_loss is None else f"{row.dev_loss:.4f}"
        print(
            f"epoch {row.epoch:3d}  train loss {row.train_loss:.4f} acc {_pct(row.train_accuracy)}  "
            f"dev loss {dev_loss} acc {_pct(row.dev_accuracy)}  lr {row.lr:.3g}  "
            f"{row.seconds:.2f}s ({row.examples_per_second:,.0f} ex/s){'  *best' if is_best else ''}",
            file=self.stream, flush=True,
        )


class RichObserver(SilentObserver):
    """Two progress bars (epochs, batches) with the live loss, and a line per finished epoch."""

    epochs_task: TaskID  # both added by on_start
    batch_task: TaskID

    def __enter__(self) -> RichObserver:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=True,
        )
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def on_start(self, config: Config, run_dir: Path, steps_per_epoch: int, start_epoch: int) -> None:
        from rich.markup import escape

        self.console.print(
            f"[bold]{'Resuming' if start_epoch > 1 else 'Training'}[/] {escape(str(run_dir))}  "
            f"784-{config.model.hidden}-10, {config.optimizer.name} lr {config.optimizer.lr:g}, "
            f"batch {config.train.batch_size}"
        )
        self.epochs_task = self.progress.add_task(
            "epochs", total=config.train.epochs, completed=start_epoch - 1, info=""
        )
        self.batch_task = self.progress.add_task("batches", total=steps_per_epoch, info="")

    def on_step(self, epoch: int, batch: int, steps_per_epoch: int, loss: float) -> None:
        if batch == 1:  # a new epoch: the batch bar starts again here, not at the end of the last
            # epoch, so that the final frame shows the last epoch's batches all done (5/5, not 0/5)
            self.progress.reset(self.batch_task, total=steps_per_epoch)
        self.progress.update(self.batch_task, completed=batch, info=f"epoch {epoch}  loss {loss:.4f}")

    def on_epoch(self, row: EpochMetrics, is_best: bool) -> None:
        self.progress.update(self.epochs_task, completed=row.epoch,
                             info=f"dev acc {_pct(row.dev_accuracy)}")
        dev_loss = "-" if row.dev_loss is None else f"{row.dev_loss:.4f}"
        self.console.print(
            f"epoch {row.epoch:3d}  train [cyan]{row.train_loss:.4f}[/] {_pct(row.train_accuracy)}  "
            f"dev [cyan]{dev_loss}[/] {_pct(row.dev_accuracy)}  lr {row.lr:.3g}  "
            f"{row.seconds:.2f}s{'  [green]*best[/]' if is_best else ''}"
        )
