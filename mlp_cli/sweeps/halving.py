"""Pruned sweeps: asynchronous successive halving (ASHA, Li et al. 2018) on top of resume.

Each trial trains to its first rung (``min_epochs``), then to ``min_epochs * reduction``, and so
on up to its own ``train.epochs`` (the last rung). At each rung the trials are ranked on their
best dev accuracy so far (``config.best_epoch``, the one selection rule); a trial goes on to the
next rung once it is among the best ``1/reduction`` of the trials that have finished that rung,
so no executor waits for a whole rung: every time a worker is free the sweep promotes a trial
if one qualifies (from the highest rung down), else starts a new one at the first rung. A trial
never promoted stays ``pruned`` at the epoch it reached. A rung with fewer than ``reduction``
finished trials promotes none by that rule, so a small sweep could end with no trial trained to
its end: when nothing is left to start or running and none has finished, the best trial of the
highest rung goes on (``last_resort``), as many times as it takes.

A trial always trains with its own config, its full ``train.epochs`` included: a rung is where
the sweep stops it (``runner.RungStop``: after that epoch, saving ``last.npz``, exactly as a
Ctrl-C would), and a promotion resumes it from there, unchanged. So every schedule keeps its
shape (a cosine decays over the trial's whole length, not over its rung), and a promoted trial's
metrics and weights are those of the same config trained without a stop. A pruned sweep needs a
dev set (ranking on training accuracy would reward overfitting).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from mlp_cli.config import show_value
from mlp_cli.errors import ConfigError
from mlp_cli.sweeps.registry import PRUNERS

PRUNE_KEYS = ("method", "min_epochs", "reduction")


@dataclass(frozen=True)
class Prune:
    method: str = "halving"
    min_epochs: int = 2  # an epoch of this network already separates good settings from bad
    reduction: int = 3  # keep the best third of each rung (Hyperband's and ASHA's default)

    def rungs(self, epochs: int) -> tuple[int, ...]:
        """The epochs each rung trains to: ``min_epochs * reduction ** k`` below ``epochs``, then ``epochs``."""
        rungs, reach = [], self.min_epochs
        while reach < epochs:
            rungs.append(reach)
            reach *= self.reduction
        return (*rungs, epochs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_prune(raw: Any, where: str) -> Prune:
    """A sweep file's ``prune:``: ``{method: halving, min_epochs: 2, reduction: 3}`` (each optional)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}prune = {show_value(raw)}; expected a mapping of {', '.join(PRUNE_KEYS)}")
    for key in raw:
        if key not in PRUNE_KEYS:
            raise ConfigError(f"{where}prune: unknown key {key!r}; expected some of {', '.join(PRUNE_KEYS)}")
    method = raw.get("method", Prune.method)
    if method not in PRUNERS:
        raise ConfigError(f"{where}prune.method = {show_value(method)}; expected one of {', '.join(PRUNERS)}")
    numbers = {}
    for key, lowest in (("min_epochs", 1), ("reduction", 2)):
        value = raw.get(key, getattr(Prune, key))
        if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= 100_000:
            raise ConfigError(f"{where}prune.{key} = {show_value(value)}; expected a whole number >= {lowest}")
        numbers[key] = value
    return Prune(method, **numbers)


def check_prunable(name: str, trials: Sequence[Any], prune: Prune) -> None:
    """Refuse a pruned sweep that cannot rank its trials, or has no rung to stop them at."""
    for trial in trials:
        config, where = trial.config, f"sweep {name}, trial {trial.name}: "
        if config.data.dev_size == 0:
            raise ConfigError(f"{where}--prune ranks trials on dev accuracy; set data.dev_size above 0")
        if prune.min_epochs >= config.train.epochs:
            raise ConfigError(f"{where}prune.min_epochs = {prune.min_epochs} is not below train.epochs = "
                              f"{config.train.epochs}: nothing would be pruned")


class Ladder:
    """Which trial finished which rung with which score, and which were promoted from it."""

    def __init__(self, trials: Sequence[Any], prune: Prune | None) -> None:
        self.prune = prune  # None: one rung, each trial's own train.epochs
        self.reduction = prune.reduction if prune else 1
        self.rungs: dict[str, tuple[int, ...]] = {}
        self.order: dict[str, int] = {}
        self.scores: list[dict[str, float]] = []
        self.promoted: list[set[str]] = []
        self.ended: set[str] = set()  # trials that trained to their end (or stopped early, done)
        for trial in trials:
            self.add(trial)

    def add(self, trial: Any) -> None:
        epochs = trial.config.train.epochs
        self.rungs[trial.name] = self.prune.rungs(epochs) if self.prune else (epochs,)
        self.order[trial.name] = trial.index
        while len(self.scores) < len(self.rungs[trial.name]):
            self.scores.append({})
            self.promoted.append(set())

    def is_last(self, name: str, rung: int) -> bool:
        return rung >= len(self.rungs[name]) - 1

    def finished(self, name: str, rung: int, score: float) -> None:
        self.scores[rung][name] = score

    def promote(self, name: str, rung: int) -> None:
        self.promoted[rung].add(name)

    def end(self, name: str) -> None:
        self.ended.add(name)

    def ranked(self, rung: int) -> list[str]:
        """The trials that finished ``rung``, best score first (ties: the earlier trial)."""
        table = self.scores[rung]
        return sorted(table, key=lambda name: (-table[name], self.order[name]))

    def next_promotion(self, busy: Collection[str]) -> tuple[str, int] | None:
        """A trial among the best 1/reduction of a rung's finished trials, not yet promoted from
        it (nor running): ``(name, the rung it goes on to)``, from the highest rung down."""
        for rung in reversed(range(len(self.scores))):
            ranked = self.ranked(rung)
            for name in ranked[:len(ranked) // self.reduction]:
                if name not in self.promoted[rung] and name not in busy and not self.is_last(name, rung):
                    return name, rung + 1
        return None

    def last_resort(self) -> tuple[str, int] | None:
        """When nothing is running or left to start: unless a trial has ended, the best trial of
        the highest rung that has one to promote goes on (``(name, the rung it goes on to)``)."""
        if self.ended:
            return None
        for rung in reversed(range(len(self.scores))):
            for name in self.ranked(rung):
                if name not in self.promoted[rung] and not self.is_last(name, rung):
                    return name, rung + 1
        return None
