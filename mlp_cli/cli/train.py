"""`mlp train`."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from mlp_cli.cli.app import app, is_interactive
from mlp_cli.cli.options import DataDir, Mirror, Quiet, download_reporter

EXAMPLES_TRAIN = """
Examples:

  mlp train --hidden 300 --batch 1000

  mlp train --config configs/cs229.yaml

  mlp train -c configs/best.yaml --set schedule.name=cosine --epochs 40 --out runs/cosine

  mlp train --resume runs/cosine/last.npz
"""

@app.command("train", epilog=EXAMPLES_TRAIN)
def train_command(
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="YAML config file, or a name from configs/ (e.g. cs229)."),
    ] = None,
    hidden: Annotated[int | None, typer.Option(help="Hidden units (model.hidden).")] = None,
    batch: Annotated[int | None, typer.Option(help="Mini-batch size (train.batch_size).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (optimizer.lr).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs (train.epochs).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the weights and shuffling (train.seed).")] = None,
    l2: Annotated[float | None, typer.Option(help="L2 penalty lambda on W1 and W2 (train.l2).")] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="sgd, momentum, nesterov, adam or adamw (optimizer.name).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default runs/<name>).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (run.name).")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override any key: section.key=value. Repeatable."),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the run of this checkpoint (e.g. runs/x/last.npz).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    quiet: Quiet = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the final summary as JSON.")] = False,
) -> None:
    """Train the two-layer network; write metrics.jsonl, last.npz and best.npz to a run directory.

    Settings: the config file (or the defaults that configs/default.yaml spells out), then flags, then --set.

    Everything is validated before any work starts; MNIST is downloaded first if it is not cached.
    """
    from mlp_cli.config import FLAG_KEYS
    from mlp_cli.config_file import load_config, resolve_config_path
    from mlp_cli.data.preprocess import Preprocessing
    from mlp_cli.training.checkpoint import load_checkpoint
    from mlp_cli.training.loop import check_resumable, create_run_dir, prepare_data, train

    flags = {"hidden": hidden, "batch": batch, "lr": lr, "epochs": epochs, "seed": seed, "l2": l2,
             "optimizer": optimizer, "out": str(out) if out else None, "name": name}
    overrides = {FLAG_KEYS[k]: v for k, v in flags.items() if v is not None}
    config_path = resolve_config_path(config)

    checkpoint = None
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        resolved = load_config(config_path, overrides, tuple(set_ or ()), base=checkpoint.config)
        check_resumable(resolved, checkpoint)  # before any data is loaded or downloaded
        run_dir = resume.parent
        config_name = None
    else:
        resolved = load_config(config_path, overrides, tuple(set_ or ()))
        config_name = config_path.stem if config_path else "default"
        run_dir = None

    reporter = download_reporter(quiet or json_output)
    data = prepare_data(
        resolved, data_dir=data_dir, mirrors=tuple(mirror or ()), reporter=reporter,
        preprocessing=Preprocessing.from_dict(checkpoint.meta["preprocessing"]) if checkpoint else None,
    )
    if run_dir is None:
        run_dir = create_run_dir(resolved, config_name, overwrite=overwrite)
    observer = _make_observer(quiet or json_output)
    stop = _StopOnInterrupt()
    try:
        with stop, observer:
            result = train(resolved, data, run_dir, resume=checkpoint, observer=observer,
                           stop_requested=stop.requested)
    except KeyboardInterrupt:  # a second Ctrl-C before the first one's checkpoint was written
        raise _stopped_at_once(run_dir) from None
    summary = _summary(result, resolved)
    if json_output:
        typer.echo(json.dumps(summary))
    elif not quiet:
        _print_summary(summary)
        from mlp_cli.cli.render import training_sparklines
        from mlp_cli.training.metrics import read_metrics

        typer.echo(training_sparklines(read_metrics(result.run_dir)))


def _stopped_at_once(run_dir: Path) -> Exception:
    """What a second Ctrl-C leaves: the last checkpoint written before it, if any (writes are
    atomic, so one interrupted mid-write leaves the previous file whole)."""
    from mlp_cli.errors import MlpError
    from mlp_cli.training.checkpoint import load_checkpoint
    from mlp_cli.training.loop import TrainingInterrupted

    last = run_dir / "last.npz"
    try:
        saved = load_checkpoint(last)
    except MlpError:
        return TrainingInterrupted("stopped at once by a second Ctrl-C, before any checkpoint was saved")
    return TrainingInterrupted(
        f"stopped at once by a second Ctrl-C; the last checkpoint is {last} (epoch {saved.epoch}, "
        f"step {saved.step}); continue with: mlp train --resume {last}"
    )


class _StopOnInterrupt:
    """First Ctrl-C: finish the current step, save, exit 130. Second Ctrl-C: stop at once."""

    def __init__(self) -> None:
        self._flag = False
        self._previous: Any = None

    def requested(self) -> bool:
        return self._flag

    def _handle(self, signum: int, frame: Any) -> None:
        if self._flag:
            raise KeyboardInterrupt
        self._flag = True

    def __enter__(self) -> _StopOnInterrupt:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (e.g. some test runners)
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _make_observer(quiet: bool) -> Any:
    from mlp_cli.cli import progress

    if quiet:
        return progress.SilentObserver()
    if is_interactive():
        return progress.RichObserver()
    return progress.PlainObserver()


def _summary(result: Any, config: Any) -> dict[str, Any]:
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
        "best_by": "dev_accuracy" if config.data.dev_size else "train_accuracy",  # no dev set: train
        "planned_epochs": config.train.epochs,
        "stopped_early": bool(last.get("stopped_early", False)),
        "seconds": result.seconds,
        "last_checkpoint": str(result.run_dir / "last.npz"),
        "best_checkpoint": str(result.run_dir / "best.npz"),
    }


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Training finished", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    table.add_row("run", summary["run_dir"])
    table.add_row("epochs", str(summary["epochs"]))
    table.add_row("train loss / accuracy", f"{num(summary['train_loss'])} / {pct(summary['train_accuracy'])}")
    table.add_row("dev loss / accuracy", f"{num(summary['dev_loss'])} / {pct(summary['dev_accuracy'])}")
    best_by = "dev" if summary["best_by"] == "dev_accuracy" else "train (no dev set)"
    table.add_row(f"best {best_by} accuracy", f"{pct(summary['best_accuracy'])} (epoch {summary['best_epoch']})")
    if summary["stopped_early"]:
        table.add_row("stopped early", f"epoch {summary['epochs']} of {summary['planned_epochs']}: no dev gain")
    table.add_row("time", f"{summary['seconds']:.1f} s")
    table.add_row("checkpoints", f"{summary['last_checkpoint']}, {summary['best_checkpoint']}")
    Console(highlight=False).print(table)
    typer.echo(f"Evaluate on the test set with: mlp eval {summary['best_checkpoint']}")
