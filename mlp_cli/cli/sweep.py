"""`mlp sweep`: many runs of one base config, on local processes or a Dask cluster."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer

from mlp_cli.cli.app import app, is_interactive, strict_json, table_console
from mlp_cli.cli.download import make_reporter
from mlp_cli.cli.options import (
    DataDir,
    Log,
    Mirror,
    Quiet,
    complete_config,
    complete_from,
    complete_set,
    complete_sweep,
    report_log_problems,
)
from mlp_cli.errors import MlpError, UsageError
from mlp_cli.nn.registry import listed
from mlp_cli.sweeps.registry import EXECUTORS, PRUNERS, SEARCHES
from mlp_cli.words import plural

if TYPE_CHECKING:
    from mlp_cli.cli.signals import StopOnSignals
    from mlp_cli.sweeps.executors import Executor
    from mlp_cli.sweeps.spec import SweepSpec, Trial
    from mlp_cli.sweeps.sweep import SweepObserver, SweepPlan, SweepResult, SweepRun

EXAMPLES_SWEEP = """
Examples:

  mlp sweep --config best --set optimizer.lr=0.05,0.1,0.2 --set model.hidden=300,800

  mlp sweep --config best --lr 0.05,0.1,0.2 --hidden 300,800 --epochs 5   (the same, mlp train's flags)

  mlp sweep tiny                       (configs/sweeps/tiny.yaml)

  mlp sweep best-300 --jobs 2 --save-best configs/mine.yaml

  mlp sweep tiny --executor dask --scheduler tcp://10.0.0.5:8786

  mlp sweep tiny --dry-run             (list the trials, run nothing)

Running the same command again skips finished trials and resumes interrupted ones.
"""


# The options of `mlp sweep`, one alias each, so that the command reads as a list of them.
SweepName = Annotated[str | None, typer.Argument(
    metavar="[SWEEP]", autocompletion=complete_sweep, help="Sweep file, or a name from configs/sweeps/ (e.g. tiny).")]
BaseConfig = Annotated[str | None, typer.Option(
    "--config", "-c", autocompletion=complete_config, help="Base config (a path or a name from configs/).")]
SweepSets = Annotated[list[str] | None, typer.Option(
    "--set", "-s", autocompletion=complete_set, help="section.key=a,b,c sweeps the values (their product with the "
    "other lists); section.key=a sets it in every trial. Repeatable.")]
Hiddens = Annotated[str | None, typer.Option(metavar="N[,N...]", help="Hidden units: --set model.hidden=...")]
Batches = Annotated[str | None, typer.Option(metavar="N[,N...]", help="Mini-batch size: --set train.batch_size=...")]
Rates = Annotated[str | None, typer.Option(metavar="X[,X...]", help="Learning rate: --set optimizer.lr=...")]
EpochCounts = Annotated[str | None, typer.Option(metavar="N[,N...]", help="Epochs: --set train.epochs=...")]
Draws = Annotated[int | None, typer.Option(min=1, help="Random draws (a sweep file's random: part).")]
DrawSeed = Annotated[int | None, typer.Option(min=0, help="Seed of the random draws.")]
Prune = Annotated[str | None, typer.Option(
    help="Stop poor trials early: " + listed(f"{name} ({spec.help})" for name, spec in PRUNERS.items())
    + "; a sweep file's prune: sets min_epochs and reduction.", autocompletion=complete_from(PRUNERS))]
Search = Annotated[str, typer.Option(
    help="How trials are chosen: " + listed(f"{name} ({spec.help})" for name, spec in SEARCHES.items()) + ".",
    autocompletion=complete_from(SEARCHES))]
SweepOut = Annotated[Path | None, typer.Option(
    "--out", "-o", help="Sweep directory (default sweeps/<name>-<time>, or the newest one holding the same sweep).")]
Jobs = Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Trials at once (default: the cores).")]
ExecutorName = Annotated[str, typer.Option(
    help="Where trials run: " + listed(f"{name} ({spec.help})" for name, spec in EXECUTORS.items()) + ".",
    autocompletion=complete_from(EXECUTORS))]
Scheduler = Annotated[str | None, typer.Option(
    help="Dask scheduler address, e.g. tcp://host:8786 (default: a local cluster).")]
NoWorkersTimeout = Annotated[float, typer.Option(
    min=1, metavar="SECONDS", help="End a Dask sweep whose cluster has had no workers this long (its unfinished "
    "trials are recorded to resume).")]
SaveBest = Annotated[Path | None, typer.Option(
    "--save-best", metavar="FILE", help="Write the best trial's config here.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Validate and list the trials; run nothing.")]
JsonTrials = Annotated[bool, typer.Option("--json", help="Print the trials and the best one as JSON.")]


@app.command("sweep", epilog=EXAMPLES_SWEEP)
def sweep_command(
    ctx: typer.Context,
    spec: SweepName = None,
    config: BaseConfig = None,
    set_: SweepSets = None,
    hidden: Hiddens = None,
    batch: Batches = None,
    lr: Rates = None,
    epochs: EpochCounts = None,
    trials: Draws = None,
    seed: DrawSeed = None,
    prune: Prune = None,
    search: Search = "random",
    out: SweepOut = None,
    jobs: Jobs = None,
    executor: ExecutorName = "local",
    scheduler: Scheduler = None,
    no_workers_timeout: NoWorkersTimeout = 300.0,
    save_best: SaveBest = None,
    dry_run: DryRun = False,
    log: Log = None,
    data_dir: DataDir = None,
    mirror: Mirror = None,
    quiet: Quiet = False,
    json_output: JsonTrials = False,
) -> None:
    """Train many runs of a base config: a grid (--set key=a,b) or a sweep file (grid and random search).

    Every trial's config is validated before anything runs. Each trial is an ordinary run directory
    inside the sweep directory; trials.jsonl records each one's status and scores. A diverging or
    failing trial is a result: the others go on. Ctrl-C, SIGTERM or SIGHUP stops every trial cleanly
    (each saves its checkpoint) and one line, not an error, says how to continue (exit 130, 143 or
    129); a second one stops at once.
    """
    from mlp_cli.sweeps.executors import check_executor
    from mlp_cli.sweeps.sweep import plan_sweep

    timeout = no_workers_timeout if _given(ctx, "no_workers_timeout") else None  # None: the executor's own
    check_executor(executor, scheduler, timeout)
    if save_best is not None:  # before the sweep runs, not after
        from mlp_cli.atomic import check_output

        check_output(save_best)
    if search not in SEARCHES:
        raise UsageError(f"--search {search!r} is not one of {', '.join(SEARCHES)}")
    sets = (*_shortcut_sets({"hidden": hidden, "batch": batch, "lr": lr, "epochs": epochs}), *(set_ or ()))
    plan = _logged(plan_sweep(_spec(spec, config, sets, trials, seed, prune, search), out), tuple(log or ()))
    if dry_run:
        _print_plan(plan, json_output)
        return
    where = Placement(executor, jobs, scheduler, timeout, data_dir, tuple(mirror or ()))
    _execute(plan, where, tuple(log or ()), save_best, quiet, json_output)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given, not left at its default (which then means the library's own)."""
    source = ctx.get_parameter_source(name)  # Typer's own click's ParameterSource: compared by its name
    return source is not None and source.name != "DEFAULT"


class Placement(NamedTuple):
    """Where and with what a sweep's trials run, as the command line gave it."""

    executor: str
    jobs: int | None
    scheduler: str | None
    no_workers_timeout: float | None  # None: not given (the executor's default)
    data_dir: Path | None
    mirrors: tuple[str, ...]


def _execute(plan: SweepPlan, where: Placement, log: tuple[str, ...], save_best: Path | None, quiet: bool,
             json_output: bool) -> None:
    """Run the planned trials with the stop handler in place, then report (and log) the result."""
    from mlp_cli.cli.signals import StopOnSignals, sweep_remains
    from mlp_cli.cli.sweep_view import planned
    from mlp_cli.sweeps.executors import NO_WORKERS_TIMEOUT, make_executor, plan_jobs
    from mlp_cli.sweeps.sweep import SweepRun
    from mlp_cli.training.loggers.sweep_logs import SweepLogs

    logs = SweepLogs(log, plan.directory)  # refused here (no MLflow store named): before any pool
    jobs, note = plan_jobs(where.jobs, where.executor, where.scheduler, planned(plan))
    if note and not quiet:
        typer.echo(f"note: {note}", err=True)
    timeout = NO_WORKERS_TIMEOUT if where.no_workers_timeout is None else where.no_workers_timeout
    pool = make_executor(where.executor, jobs, where.scheduler, timeout)
    if pool.shares_files:  # fetch once here, not once per process
        _prefetch(plan, where.data_dir, where.mirrors, quiet or json_output)
    run = SweepRun(plan, pool, data_dir=where.data_dir, mirrors=where.mirrors,
                   observer=_make_observer(quiet or json_output), tags=logs.trial_tags())
    stop = StopOnSignals(on_first_signal=run.stop)
    stop.remains = lambda: sweep_remains(run.plan.directory)  # run.plan: its directory once created
    with stop:
        result = _run(run, pool, stop)
        problems = logs.close(not result.interrupted, run.plan.directory,
                              [Path(t.config.run.dir or "") for t in run.plan.trials])
        _finish(result, run.plan, save_best, quiet, json_output, stop)  # run.plan: its directory as created
    report_log_problems(problems)


def _logged(plan: SweepPlan, names: tuple[str, ...]) -> SweepPlan:
    """Every trial with run.log = ``names`` (validated); the sweep's fingerprint is unchanged, so
    the same sweep run again with or without --log continues it."""
    from mlp_cli.config import build_config

    if not names:
        return plan
    trials = [dataclasses.replace(t, config=build_config({**t.config.to_dict(), "run": {
        **t.config.to_dict()["run"], "log": list(names)}})) for t in plan.trials]
    return dataclasses.replace(plan, trials=trials, log=names)


def _shortcut_sets(shortcuts: dict[str, str | None]) -> list[str]:
    """``--lr 0.1,0.5`` is ``--set optimizer.lr=0.1,0.5``: mlp train's flags, each one value or a list."""
    from mlp_cli.config import FLAG_KEYS

    return [f"{FLAG_KEYS[flag]}={value}" for flag, value in shortcuts.items() if value is not None]


def _spec(spec: str | None, config: str | None, sets: tuple[str, ...], trials: int | None,
          seed: int | None, prune: str | None = None, search: str = "random") -> SweepSpec:
    from mlp_cli.sweeps.spec import read_sweep_file, resolve_sweep_path, spec_from_sets

    if spec is None:
        return spec_from_sets(config, sets, trials, seed, prune, search)
    if config is not None:
        raise UsageError("a sweep file names its base config; give the file or --config, not both")
    if sets:
        raise UsageError("--set goes with --config (so do --hidden, --batch, --lr and --epochs); a sweep file "
                         "holds its own set:, grid: and random:")
    return read_sweep_file(resolve_sweep_path(spec), trials, seed, prune, search)


def _run(run: SweepRun, pool: Executor, stop: StopOnSignals) -> SweepResult:
    """The trials, under the stop handler: a first signal stops them after their step (each saves),
    a second one at once (they keep their last checkpoints)."""
    from mlp_cli.cli.signals import StopNow

    try:
        with stop.at_work(), run.observer:
            return run.run()
    except StopNow as now:
        pool.kill()
        from mlp_cli.training.loop import TrainingInterrupted

        raise TrainingInterrupted(stop.stopped_at_once(), now.exit_code()) from None
    finally:
        pool.close()


def _finish(result: SweepResult, plan: SweepPlan, save_best: Path | None, quiet: bool, json_output: bool,
            stop: StopOnSignals) -> None:
    from mlp_cli.sweeps.sweep import save_config

    best = result.best()
    best_trial = next((t for t in plan.trials if best and t.name == best["trial"]), None)
    if save_best is not None and best_trial is not None:
        save_config(best_trial.config, save_best)
    if json_output:
        typer.echo(strict_json({"sweep_dir": str(result.directory), "trials": result.rows, "best": best,
                               "skipped": result.skipped, "interrupted": result.interrupted,
                               "saved_best": str(save_best) if save_best and best_trial else None}))
    elif not quiet:
        _print_result(result, best, best_trial, save_best)
    if result.interrupted:
        from mlp_cli.training.loop import TrainingInterrupted

        raise TrainingInterrupted(f"sweep interrupted; running trials saved their checkpoints in "
                                  f"{result.directory}; run the same command again to continue", stop.exit_code())
    full = result.disk_full()
    if full is not None:
        raise MlpError(f"trial {full['trial']} failed: {full['error']}; free some space and run the same command "
                       "again (finished trials are not rerun)")
    if result.lost:
        from mlp_cli.sweeps.executors import ExecutorLost

        unfinished = sum(row["status"] == "interrupted" for row in result.rows)
        raise ExecutorLost(f"{result.lost}; {unfinished} unfinished trial{'s' if unfinished != 1 else ''} recorded "
                           f"as interrupted in {result.directory}; run the same command again to continue")
    if best is None and result.rows:
        raise MlpError(f"no trial finished successfully; each one's error is in {result.directory}/trials.jsonl")


def _print_result(result: SweepResult, best: dict[str, Any] | None, best_trial: Trial | None,
                  save_best: Path | None) -> None:
    from rich.markup import escape

    from mlp_cli.cli.sweep_view import pct, trials_table

    table = trials_table(result.rows, f"Sweep {escape(str(result.directory))} (sorted by dev accuracy)")
    console = table_console(table)
    console.print(table)
    if best is None or best_trial is None:
        console.print("[red]no trial finished successfully[/]")
        return
    console.print(f"best: [bold]{escape(best['trial'])}[/] dev {pct(best['best_dev_accuracy'])} "
                  f"(epoch {best['best_epoch']}); its config: {escape(str(best_trial.config.run.dir))}/config.yaml")
    if save_best is not None:
        console.print(f"saved as {escape(str(save_best))}; train it with: mlp train --config {escape(str(save_best))}")
    else:
        console.print("save it as a config file with --save-best FILE (the finished trials are not rerun)")


def _print_plan(plan: SweepPlan, json_output: bool) -> None:
    from mlp_cli.cli.sweep_view import planned

    if json_output:
        typer.echo(strict_json({"sweep_dir": str(plan.directory), "continued": plan.continued,
                               "trials": [{"trial": t.name, "overrides": t.overrides} for t in plan.trials]}))
        return
    typer.echo(f"{plural(planned(plan), 'trial')}, all valid; sweep directory {plan.directory}"
               + (" (continued)" if plan.continued else ""))
    for trial in plan.trials:
        typer.echo(f"  {trial.name}")


def _prefetch(plan: SweepPlan, data_dir: Path | None, mirrors: tuple[str, ...], quiet: bool) -> None:
    from mlp_cli.data.cache import load_dataset

    for dataset in sorted({t.config.data.dataset for t in plan.trials}):
        load_dataset(dataset, "train", data_dir, mirrors, reporter=make_reporter(quiet))


def _make_observer(quiet: bool) -> SweepObserver:
    from mlp_cli.cli.sweep_view import PlainSweepObserver, RichSweepObserver
    from mlp_cli.sweeps.sweep import SweepObserver

    if quiet:
        return SweepObserver()
    return RichSweepObserver() if is_interactive() else PlainSweepObserver()
