"""`mlp sweep --prune halving`: asynchronous successive halving on top of resume. The ladder's
promotion rule, what a pruned sweep refuses, and end to end on tiny MNIST trials: pruned and
promoted trials recorded truthfully, a rerun skipping them, and the winner bit for bit the run
trained alone for the same number of epochs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from helpers import runner, signal_sweep, trial_epochs

from mlp_cli.cli import app
from mlp_cli.errors import ConfigError
from mlp_cli.sweeps.halving import Ladder, Prune
from mlp_cli.sweeps.records import read_trials
from mlp_cli.sweeps.spec import plan_trials, read_sweep_file

TIMING = ("seconds", "elapsed", "examples_per_second", "changes")  # what a resumed row may differ in


def _trials(epochs: list[int]) -> list[SimpleNamespace]:
    config = lambda e: SimpleNamespace(train=SimpleNamespace(epochs=e))  # noqa: E731
    return [SimpleNamespace(name=f"t{i}", index=i, config=config(e)) for i, e in enumerate(epochs)]


def test_rungs_grow_by_the_reduction_up_to_the_trials_own_epochs() -> None:
    assert Prune(min_epochs=2, reduction=3).rungs(30) == (2, 6, 18, 30)
    assert Prune(min_epochs=1, reduction=2).rungs(4) == (1, 2, 4)


def test_a_trial_is_promoted_as_soon_as_it_is_in_the_top_fraction_of_its_rung() -> None:
    ladder = Ladder(_trials([9, 9, 9, 9]), Prune(min_epochs=1, reduction=3))
    ladder.finished("t0", 0, 0.5)
    ladder.finished("t1", 0, 0.9)
    assert ladder.next_promotion(busy=()) is None  # two finished: not yet a third of them to keep
    ladder.finished("t2", 0, 0.7)
    assert ladder.next_promotion(busy=()) == ("t1", 1)  # without waiting for t3
    assert ladder.next_promotion(busy={"t1"}) is None
    ladder.promote("t1", 0)
    assert ladder.next_promotion(busy=()) is None
    ladder.finished("t1", 1, 0.95)
    ladder.finished("t3", 0, 0.6)
    assert ladder.next_promotion(busy=()) is None  # 4 finished rung 0: still one to keep, t1 already went
    for name, score in (("t4", 0.1), ("t5", 0.2)):
        ladder.order[name], ladder.rungs[name] = len(ladder.order), (1, 3, 9)
        ladder.finished(name, 0, score)
    assert ladder.next_promotion(busy=()) == ("t2", 1)  # 6 finished: the best two go on


def test_the_last_rung_is_never_promoted_from() -> None:
    ladder = Ladder(_trials([2, 2, 2]), Prune(min_epochs=1, reduction=2))
    for name in ("t0", "t1", "t2"):
        ladder.finished(name, 1, 0.5)
    assert ladder.next_promotion(busy=()) is None


def test_when_nothing_else_can_run_the_best_of_the_highest_rung_goes_on() -> None:
    """Fewer finished trials than the reduction promote none by the rule: at the end of a small
    sweep the best of the highest rung still goes on, until one trial has trained to its end."""
    ladder = Ladder(_trials([9, 9, 9]), Prune(min_epochs=1, reduction=3))
    ladder.finished("t0", 0, 0.5)
    ladder.finished("t1", 0, 0.9)
    ladder.finished("t2", 0, 0.7)
    ladder.promote("t1", 0)
    ladder.finished("t1", 1, 0.92)  # alone on rung 1: the rule keeps a third of one, none
    assert ladder.next_promotion(busy=()) is None
    assert ladder.last_resort() == ("t1", 2)  # the highest rung's best, not rung 0's next
    ladder.promote("t1", 1)
    ladder.end("t1")  # trained to its end: the others stay pruned
    assert ladder.last_resort() is None


def _sweep_file(tmp_path: Path, **changes: object) -> Path:
    document = {
        "config": "default",
        "set": {"data.limit": 1000, "data.dev_size": 300, "model.hidden": 16, "train.batch_size": 100,
                "train.epochs": 4, "schedule.name": "constant"},
        "grid": {"optimizer.lr": [0.02, 0.1, 0.5, 2.0]},
        "prune": {"min_epochs": 1, "reduction": 2},
    }
    for key, value in changes.items():
        section, _, name = key.replace("_name", ".name").partition("__")
        if value is None:
            document[section].pop(name)
        else:
            document[section][name] = value
    path = tmp_path / "halving.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"set__data.dev_size": 0}, "ranks trials on dev accuracy"),
    ({"prune__min_epochs": 4}, "nothing would be pruned"),
    ({"prune__min_epochs": 0}, "prune.min_epochs = 0"),
    ({"prune__reduction": 1}, "prune.reduction = 1"),
    ({"prune__patience": 3}, "unknown key 'patience'"),
    ({"prune__method": "median"}, "prune.method = .median. .*expected one of halving"),
])
def test_a_pruned_sweep_refuses_what_cannot_stop_at_a_rung(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_trials(read_sweep_file(_sweep_file(tmp_path, **changes)))


def test_the_flag_turns_pruning_on_with_the_defaults(tmp_path: Path) -> None:
    spec = read_sweep_file(_sweep_file(tmp_path, prune__min_epochs=None, prune__reduction=None), prune="halving")
    assert spec.prune == Prune("halving", 2, 3)
    plain = _sweep_file(tmp_path)
    document = yaml.safe_load(plain.read_text())
    document.pop("prune")
    plain.write_text(yaml.safe_dump(document))
    assert read_sweep_file(plain).prune is None


def _metrics(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def _check_halving(out: Path, summary: dict, best_file: Path, data_dir: Path, tmp_path: Path) -> None:
    """Every row truthful (rung, epochs reached, promotions), and the winner the run trained alone."""
    final = {row["trial"]: row for row in summary["trials"]}
    statuses = [row["status"] for row in final.values()]
    assert len(final) == 4 and "pruned" in statuses and set(statuses) <= {"ok", "pruned"}  # how many go on: timing
    history = read_trials(out)
    for row in history:
        assert row["rung"] in (0, 1, 2) and row["planned_epochs"] == (1, 2, 4)[row["rung"]]
        if row["status"] in ("pruned", "promoted"):
            assert row["epochs"] == row["planned_epochs"]
    for name, row in final.items():
        metrics = (out / "trials" / name / "metrics.jsonl").read_text().splitlines()
        assert len(metrics) == row["epochs"]  # drawn up to where it stopped
        promotions = [r["rung"] for r in history if r["trial"] == name and r["status"] == "promoted"]
        assert promotions == list(range(row["rung"]))  # promoted from every rung below the one it ended on

    winner = summary["best"]["trial"]
    assert final[winner]["status"] == "ok" and final[winner]["epochs"] == 4
    alone = tmp_path / "alone"
    trained = runner.invoke(app, ["train", "--config", str(best_file), "--out", str(alone),
                                  "--data-dir", str(data_dir), "--quiet"])
    assert trained.exit_code == 0, trained.output
    with np.load(out / "trials" / winner / "last.npz") as pruned, np.load(alone / "last.npz") as plain:
        arrays = [k for k in plain.files if k != "meta"]
        assert arrays and all(np.array_equal(pruned[k], plain[k]) for k in arrays)
    assert _metrics(out / "trials" / winner / "metrics.jsonl") == _metrics(alone / "metrics.jsonl")


def test_a_halving_sweep_prunes_the_losers_and_its_winner_is_the_run_trained_alone(
        mnist_data_dir: Path, tmp_path: Path) -> None:
    out, best_file = tmp_path / "sweep", tmp_path / "best.yaml"
    # A cosine schedule: a rung stops the trial, it does not shorten its run, so the decay is the whole run's.
    command = ["sweep", str(_sweep_file(tmp_path, set__schedule_name="cosine")), "--jobs", "2",
               "--data-dir", str(mnist_data_dir), "--out", str(out)]
    result = runner.invoke(app, [*command, "--json", "--save-best", str(best_file)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    _check_halving(out, summary, best_file, mnist_data_dir, tmp_path)
    history = read_trials(out)

    again = runner.invoke(app, [*command, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["skipped"] == 4 and len(read_trials(out)) == len(history)
    listed = runner.invoke(app, ["runs", str(out), "--json"])
    assert listed.exit_code == 0, listed.output
    shown = {"ok": "finished", "pruned": "pruned"}
    assert sorted(run["status"] for run in json.loads(listed.stdout)) == sorted(
        shown[row["status"]] for row in summary["trials"])
    plotted = runner.invoke(app, ["plot", str(out), "--out", str(tmp_path / "sweep.png")])
    assert plotted.exit_code == 0, plotted.output


def test_a_small_halving_sweep_still_trains_its_best_trial_to_the_end(mnist_data_dir: Path, tmp_path: Path) -> None:
    """Two trials and a reduction of 3: the rule promotes neither; the best goes on all the same
    (seen: a 16-trial sweep with its best alone on the 18-epoch rung ended with none finished)."""
    out = tmp_path / "sweep"
    spec = _sweep_file(tmp_path, prune__reduction=3)
    document = yaml.safe_load(spec.read_text())
    document["grid"] = {"optimizer.lr": [0.02, 0.5]}
    spec.write_text(yaml.safe_dump(document))
    result = runner.invoke(app, ["sweep", str(spec), "--jobs", "1", "--data-dir", str(mnist_data_dir),
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    final = {row["trial"]: row for row in json.loads(result.stdout)["trials"]}
    history = read_trials(out)
    first_rung = {row["trial"]: row["best_dev_accuracy"] for row in history if row["rung"] == 0}
    best = max(first_rung, key=lambda name: first_rung[name])
    assert final[best]["status"] == "ok" and final[best]["epochs"] == 4
    assert [row["status"] for row in final.values()].count("pruned") == 1
    shown = runner.invoke(app, ["sweep", str(spec), "--jobs", "1", "--data-dir", str(mnist_data_dir),
                                "--out", str(tmp_path / "shown")])
    assert shown.exit_code == 0, shown.output
    # three runs in all, two trials: the header says where the third comes from
    assert "running 2 on 1 local process" in shown.output and "[3/3]" in shown.output
    assert "then the trials promoted to their next rung" in shown.output


def test_a_halving_sweep_on_dask_ships_each_rung_and_promotes_by_resuming(
        mnist_data_dir: Path, offline_mnist_url: str, tmp_path: Path) -> None:
    """A local Dask cluster: no shared files, so each promotion sends the trial's last.npz along."""
    out, best_file = tmp_path / "sweep", tmp_path / "best.yaml"
    result = runner.invoke(app, ["sweep", str(_sweep_file(tmp_path)), "--executor", "dask", "--jobs", "2",
                                 "--mirror", offline_mnist_url, "--out", str(out), "--json",
                                 "--save-best", str(best_file)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    _check_halving(out, summary, best_file, mnist_data_dir, tmp_path)
    assert all(row.get("attempts", 1) == 1 for row in read_trials(out))  # a rung is not a retry


def _interrupted(command: list[str], ready: Callable[[], bool]) -> str:
    """Run ``command`` (an `mlp sweep`), Ctrl-C it once ``ready()``; its stderr (exit 130)."""
    returncode, stderr = signal_sweep(command, ready)
    assert returncode == 130 and "Traceback" not in stderr, stderr
    return stderr


def test_ctrl_c_mid_rung_saves_every_trial_and_the_same_command_resumes_them(mnist_data_dir: Path,
                                                                           tmp_path: Path) -> None:
    """Trials that cannot finish their first rung (50,000 epochs): stopped once both saved, each is
    recorded interrupted on rung 0; the same command resumes both, their epochs kept."""
    sweep_file = _sweep_file(tmp_path)
    document = yaml.safe_load(sweep_file.read_text())
    document["set"].update({"train.epochs": 100_000, "data.limit": 3000})
    document["grid"] = {"optimizer.lr": [0.02, 0.5]}
    document["prune"] = {"min_epochs": 50_000, "reduction": 2}
    sweep_file.write_text(yaml.safe_dump(document))
    out = tmp_path / "sweep"
    command = ["sweep", str(sweep_file), "--jobs", "2", "--data-dir", str(mnist_data_dir), "--out", str(out)]
    names = ("000-lr=0.02", "001-lr=0.5")
    _interrupted(command, lambda: all((out / "trials" / name / "last.npz").exists() for name in names))
    rows = read_trials(out)
    assert sorted(r["trial"] for r in rows) == list(names)
    assert all(r["status"] == "interrupted" and r["rung"] == 0 and r["planned_epochs"] == 50_000 for r in rows)
    before = {name: trial_epochs(out, name) for name in names}

    _interrupted(command, lambda: all(len(trial_epochs(out, name)) > len(before[name]) for name in names))
    for name in names:
        assert trial_epochs(out, name)[:len(before[name])] == before[name]  # resumed, not retrained: same timings
    assert [r["rung"] for r in read_trials(out)] == [0, 0, 0, 0]


def test_a_rerun_rebuilds_the_ladder_from_the_records(tmp_path: Path) -> None:
    """What each trial does next, from trials.jsonl: a promoted trial goes on to the next rung, an
    interrupted one back to its own, a pruned one (its files still its own) is settled and
    counts in its rung's ranking; a trial without a row starts at the first rung."""
    from mlp_cli.sweeps.pruned import PrunedPass
    from mlp_cli.sweeps.records import append_trial
    from mlp_cli.sweeps.sweep import plan_sweep

    plan = plan_sweep(read_sweep_file(_sweep_file(tmp_path)), tmp_path / "sweep")
    names = [t.name for t in plan.trials]
    pruned_dir = Path(plan.trials[0].config.run.dir or "")
    pruned_dir.mkdir(parents=True)
    (pruned_dir / "config.yaml").write_text(plan.trials[0].config.to_yaml())
    for name in ("metrics.jsonl", "last.npz"):
        (pruned_dir / name).write_bytes(b"")
    row = {"index": 0, "overrides": {}, "epochs": 1, "planned_epochs": 1, "rung": 0}
    for trial, status, score in ((names[0], "pruned", 0.3), (names[1], "pruned", 0.9),
                                 (names[1], "promoted", 0.9), (names[2], "interrupted", None)):
        append_trial(plan.directory, {**row, "trial": trial, "status": status, "best_dev_accuracy": score})
    restored = PrunedPass(SimpleNamespace(plan=plan, executor=None))  # type: ignore[arg-type]
    restored._restore()
    assert restored.queue == [(names[1], 1), (names[2], 0), (names[3], 0)]
    assert restored.ladder.scores[0] == {names[0]: 0.3, names[1]: 0.9}
    assert restored.ladder.promoted[0] == {names[1]}


class InlineExecutor:
    """Runs each trial in this process as it is submitted (so a test can watch the sessions)."""

    shares_files, workers, description = True, 1, "this process"

    def placement(self, resume_files: dict) -> None:
        return None

    def submit(self, fn: Callable, task: object) -> Future:
        future: Future = Future()
        future.set_result(fn(task))
        return future

    def as_completed(self, futures: object) -> Iterator[Future]:
        return iter(list(futures))  # type: ignore[call-overload]

    def attempts(self, trial: str) -> list[str]:
        return []

    def lost(self, future: Future) -> None:
        return None

    def request_stop(self, futures: list) -> None: ...
    def kill(self) -> None: ...
    def close(self) -> None: ...


def test_a_promotion_resumes_the_trial_and_never_trains_it_again(mnist_data_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Each trial starts once (its first rung); every later rung resumes its last.npz."""
    from mlp_cli.sweeps.sweep import SweepRun, plan_sweep
    from mlp_cli.training import session

    started: list[str] = []
    resumed: list[str] = []
    new, again = session.new_session, session.resumed_session
    monkeypatch.setattr(session, "new_session", lambda config, *a, **k: started.append(config.run.name) or new(
        config, *a, **k))
    monkeypatch.setattr(session, "resumed_session", lambda config, *a, **k: resumed.append(config.run.name) or again(
        config, *a, **k))
    plan = plan_sweep(read_sweep_file(_sweep_file(tmp_path, set__schedule_name="cosine")), tmp_path / "sweep")
    result = SweepRun(plan, InlineExecutor(), data_dir=mnist_data_dir).run()  # type: ignore[arg-type]
    assert sorted(started) == sorted(t.name for t in plan.trials)
    promoted = [r["trial"] for r in read_trials(result.directory) if r["status"] == "promoted"]
    assert promoted and sorted(resumed) == sorted(promoted)
