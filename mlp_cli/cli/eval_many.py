"""`mlp eval` of several models: one named line each, then a comparison; and the record each
evaluation leaves in its run directory (eval.json, read by `mlp runs`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mlp_cli.cli.app import print_error, strict_json, table_console
from mlp_cli.data.registry import class_names
from mlp_cli.errors import MlpError

if TYPE_CHECKING:
    from mlp_cli.data.download import Reporter
    from mlp_cli.reports.confusion import EvalReport


def resolve_models(paths: list[Path]) -> list[Path]:
    """Checkpoint files as given; a run directory means its best.npz."""
    from mlp_cli.atomic import check_output
    from mlp_cli.reports.eval_record import record_path
    from mlp_cli.training.checkpoint import model_checkpoint

    models = [model_checkpoint(path) for path in paths]

    for path in models:  # where the result will be recorded can take it: refused before any work
        record = record_path(path)
        if record is not None:
            check_output(record)
    return models


def record(checkpoint: Path, epoch: int, report: EvalReport) -> None:
    """Keep the result in the run directory; a disk that refuses, or an old record that was bad,
    is a note, not a failure."""
    from mlp_cli.reports.eval_record import record_evaluation

    try:
        _, note = record_evaluation(checkpoint, epoch, report.split, report.loss, report.accuracy, report.examples)
    except (OSError, MlpError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        print_error(MlpError(f"(not fatal) could not record the result in {checkpoint.parent}: {reason}"))
        return
    if note:
        print_error(MlpError(f"(not fatal) {note}"))


def evaluate_many(models: list[Path], split: str, *, data_dir: Path | None, mirrors: tuple[str, ...],
                  reporter: Reporter, quiet: bool, json_output: bool) -> None:
    from mlp_cli.reports.confusion import build_report
    from mlp_cli.reports.evaluate import load_split
    from mlp_cli.training.checkpoint import load_checkpoint

    checkpoints = [load_checkpoint(path) for path in models]  # every file checked before any work
    results = []
    for path, ckpt in zip(models, checkpoints, strict=True):
        images, X, y = load_split(ckpt, split, data_dir=data_dir, mirrors=mirrors, reporter=reporter)
        report = build_report(ckpt.params, X, y, split)
        if not math.isfinite(report.loss):  # as for one model: finite weights whose scores overflow
            raise MlpError(f"evaluating {path} overflows: the network's scores are not finite on the {split} split "
                           "(weights too large for the model's dtype), so its loss and accuracy mean nothing")
        record(path, ckpt.epoch, report)
        names = list(class_names(ckpt.config["data"]["dataset"]))
        results.append({"checkpoint": str(path), "epoch": ckpt.epoch, "class_names": names, **report.to_dict()})
        if not json_output:
            typer.echo(f"{path} (epoch {ckpt.epoch}): loss {report.loss:.4f}  accuracy {100 * report.accuracy:.2f}%")
    if json_output:
        typer.echo(strict_json(results))
    elif not quiet:
        _print_comparison(results)


def _print_comparison(results: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table


    best = max(r["accuracy"] for r in results)
    table = Table(title=f"{len(results)} models on the {results[0]['split']} split, best first", title_justify="left")
    for name in ("model", "epoch", "loss", "accuracy", "vs best", "errors"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for r in sorted(results, key=lambda r: -r["accuracy"]):
        gap = "best" if r["accuracy"] == best else f"{100 * (r['accuracy'] - best):+.2f} pts"
        wrong = round((1 - r["accuracy"]) * r["examples"])
        table.add_row(escape(r["checkpoint"]), str(r["epoch"]), f"{r['loss']:.4f}", f"{100 * r['accuracy']:.2f}%",
                      gap, f"{wrong:,}")
    table_console(table).print(table)
