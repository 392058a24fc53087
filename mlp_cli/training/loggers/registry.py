"""The loggers ``run.log`` may name (``--log`` on ``mlp train`` and ``mlp sweep``): one entry each.

An entry says which module implements the logger, what it needs installed, and one line of help.
The config's choices, the CLI's help text and ``mlp log`` read this table, so adding a logger is
its module plus one entry here. Like ``nn/registry.py`` this module imports nothing and its entries
are NamedTuples, so that the config and ``mlp --help`` can read it cheaply.
"""

from __future__ import annotations

from typing import NamedTuple


class LoggerSpec(NamedTuple):
    implementation: str  # module.Class under mlp_cli.training.loggers
    requires: str | None  # the pip extra it needs, or None (nothing beyond the tool's own install)
    summary: str  # one line, for help text


LOGGERS: dict[str, LoggerSpec] = {
    "tensorboard": LoggerSpec(
        "tensorboard.TensorBoardLogger", None,
        "event files in the run directory (tensorboard --logdir runs)",
    ),
    "mlflow": LoggerSpec(
        "mlflow_logger.MlflowLogger", "mlflow",
        "a run in the tracking store MLFLOW_TRACKING_URI names (pip install 'mlp[mlflow]')",
    ),
}
