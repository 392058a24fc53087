"""`mlp train`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer

from mlp_cli.cli.app import app, is_interactive, strict_json
from mlp_cli.cli.download import make_reporter
from mlp_cli.cli.options import (
    DataDir,
    Log,
    Mirror,
    Quiet,
    complete_config,
    complete_from,
    complete_set,
    draw_curves,
    report_log_problems,
)
from mlp_cli.data.registry import DATASETS
from mlp_cli.errors import UsageError
from mlp_cli.nn.registry import OPTIMIZERS, listed

if TYPE_CHECKING:
    from mlp_cli.cli.progress import SilentObserver
    from mlp_cli.cli.signals import StopOnSignals
    from mlp_cli.config import Config
    from mlp_cli.training.loop import TrainResult
    from mlp_cli.training.session import Session

EXAMPLES_TRAIN = """
Examples:

  mlp train --hidden 300 --batch 1000

  mlp train --config configs/cs229.yaml

  mlp train -c best-30 --set train.dropout=0.1 --set train.input_dropout=0.2 --epochs 60 --out runs/drop

  mlp train --resume runs/drop/last.npz

  mlp train -c cs229 --log tensorboard
"""

# The options of `mlp train`, one alias each, so that the command reads as a list of them.
ConfigName = Annotated[str | None, typer.Option(
    "--config", "-c", autocompletion=complete_config, help="YAML config file, or a name from configs/ (e.g. cs229).")]
Hidden = Annotated[int | None, typer.Option(help="Hidden units (model.hidden).")]
Batch = Annotated[int | None, typer.Option(help="Mini-batch size (train.batch_size).")]
Lr = Annotated[float | None, typer.Option(help="Learning rate (optimizer.lr).")]
Epochs = Annotated[int | None, typer.Option(help="Number of epochs (train.epochs).")]
Seed = Annotated[int | None, typer.Option(help="Seed of the weights and shuffling (train.seed).")]
L2 = Annotated[float | None, typer.Option(help="L2 penalty lambda on W1 and W2 (train.l2).")]
Optimizer = Annotated[str | None, typer.Option(
    help=f"{listed(OPTIMIZERS)} (optimizer.name).", autocompletion=complete_from(OPTIMIZERS))]
Out = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Run directory (default runs/<config>-<timestamp>).")]
Name = Annotated[str | None, typer.Option(help="Run name (run.name).")]
Dataset = Annotated[str | None, typer.Option(
    help=f"{listed(DATASETS)} (data.dataset).", autocompletion=complete_from(DATASETS))]
Sets = Annotated[list[str] | None, typer.Option(
    "--set", "-s", autocompletion=complete_set, help="Override any key: section.key=value. Repeatable.")]
Resume = Annotated[Path | None, typer.Option(
    help="Continue the run of this checkpoint: its last.npz (runs/x/last.npz) is the latest state.")]
Overwrite = Annotated[bool, typer.Option(
    help="Replace an existing run directory (not one another process is writing: that is named, with the process).")]
JsonSummary = Annotated[bool, typer.Option("--json", help="Print the final summary as JSON.")]


@app.command("train", epilog=EXAMPLES_TRAIN)
def train_command(
    config: ConfigName = None,
    hidden: Hidden = None,
    batch: Batch = None,
    lr: Lr = None,
    epochs: Epochs = None,
    seed: Seed = None,
    l2: L2 = None,
    optimizer: Optimizer = None,
    out: Out = None,
    name: Name = None,
    dataset: Dataset = None,
    set_: Sets = None,
    resume: Resume = None,
    overwrite: Overwrite = False,
    log: Log = None,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    quiet: Quiet = False,
    json_output: JsonSummary = False,
) -> None:
    """Train the two-layer network; write metrics.jsonl, last.npz and best.npz to a run directory.

    Settings: the config file (or the defaults that configs/default.yaml spells out), then flags, then --set.

    Everything is validated before any work starts; MNIST is downloaded first if it is not cached.

    Ctrl-C, SIGTERM or SIGHUP stops after the current step: last.npz is saved and one line (not an
    error) says how to continue; the exit code is 130, 143 or 129. A second one stops at once.
    """
    from mlp_cli.config import FLAG_KEYS

    if name is not None and out is not None:  # run.name names a folder in runs/ only when --out is not given
        raise UsageError("--name names the run's folder in runs/, --out a directory anywhere: give one of them")
    flags = {"hidden": hidden, "batch": batch, "lr": lr, "epochs": epochs, "seed": seed, "l2": l2,
             "optimizer": optimizer, "out": str(out) if out else None, "name": name, "dataset": dataset,
             "log": list(log) if log else None}
    request = TrainRequest(config=config, overrides={FLAG_KEYS[k]: v for k, v in flags.items() if v is not None},
                           sets=tuple(set_ or ()), resume=resume, out=out, overwrite=overwrite, data_dir=data_dir,
                           mirrors=tuple(mirror or ()), quiet=quiet or json_output)
    result, session = _until_done_or_stopped(request)
    summary = _summary(result, session.config)
    if json_output:
        typer.echo(strict_json(summary))
    elif not quiet:
        _print_summary(summary)
        from mlp_cli.cli.render import training_sparklines
        from mlp_cli.training.metrics import read_metrics

        typer.echo(training_sparklines(read_metrics(result.run_dir)))
    report_log_problems(session.log_problems)


class TrainRequest(NamedTuple):
    """What `mlp train` was asked for, as the command line gave it (a NamedTuple: cheaper to
    define than a dataclass, and this module is imported by every ``mlp`` command)."""

    config: str | None  # a path or a name from configs/
    overrides: dict[str, Any]  # from the flags: {"section.key": value}
    sets: tuple[str, ...]  # --set section.key=value
    resume: Path | None
    out: Path | None
    overwrite: bool
    data_dir: Path | None
    mirrors: tuple[str, ...]
    quiet: bool


def _until_done_or_stopped(request: TrainRequest) -> tuple[TrainResult, Session]:
    """Train with the signal handlers in place; a signal ends it with 128 + its number."""
    from mlp_cli.cli.signals import StopNow, StopOnSignals
    from mlp_cli.training.loop import TrainingInterrupted

    stop = StopOnSignals()
    with stop:
        try:
            with stop.at_work():
                return _train(stop, request)
        except TrainingInterrupted as err:
            err.exit_code = stop.exit_code()
            raise
        except StopNow as now:
            raise TrainingInterrupted(stop.stopped_at_once(), now.exit_code()) from None


def _train(stop: StopOnSignals, request: TrainRequest) -> tuple[TrainResult, Session]:
    from mlp_cli.cli.signals import run_checkpoint_remains
    from mlp_cli.nn import fused
    from mlp_cli.training.session import load_inputs, run_session

    session = _open_session(request)
    fused.warm_up()  # the compiled kernels get ready while the data loads
    session.draw_curves = draw_curves
    stop.remains = functools.partial(run_checkpoint_remains, session.run_dir)
    with session:
        data = load_inputs(session, data_dir=request.data_dir, mirrors=request.mirrors,
                           reporter=make_reporter(request.quiet))
        with _make_observer(request.quiet) as observer:
            return run_session(session, data, observer=observer, stop_requested=stop.requested), session


def _open_session(request: TrainRequest) -> Session:
    """Settings and run directory, all checked before any data is loaded."""
    from mlp_cli.config_file import load_config, resolve_config_path
    from mlp_cli.reports.info import check_memory
    from mlp_cli.training.checkpoint import load_checkpoint
    from mlp_cli.training.resume import resume_source
    from mlp_cli.training.session import new_session, resumed_session

    config_path = resolve_config_path(request.config)
    if request.resume is None:
        resolved = load_config(config_path, request.overrides, request.sets)
        check_memory(resolved)  # the memory mlp info counts, against what is free: before any work
        return new_session(resolved, config_path.stem if config_path else "default", request.overwrite)
    checkpoint = load_checkpoint(resume_source(request.resume))
    base = {**checkpoint.config, "run": {**checkpoint.config.get("run", {}), "dir": None}}
    resolved = load_config(config_path, request.overrides, request.sets, base=base)
    check_memory(resolved)
    return resumed_session(resolved, checkpoint, request.resume, request.out, request.overwrite)


def _make_observer(quiet: bool) -> SilentObserver:
    from mlp_cli.cli import progress

    if quiet:
        return progress.SilentObserver()
    if is_interactive():
        return progress.RichObserver()
    return progress.PlainObserver()


def _summary(result: TrainResult, config: Config) -> dict[str, Any]:
    from mlp_cli.config import selection_key

    last = result.rows[-1].to_dict() if result.rows else {}
    return {
        "run_dir": str(result.run_dir),
        "epochs": last.get("epoch"),
        "steps": last.get("step"),
        "train_loss": last.get("train_loss"),
        "train_accuracy": last.get("train_accuracy"),
        "dev_loss": last.get("dev_loss"),
        "dev_accuracy": last.get("dev_accuracy"),
        "best_epoch": result.best_epoch,
        "best_accuracy": result.best_accuracy,
        "best_by": selection_key(config.data.dev_size > 0),
        "planned_epochs": config.train.epochs,
        "stopped_early": bool(last.get("stopped_early", False)),
        "seconds": result.seconds,
        "last_checkpoint": str(result.run_dir / "last.npz"),
        "best_checkpoint": str(result.run_dir / "best.npz"),
    }


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Training finished", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    table.add_row("run", Text(summary["run_dir"]))  # Text: a path is never read as markup
    table.add_row("epochs", str(summary["epochs"]))
    table.add_row("train loss / accuracy", f"{num(summary['train_loss'])} / {pct(summary['train_accuracy'])}")
    table.add_row("dev loss / accuracy", f"{num(summary['dev_loss'])} / {pct(summary['dev_accuracy'])}")
    best_by = "dev" if summary["best_by"] == "dev_accuracy" else "train (no dev set)"
    table.add_row(f"best {best_by} accuracy", f"{pct(summary['best_accuracy'])} (epoch {summary['best_epoch']})")
    if summary["stopped_early"]:
        table.add_row("stopped early", f"epoch {summary['epochs']} of {summary['planned_epochs']}: no dev gain")
    table.add_row("time", f"{summary['seconds']:.1f} s")
    table.add_row("checkpoints", Text(f"{summary['last_checkpoint']}, {summary['best_checkpoint']}"))
    Console(highlight=False).print(table)
    typer.echo(f"Evaluate on the test set with: mlp eval {summary['best_checkpoint']}")
