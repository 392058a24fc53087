"""The optimisers and schedules a config may name: one entry each.

An entry says which class or function implements the member (in ``mlp_cli.nn.optimizers`` or
``mlp_cli.nn.schedules``), which config fields it reads, and what ``mlp info`` counts for it.
The config's choices, the CLI's help text and ``mlp info`` read these tables, so adding an
optimiser is its class plus one entry here. This module imports nothing (not even numpy), and
its entries are NamedTuples (cheaper to define than dataclasses), so that the config and
``mlp --help`` can read it cheaply.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class OptimizerSpec(NamedTuple):
    implementation: str  # the class in mlp_cli.nn.optimizers
    fields: tuple[str, ...]  # the optimizer.* config fields its constructor takes
    state_copies: int  # state arrays per parameter array (velocity; or m and v)
    flops_per_parameter: int  # of one update
    step_counter: bool = False  # a 0-d int64 step count "t" in the state
    scratch_copies: int = 1  # reused buffers per parameter array


class ScheduleSpec(NamedTuple):
    implementation: str  # the function in mlp_cli.nn.schedules that builds it
    fields: tuple[str, ...]  # the schedule.* config fields it reads (every one reads warmup_epochs)
    watches_dev: bool = False  # it needs a dev set's accuracy after each epoch


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": OptimizerSpec("SGD", (), state_copies=0, flops_per_parameter=2),
    "momentum": OptimizerSpec("Momentum", ("momentum",), state_copies=1, flops_per_parameter=4),
    "nesterov": OptimizerSpec("Nesterov", ("momentum",), state_copies=1, flops_per_parameter=6),
    "adam": OptimizerSpec(
        "Adam", ("beta1", "beta2", "eps"), state_copies=2, flops_per_parameter=12, step_counter=True
    ),
    "adamw": OptimizerSpec(
        "AdamW", ("beta1", "beta2", "eps", "weight_decay"), state_copies=2, flops_per_parameter=13,
        step_counter=True,
    ),
}

SCHEDULES: dict[str, ScheduleSpec] = {
    "constant": ScheduleSpec("constant", ()),
    "step": ScheduleSpec("step_decay", ("step_size", "gamma")),
    "cosine": ScheduleSpec("cosine", ("min_lr",)),
    "plateau": ScheduleSpec(
        "plateau", ("plateau_patience", "plateau_factor", "plateau_min_delta", "min_lr"), watches_dev=True
    ),
}


def listed(names: Iterable[str]) -> str:
    """``a, b or c``: the names of a registry, for help text."""
    items = list(names)
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else "".join(items)
