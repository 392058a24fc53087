"""`mlp export`: a trained network to ONNX or safetensors, for use in other runtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlp_cli.cli.app import app
from mlp_cli.cli.options import complete_from
from mlp_cli.nn.registry import listed
from mlp_cli.reports.export.registry import EXPORT_FORMATS

EXAMPLES_EXPORT = """
Examples:

  mlp export runs/cs229 --format onnx --out model.onnx        (a run: its best.npz)

  mlp export runs/cs229/last.npz --format safetensors --out model.safetensors

  mlp export runs/cs229 --out model.onnx --overwrite

Needs the export extra: pip install -e '.[export]' in the checkout (onnx, safetensors).
"""

FORMAT_HELP = "; ".join(f"{name}: {spec.summary}" for name, spec in EXPORT_FORMATS.items())


@app.command("export", epilog=EXAMPLES_EXPORT)
def export_command(
    source: Annotated[
        Path, typer.Argument(metavar="CHECKPOINT_OR_RUN",
                             help="A checkpoint (.npz) written by mlp train, or a run directory (its best.npz).")
    ],
    fmt: Annotated[
        str, typer.Option("--format", "-f", metavar="FORMAT", help=f"{listed(EXPORT_FORMATS)}. {FORMAT_HELP}.",
                          autocompletion=complete_from(EXPORT_FORMATS))
    ] = "onnx",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write (default: model.onnx or model.safetensors).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Export a trained network for other runtimes: ONNX (onnxruntime, ...) or safetensors (PyTorch).

    The ONNX model takes raw pixels 0-255, float32 (N, 784), and applies the run's normalisation
    itself; it returns "probabilities" and "logits". Both formats record the dataset, class names,
    normalisation, tool version and the checkpoint's SHA-256 as metadata.
    """
    from mlp_cli.reports.export.exporter import export_model

    result = export_model(source, fmt, out, overwrite=overwrite)
    if not quiet:
        typer.echo(f"wrote {result.out} ({result.format}, {result.nbytes:,} bytes) from {result.checkpoint}")
