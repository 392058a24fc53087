"""The executors ``mlp sweep --executor`` may name, and the pruners ``--prune`` may: one entry each.

An entry says which class in ``mlp_cli.sweeps.executors`` implements the executor and what the
sweep needs to know of it before it starts one. ``--executor``'s help, its shell completion and
``make_executor``'s check read this table, so adding an executor is its class plus one entry here.
This module imports nothing of the tool's, and its entries are NamedTuples (cheaper to define than
dataclasses), so that ``mlp --help`` can read it cheaply.
"""

from __future__ import annotations

from typing import NamedTuple


class ExecutorSpec(NamedTuple):
    implementation: str  # the class in mlp_cli.sweeps.executors
    help: str  # what it is, for --executor's help
    shares_files: bool  # trials write their directories in place (else they send their files back)
    jobs: int | None = None  # trials at once when --jobs is not given (None: one per core)
    takes_scheduler: bool = False  # --scheduler names where it runs; --no-workers-timeout, how long it may lack any


EXECUTORS: dict[str, ExecutorSpec] = {
    "local": ExecutorSpec("LocalExecutor", "processes on this machine", shares_files=True),
    "dask": ExecutorSpec("DaskExecutor", "a Dask cluster", shares_files=False, jobs=2, takes_scheduler=True),
}


class PrunerSpec(NamedTuple):
    help: str  # what it does, for --prune's help


class SearchSpec(NamedTuple):
    help: str  # what it does, for --search's help


SEARCHES: dict[str, SearchSpec] = {
    "random": SearchSpec("the sweep file's grid and seeded random draws"),
    "tpe": SearchSpec("Optuna's TPE proposes each trial from the results so far; the optuna extra"),
}


PRUNERS: dict[str, PrunerSpec] = {
    "halving": PrunerSpec("successive halving, asynchronous (ASHA): the best 1/reduction of each rung goes on"),
}
