"""What a run writes into its directory as it trains.

After every epoch: one row appended to ``metrics.jsonl``, then ``last.npz`` (the latest state,
what ``--resume`` continues), ``best.npz`` when the epoch is the best so far (the run's model)
and ``epoch-NNN.npz`` every ``run.checkpoint_every`` epochs. An interrupted epoch saves
``last.npz`` alone, at the step it reached.
"""

from __future__ import annotations

from pathlib import Path

from mlp_cli.atomic import atomic_write_text
from mlp_cli.config import Config
from mlp_cli.training.inputs import TrainingData
from mlp_cli.training.metrics import METRICS_FILE, EpochMetrics, append_metrics
from mlp_cli.training.run_dir import make_run_dir
from mlp_cli.training.state import TrainState


class RunRecord:
    """Writes the run's files; ``config.yaml`` is rewritten with the settings in force on the first
    save (a resumed run that fails before saving leaves the directory as it was)."""

    def __init__(self, run_dir: Path, config: Config, data: TrainingData) -> None:
        self.run_dir, self.config, self.data = run_dir, config, data
        self._config_written = False

    def _settings(self) -> None:
        if not self._config_written:
            make_run_dir(self.run_dir)
            atomic_write_text(self.run_dir / "config.yaml", self.config.to_yaml())
            self._config_written = True

    @property
    def last(self) -> Path:
        return self.run_dir / "last.npz"

    def save_interrupted(self, state: TrainState) -> Path:
        """The state in the middle of an epoch (position: the step reached)."""
        self._settings()
        state.save(self.last, self.config, self.data)
        return self.last

    def epoch_done(self, state: TrainState, row: EpochMetrics, accuracy: float, is_best: bool) -> None:
        self._settings()
        append_metrics(self.run_dir / METRICS_FILE, row)
        state.save(self.last, self.config, self.data, accuracy)
        if is_best:
            state.save(self.run_dir / "best.npz", self.config, self.data, accuracy)
        every = self.config.run.checkpoint_every
        if every and state.epoch % every == 0:
            state.save(self.run_dir / f"epoch-{state.epoch:03d}.npz", self.config, self.data, accuracy)
