"""One training run from start to end, as ``mlp train`` and ``mlp_cli.train`` start it.

Everything that can be refused is refused first, before any data is loaded: the config, the
resume rules (``resume.py``), a run directory that holds another run, a run directory that
another process is writing (its lock is taken here and held until the run ends). Only then is
the data loaded, the directory made ready (a branch's history copied, discarded epochs removed,
``config.yaml`` written with the settings in force) and the loop run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlp_cli.atomic import atomic_write_text
from mlp_cli.config import Config
from mlp_cli.errors import MlpError
from mlp_cli.training.checkpoint import Checkpoint
from mlp_cli.training.inputs import TrainingData, prepare_data
from mlp_cli.training.loggers.base import Fanout, RunStart, check_loggers, close_loggers, open_loggers
from mlp_cli.training.loop import Observer, TrainResult, train
from mlp_cli.training.resume import ResumePlan, changed_settings, check_resumable, plan_resume, prepare_run_dir
from mlp_cli.training.run_dir import (
    RunLock,
    check_free,
    check_products,
    clear_products,
    make_run_dir,
    planned_run_dir,
)

if TYPE_CHECKING:
    from mlp_cli.data.download import Reporter


@dataclass
class Session:
    config: Config  # run.dir is the directory actually written
    run_dir: Path
    overwrite: bool = False
    checkpoint: Checkpoint | None = None
    plan: ResumePlan | None = None
    lock: RunLock | None = None
    tags: dict[str, str] = field(default_factory=dict)  # for the loggers: sweep, trial
    draw_curves: Callable[[Path, Path], None] | None = None  # for the loggers (the CLI gives reports/')
    log_problems: list[str] = field(default_factory=list)  # what the loggers could not do (one line each)

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_session(config: Config, config_name: str | None, overwrite: bool = False) -> Session:
    """A fresh run: its directory must be free (or ``overwrite``) and not being written."""
    run_dir = planned_run_dir(config.run.dir, config.run.name, config_name)
    check_free(run_dir, overwrite)
    check_loggers(config)
    session = Session(_with_run_dir(config, run_dir), run_dir, overwrite=overwrite)
    if run_dir.is_dir():
        session.lock = RunLock(run_dir).acquire()
        check_free(run_dir, overwrite, lock_held=True)  # it may have become a run meanwhile
    return session


def resumed_session(
    config: Config, checkpoint: Checkpoint, source: Path, out: Path | None, overwrite: bool = False
) -> Session:
    """Continue, branch or overwrite (see resume.py); refused here if the history would shrink."""
    check_resumable(config, checkpoint)
    plan = plan_resume(source, checkpoint, out, overwrite)
    check_loggers(config)
    session = Session(_with_run_dir(config, plan.run_dir), plan.run_dir, overwrite, checkpoint, plan)
    if plan.run_dir.is_dir():
        session.lock = RunLock(plan.run_dir).acquire()
        try:
            check_products(plan.run_dir)  # the run's files are replaced as it goes: a FIFO there is refused now
        except MlpError:
            session.lock.release()
            raise
    return session


def load_inputs(session: Session, *, data_dir: str | Path | None = None, mirrors: tuple[str, ...] = (),
                reporter: Reporter | None = None) -> TrainingData:
    """The run's data, normalised as the checkpoint was when resuming."""
    from mlp_cli.data.preprocess import Preprocessing

    saved = session.checkpoint
    prep = Preprocessing.from_dict(saved.meta["preprocessing"]) if saved is not None else None
    return prepare_data(session.config, data_dir=data_dir, mirrors=mirrors, reporter=reporter, preprocessing=prep)


def run_session(
    session: Session, data: TrainingData, *, observer: Observer | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> TrainResult:
    """Make the run directory ready (under its lock) and train."""
    run_dir = session.run_dir
    make_run_dir(run_dir)
    if session.lock is None:
        session.lock = RunLock(run_dir).acquire()
        check_free(run_dir, session.overwrite, lock_held=True)
    if session.plan is not None and session.checkpoint is not None:
        prepare_run_dir(session.plan, session.checkpoint)  # config.yaml: at the first save
    else:
        if session.overwrite:
            clear_products(run_dir)
        atomic_write_text(run_dir / "config.yaml", session.config.to_yaml())
    loggers, completed = open_loggers(_start(session)), False
    try:
        result = train(session.config, data, run_dir, resume=session.checkpoint,
                       observer=Fanout([observer or Observer(), *loggers]) if loggers else observer,
                       stop_requested=stop_requested)
        completed = True
        return result
    finally:
        session.log_problems = close_loggers(loggers, completed)


def _start(session: Session) -> RunStart:
    """Where the run starts, as the loggers need to know it."""
    saved, tags = session.checkpoint, dict(session.tags)
    if saved is None or session.plan is None:
        return RunStart(session.config, session.run_dir, tags=tags, draw_curves=session.draw_curves)
    if session.plan.mode == "branch":
        tags["parent"] = str(session.plan.source)
    return RunStart(session.config, session.run_dir, session.plan.source, session.plan.mode, saved.step,
                    changed_settings(saved.config, session.config), tags, session.draw_curves)


def _with_run_dir(config: Config, run_dir: Path) -> Config:
    """The config as the run uses it: ``run.dir`` names the directory really written."""
    return dataclasses.replace(config, run=dataclasses.replace(config.run, dir=str(run_dir)))
