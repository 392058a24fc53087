"""The formats ``mlp export`` writes: one entry each.

An entry says which module of this package encodes the format (it defines ``encode(source) ->
bytes``), which package that module needs (the hint names the extra that installs it), the file
name ``--out`` defaults to, and a line for the help text. ``--format``'s help, completion and
validation read this table, so adding a format is its module plus one entry here. This module
imports nothing, so that ``mlp --help`` can read it cheaply.
"""

from __future__ import annotations

from typing import NamedTuple

from mlp_cli.errors import UsageError

INSTALL_HINT = "pip install -e '.[export]' (in the mlp checkout), or pip install onnx safetensors"


class ExportFormat(NamedTuple):  # a NamedTuple, as every registry's entries: cheap at start-up
    module: str  # in mlp_cli.reports.export, defining encode(source) -> bytes
    requires: str  # the package that module imports (from the ``export`` extra)
    default_out: str  # --out when none is given
    summary: str  # one line for --help


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(
        "to_onnx", "onnx", "model.onnx",
        "the whole network, normalisation included: raw pixels in, probabilities and logits out",
    ),
    "safetensors": ExportFormat(
        "to_safetensors", "safetensors", "model.safetensors",
        "the four tensors as PyTorch's nn.Sequential(Linear, Sigmoid, Linear) names them",
    ),
}


def get_format(name: str) -> ExportFormat:
    """The entry for ``name``; an unknown name is a usage error listing the known ones."""
    try:
        return EXPORT_FORMATS[name]
    except KeyError:
        known = ", ".join(EXPORT_FORMATS)
        raise UsageError(f"unknown export format {name!r}; choose one of: {known}") from None
