"""`mlp eval`: loss and accuracy of a checkpoint on a split, per-class precision and recall, the
confusion matrix, and the images it is most confidently wrong about."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mlp_cli.cli.app import app, strict_json
from mlp_cli.cli.download import make_reporter
from mlp_cli.data.registry import class_names
from mlp_cli.errors import MlpError, UsageError

if TYPE_CHECKING:
    from mlp_cli.data.download import Reporter
    from mlp_cli.reports.confusion import EvalReport
from mlp_cli.cli.options import DataDir, Mirror

EXAMPLES_EVAL = """
Examples:

  mlp eval runs/cs229/best.npz

  mlp eval runs/cs229 runs/cs229-l2                (each run's best.npz: a line each, then a comparison)

  mlp eval sweeps/tiny-*/trials/* -q

  mlp eval runs/cs229/best.npz --errors 8          (the 8 most confidently wrong test images)

  mlp eval runs/cs229/best.npz --split dev --json

  NO_COLOR=1 mlp eval runs/cs229/best.npz > report.txt
"""


@app.command("eval", epilog=EXAMPLES_EVAL)
def eval_command(
    checkpoints: Annotated[
        list[Path], typer.Argument(metavar="CHECKPOINT...", help="Checkpoint files (.npz) written by mlp train, "
                                   "or run directories (their best.npz).")
    ],
    split: Annotated[str, typer.Option(help="test (the official 10,000), dev or train.")] = "test",
    errors: Annotated[
        int, typer.Option("--errors", "-e", min=0, metavar="N",
                          help="Also show the N most confidently misclassified images.")
    ] = 0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print everything (per-class metrics, confusion matrix, errors) as JSON.")
    ] = False,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the loss and accuracy line (and errors).")
    ] = False,
) -> None:
    """Evaluate a checkpoint: accuracy, per-class metrics, confusion matrix, worst mistakes. Several: a comparison.

    Loss and accuracy on the test (default), dev or train split, rebuilt as the checkpoint's run defined it.

    Per class: precision, recall, F1 and one-vs-rest accuracy; then the 10x10 confusion matrix.

    --errors N draws the N test images the network is most confidently wrong about.

    Each result is also recorded in the run directory (eval.json), where `mlp runs` shows it.
    """
    from mlp_cli.cli.eval_many import evaluate_many, resolve_models
    from mlp_cli.reports.evaluate import EVAL_SPLITS

    if split not in EVAL_SPLITS:
        raise UsageError(f"--split {split!r} is not one of {', '.join(EVAL_SPLITS)}")
    if errors and quiet:
        raise UsageError("--quiet prints only the loss and accuracy line, so --errors would draw nothing: give one")
    models = resolve_models(checkpoints)
    reporter = make_reporter(quiet or json_output)
    if len(models) == 1:
        _evaluate_one(models[0], split, errors, data_dir, tuple(mirror or ()), reporter, quiet, json_output)
        return
    if errors:
        raise UsageError("--errors draws one model's mistakes; give a single checkpoint with it")
    evaluate_many(models, split, data_dir=data_dir, mirrors=tuple(mirror or ()), reporter=reporter, quiet=quiet,
                  json_output=json_output)


def _evaluate_one(checkpoint: Path, split: str, errors: int, data_dir: Path | None, mirrors: tuple[str, ...],
                  reporter: Reporter, quiet: bool, json_output: bool) -> None:
    from mlp_cli.cli.eval_many import record
    from mlp_cli.reports.confusion import build_report
    from mlp_cli.reports.evaluate import load_split
    from mlp_cli.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    images, X, y = load_split(ckpt, split, data_dir=data_dir, mirrors=mirrors, reporter=reporter)
    report = build_report(ckpt.params, X, y, split, errors=errors, images=images)
    if not math.isfinite(report.loss):  # finite weights whose scores still overflow
        raise MlpError(
            f"evaluating {checkpoint} overflows: the network's scores are not finite on the {split} "
            "split (weights too large for the model's dtype), so its loss and accuracy mean nothing"
        )
    names = class_names(ckpt.config["data"]["dataset"])
    record(checkpoint, ckpt.epoch, report)
    if json_output:
        typer.echo(strict_json({"checkpoint": str(checkpoint), "epoch": ckpt.epoch, "class_names": list(names),
                                **report.to_dict()}))
    elif quiet:
        typer.echo(f"loss {report.loss:.4f}  accuracy {100 * report.accuracy:.2f}%")
    else:
        _print_report(checkpoint, ckpt.epoch, report, names)


def _print_report(checkpoint: Path, epoch: int, report: EvalReport, names: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.markup import escape

    from mlp_cli.cli.render import confusion_table, mistakes_view, per_class_table, uses_colour

    console = Console(highlight=False)
    where = f"{report.split} split, {report.examples:,} examples"
    console.print(f"[bold]{escape(str(checkpoint))}[/] (epoch {epoch}), {where}")
    console.print(f"loss [cyan]{report.loss:.4f}[/]  accuracy [bold cyan]{100 * report.accuracy:.2f}%[/]")
    digits = names == tuple(str(c) for c in range(len(names)))
    console.print(per_class_table(report.per_class, title="Per class", names=None if digits else names))
    console.print(confusion_table(report.confusion))
    if report.mistakes:
        console.print(f"[bold]The {len(report.mistakes)} most confidently wrong[/] "
                      "(#index: true → predicted (probability))")
        console.print(mistakes_view(report.mistakes, uses_colour(console), names))
