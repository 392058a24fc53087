"""What ``mlp sweep --log`` asks of the sweep as a whole (each trial logs itself, as a run).

MLflow: one parent run for the sweep, each trial's run its child (``mlflow.parentRunId``).
TensorBoard: each trial writes its event files into its own directory, so ``tensorboard
--logdir sweeps/X`` shows every trial, their settings side by side in the HParams dashboard; a
trial that ran where its files do not come back whole (a Dask worker returns only metrics.jsonl
and the checkpoints) gets its events from metrics.jsonl once it is back.
"""

from __future__ import annotations

from pathlib import Path

from mlp_cli.training.metrics import METRICS_FILE


class SweepLogs:
    def __init__(self, names: tuple[str, ...], directory: Path) -> None:
        from mlp_cli.training.loggers.mlflow_logger import SweepParent

        self.names = names
        self.parent = SweepParent(directory) if "mlflow" in names else None

    def trial_tags(self) -> dict[str, str]:
        return self.parent.child_tags() if self.parent is not None else {}

    def close(self, completed: bool, directory: Path, trial_dirs: list[Path]) -> list[str]:
        """Finish the sweep's logs; the problems met, one line each."""
        from mlp_cli.training.loggers.tensorboard import backfill
        from mlp_cli.training.run_dir import event_files

        if "tensorboard" in self.names:
            for trial_dir in trial_dirs:
                if (trial_dir / METRICS_FILE).is_file() and not event_files(trial_dir):
                    backfill(trial_dir)
        problem = self.parent.close(completed, directory) if self.parent is not None else None
        return [problem] if problem else []
