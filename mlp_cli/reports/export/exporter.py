"""``mlp export``: a checkpoint (or a run directory's best.npz) to a file another runtime reads.

The checkpoint goes through the same bounded loader as every other command (a corrupt or
hostile file is one line), ``--out`` is checked before anything is encoded (an existing file
needs ``overwrite``; a directory, device, FIFO or socket is refused and left as it was), and the
file is written to a temporary sibling and moved into place, so a failed export leaves nothing
half-written.

What every format records beside the weights (``ExportSource.metadata``, all strings, as both
ONNX's ``metadata_props`` and safetensors' header want them): the dataset and its class names,
the input normalisation, the tool's version, the epoch and the SHA-256 of the checkpoint file.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from mlp_cli import __version__
from mlp_cli.atomic import check_output, write_output_file
from mlp_cli.data.preprocess import Preprocessing
from mlp_cli.data.registry import class_names
from mlp_cli.errors import MlpError, UsageError
from mlp_cli.nn.network import Params
from mlp_cli.reports.export.registry import INSTALL_HINT, get_format
from mlp_cli.training.checkpoint import checkpoint_sha256, load_checkpoint, model_checkpoint


@dataclass(frozen=True)
class ExportSource:
    """A trained network, the normalisation it was trained with, and what to record about it."""

    params: Params  # W1 (784, h), b1 (h,), W2 (h, 10), b2 (10,): float32 or float64
    preprocessing: Preprocessing  # X = (pixels - mean) / std
    metadata: dict[str, str]


@dataclass(frozen=True)
class ExportResult:
    out: Path
    format: str
    checkpoint: Path
    nbytes: int


def export_model(source: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str] | None = None,
                 *, overwrite: bool = False) -> ExportResult:
    """Write the network of ``source`` (a checkpoint, or a run directory: its best.npz) as ``fmt``."""
    spec = get_format(fmt)
    out_path = Path(out) if out is not None else Path(spec.default_out)
    check_out(out_path, overwrite)  # before any work: a bad --out costs nothing
    try:  # before the checkpoint is read: a missing package is said first
        encoder = importlib.import_module(f"mlp_cli.reports.export.{spec.module}")
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] != spec.requires:
            raise
        raise UsageError(f"--format {fmt} needs the {spec.requires} package, which is not installed: "
                         f"{INSTALL_HINT}") from None
    checkpoint = model_checkpoint(Path(source))
    if os.path.lexists(out_path) and out_path.resolve() == checkpoint.resolve():
        raise UsageError(f"--out {out_path} is the checkpoint being exported; write the export elsewhere")
    data: bytes = encoder.encode(load_source(checkpoint))
    check_out(out_path, overwrite)  # again: something may have appeared there meanwhile
    write_output_file(out_path, data, MlpError)
    return ExportResult(out=out_path, format=fmt, checkpoint=checkpoint, nbytes=len(data))


def check_out(path: Path, overwrite: bool) -> None:
    """Before any work: ``--out`` can be written (the tool's one rule, ``atomic.check_output``: a
    device, FIFO, socket or directory there is refused, a link would be replaced, never followed),
    and an existing file is replaced only with ``overwrite``."""
    if path.is_dir() and not path.is_symlink():
        raise UsageError(f"--out {path} is a directory; give a file name such as {path / 'model.onnx'}")
    check_output(path)
    if os.path.lexists(path) and not overwrite:
        raise UsageError(f"--out {path} already exists; pass --overwrite to replace it")


def load_source(checkpoint: Path) -> ExportSource:
    """The checkpoint, validated by the usual loader, and the metadata the export records."""
    ckpt = load_checkpoint(checkpoint)
    dataset = str(ckpt.config["data"]["dataset"])
    prep = Preprocessing.from_dict(ckpt.meta["preprocessing"])
    metadata = {
        "dataset": dataset,
        "class_names": json.dumps(list(class_names(dataset))),
        "preprocessing": json.dumps(prep.to_dict()),
        "input": "raw pixels 0-255 as float32, (N, 784): rows of 28x28 images, white on black as in MNIST",
        "hidden_units": str(ckpt.params.hidden),
        "dtype": str(ckpt.params.dtype),
        "epoch": str(ckpt.epoch),
        "tool_version": __version__,
        "checkpoint_sha256": checkpoint_sha256(checkpoint),
    }
    return ExportSource(params=ckpt.params, preprocessing=prep, metadata=metadata)
