"""The live training display: its bars end where the run ended."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from mlp_cli.cli.progress import PlainObserver, RichObserver
from mlp_cli.config import Config
from mlp_cli.words import plural


def test_the_last_frame_shows_the_last_epochs_batches_done(tmp_path: Path) -> None:
    config = Config()
    row = SimpleNamespace(train_loss=0.5, train_accuracy=0.9, dev_loss=0.4, dev_accuracy=0.91, lr=0.1, seconds=1.0)
    with RichObserver() as observer:
        observer.on_start(config, tmp_path, steps_per_epoch=5, start_epoch=1)
        for epoch in (1, 2):
            for batch in range(1, 6):
                observer.on_step(epoch, batch, 5, 0.5)
                task = observer.progress.tasks[observer.batch_task]
                assert task.completed == batch and task.total == 5  # a new epoch starts from 1/5
            observer.on_epoch(SimpleNamespace(epoch=epoch, **vars(row)), is_best=True)
        batches = observer.progress.tasks[observer.batch_task]
        assert (batches.completed, batches.total) == (5, 5)  # not a full bar labelled 0/5
        assert observer.progress.tasks[observer.epochs_task].completed == 2


def test_counts_read_as_english_one_step_not_one_steps() -> None:
    assert (plural(1, "step"), plural(0, "step"), plural(2, "trial")) == ("1 step", "0 steps", "2 trials")
    for steps, shown in ((1, "1 step/epoch"), (60, "60 steps/epoch")):
        stream = io.StringIO()
        PlainObserver(stream).on_start(Config(), Path("runs/x"), steps, 1)
        assert stream.getvalue().rstrip().endswith(shown)
