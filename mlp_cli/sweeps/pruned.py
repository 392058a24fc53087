"""One pass of a pruned (``sweeps.halving``) or model-based (``sweeps.tpe``) sweep through the
sweep's executor. Without pruning each trial has one rung, its own train.epochs; with
``--search tpe`` the next new trial is proposed from the rows so far when a worker comes free.

The ladder is rebuilt from ``trials.jsonl`` first (every pruned or promoted row says the rung a
trial finished and its score there), so running the same command again continues the search:
settled trials (ok, diverged, pruned, with their files still their own) are not run again, a
promoted or interrupted trial resumes towards the rung it was on. Then, as long as a worker is
free: promote a trial if one qualifies, else start the next new one at the first rung. Each
finished rung is a row (``pruned`` until a promotion's ``promoted`` row follows it); the last
rung's row is ``ok``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlp_cli.errors import ConfigError
from mlp_cli.sweeps import records
from mlp_cli.sweeps.executors import ExecutorLost
from mlp_cli.sweeps.halving import Ladder
from mlp_cli.sweeps.runner import TrialRefused, run_trial

if TYPE_CHECKING:
    from mlp_cli.sweeps.spec import Trial
    from mlp_cli.sweeps.sweep import SweepRun

SETTLED = ("ok", "diverged", "pruned")
# What a promoted row repeats of the pruned row before it (not its seconds: summed, they count once)
PROMOTED = ("trial", "index", "overrides", "rung", "best_dev_accuracy", "best_epoch", "best_by", "epochs",
            "planned_epochs")


class PrunedPass:
    def __init__(self, sweep: SweepRun) -> None:
        self.sweep, self.executor, self.spec = sweep, sweep.executor, sweep.plan.spec
        self.trials = {t.name: t for t in sweep.plan.trials}
        self.indices = {t.index for t in sweep.plan.trials}  # the trials' numbers, kept with self.trials
        self.ladder = Ladder(sweep.plan.trials, self.spec.prune)
        self.base = sweep.plan.base or {}  # a model-based search's base config (sweep.plan_sweep)
        self.rungs = self.ladder.rungs
        self.latest: dict[str, dict[str, Any]] = {}
        self.rung_of: dict[Any, int] = {}  # future -> the rung its trial trains to
        self.queue: list[tuple[str, int]] = []  # (trial, rung) to start, in order

    def run(self) -> int:
        """Run the search; return how many trials were settled before it."""
        self._restore()
        settled = len(self.trials) - len(self.queue)
        todo = len(self.queue) + (self.spec.trials - len(self.trials) if self.spec.search == "tpe" else 0)
        self.sweep.observer.on_start(self.sweep.plan, todo, self.executor)
        running = self.sweep._futures
        self._fill()
        try:
            while running:
                future = next(iter(self.executor.as_completed(list(running))), None)
                if future is None:  # stopped, and the executor will start none of them: not recorded
                    break
                self._finished(future, running.pop(future), self.rung_of.pop(future))
                self._fill()
        except ExecutorLost as err:  # no trial can finish now: each unfinished one is recorded
            self.sweep.lost = str(err)
            for future, trial in running.items():
                row = self.sweep._executor_row(trial, "interrupted", f"{err} before the trial finished")
                self._append({**row, "rung": self.rung_of[future]})
        return settled

    def _restore(self) -> None:
        for row in records.read_trials(self.sweep.plan.directory):
            name, rung = row["trial"], row.get("rung")
            if name not in self.trials and self.spec.search == "tpe":
                self._proposed(row.get("index"), row.get("overrides"), name)
            if name not in self.trials:
                continue
            self.latest[name] = row
            if row["status"] == "ok":
                self.ladder.end(name)
            if rung is not None and rung < len(self.rungs[name]) - 1 and row["status"] in ("pruned", "promoted"):
                self.ladder.finished(name, rung, row.get("best_dev_accuracy") or 0.0)
                if row["status"] == "promoted":
                    self.ladder.promote(name, rung)
        for name in self.trials:
            latest = self.latest.get(name)
            if latest is None:
                self.queue.append((name, 0))
            elif not self._settled(name, latest):
                rung = min(latest.get("rung") or 0, len(self.rungs[name]) - 1)
                self.queue.append((name, rung + 1 if latest["status"] == "promoted" else rung))

    def _settled(self, name: str, row: dict[str, Any]) -> bool:
        """Ok, diverged or pruned, and its files are still there, its own (else it runs again)."""
        if row["status"] not in SETTLED:
            return False
        trial = self.trials[name]
        needed = ("config.yaml",) if row["status"] == "diverged" else ("config.yaml", "metrics.jsonl", "last.npz")
        return records.holds_trial(Path(trial.config.run.dir or ""), trial.config.to_dict(), needed)

    def _stop_at(self, name: str, rung: int) -> int | None:
        """The epoch a trial stops at on ``rung`` (None on its last: it trains to its end)."""
        return None if self.ladder.is_last(name, rung) else self.rungs[name][rung]

    def _fill(self) -> None:
        """Give every free worker a promotion, else a trial from the queue."""
        running = self.sweep._futures
        while len(running) < self.executor.workers and not self.sweep.interrupted:
            busy = {t.name for t in running.values()} | {name for name, _ in self.queue}
            promotion = self.ladder.next_promotion(busy)
            if promotion is None and not running and not self.queue and not self._can_propose():
                promotion = self.ladder.last_resort()  # else the search could end with no trial finished
            if promotion is not None:
                name, rung = promotion
                self.ladder.promote(name, rung - 1)
                now = datetime.now().isoformat(timespec="seconds")
                promoted = {**{k: v for k, v in self.latest[name].items() if k in PROMOTED},
                            "status": "promoted", "finished_at": now}
                self.latest[name] = promoted
                records.append_trial(self.sweep.plan.directory, promoted)
                self.sweep.observer.on_promoted(promoted)
            elif self.queue:
                name, rung = self.queue.pop(0)
            elif self._can_propose():
                name, rung = self._propose(), 0
            else:
                return
            trial = self.trials[name]
            try:
                task = self.sweep._task(trial, self._stop_at(name, rung))
            except TrialRefused as err:  # a result, not the sweep's end: the others go on
                self._append({**self.sweep._executor_row(trial, "failed", str(err)), "rung": rung})
                continue
            future = self.executor.submit(run_trial, task)
            running[future], self.rung_of[future] = trial, rung

    def _can_propose(self) -> bool:
        return self.spec.search == "tpe" and len(self.trials) < self.spec.trials

    def _propose(self) -> str:
        """A new trial, proposed by TPE from every trial's latest row so far."""
        from mlp_cli.sweeps.spec import make_trial
        from mlp_cli.sweeps.sweep import _placed
        from mlp_cli.sweeps.tpe import propose

        number = next(index for index in range(self.spec.trials) if index not in self.indices)  # the first gap
        overrides = propose(self.spec, list(self.latest.values()), number)
        (trial,) = _placed([make_trial(self.spec, self.base, number, overrides)], self.sweep.plan.directory)
        self._add(trial)
        return trial.name

    def _add(self, trial: Trial) -> None:
        """A proposed trial joins the sweep (with the sweep's --log, like the planned ones)."""
        if self.sweep.plan.log:
            from mlp_cli.config import build_config

            settings = trial.config.to_dict()
            settings["run"]["log"] = list(self.sweep.plan.log)
            trial = dataclasses.replace(trial, config=build_config(settings))
        self.trials[trial.name] = trial
        self.indices.add(trial.index)
        self.sweep.plan.trials.append(trial)
        self.ladder.add(trial)

    def _proposed(self, index: Any, overrides: Any, name: str) -> None:
        """A recorded proposal, rebuilt; not when it cannot be one of this search's (an index past its
        count or already another trial's, a value outside its space: an edited trials.jsonl), nor
        when it is no longer the trial of that name."""
        from mlp_cli.sweeps.spec import make_trial
        from mlp_cli.sweeps.sweep import _placed
        from mlp_cli.sweeps.tpe import in_space

        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < self.spec.trials:
            return
        if index in self.indices:
            return
        if not isinstance(overrides, dict) or not in_space(self.spec, overrides):
            return
        try:
            (trial,) = _placed([make_trial(self.spec, self.base, index, overrides)], self.sweep.plan.directory)
        except ConfigError:
            return
        if trial.name == name:
            self._add(trial)

    def _finished(self, future: Any, trial: Trial, rung: int) -> None:
        row = self.sweep._collected_row(future, trial, self._stop_at(trial.name, rung))
        if row is None:  # stopped before it started: the next run starts it
            return
        row["rung"] = rung
        reached = row["epochs"] >= row["planned_epochs"]  # else it stopped early: its end
        if row["status"] == "ok" and reached and not self.ladder.is_last(trial.name, rung):
            row["status"] = "pruned"  # until a promotion says otherwise
            self.ladder.finished(trial.name, rung, row.get("best_dev_accuracy") or 0.0)
        elif row["status"] == "ok":
            self.ladder.end(trial.name)
        self._append(row)

    def _append(self, row: dict[str, Any]) -> None:
        self.latest[row["trial"]] = row
        self.sweep._append(row)
