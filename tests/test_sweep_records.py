"""A sweep directory has one owner and its records claim only what its files hold: the lock, new
directories made exclusively, a trial settled only while its own files are there, the best trial
picked by its dev accuracy, a lost row or a torn line that never blocks a rerun, a full disk that
ends the sweep non-zero. Trials run in this process (``InProcess``), on real MNIST, tiny."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from helpers import runner

from mlp_cli.cli import app
from mlp_cli.config_file import load_config
from mlp_cli.sweeps import executors, records
from mlp_cli.sweeps.records import read_trials
from mlp_cli.sweeps.spec import spec_from_sets
from mlp_cli.sweeps.sweep import SweepRun, plan_sweep
from mlp_cli.training.metrics import read_metrics

TINY = ("model.hidden=16", "data.limit=1000", "data.dev_size=500", "train.batch_size=100", "train.epochs=2")
TWO = (*TINY, "optimizer.lr=0.5,0.002")  # two ok trials, far apart in dev accuracy
NAMES = ("000-lr=0.5", "001-lr=0.002")


class InProcess:
    """An executor that runs each trial at once, here (the Executor protocol, no processes)."""

    shares_files, workers, description = True, 1, "this process"

    def placement(self, resume_files: dict[str, bytes]) -> None:
        return None

    def submit(self, fn: Any, task: Any) -> Future:
        future: Future = Future()
        future.set_result(fn(task))
        return future

    def as_completed(self, futures: Iterable[Future]) -> Iterator[Future]:
        return iter(list(futures))

    def attempts(self, trial: str) -> list[str]:
        return [trial]

    def lost(self, future: Any) -> str | None:
        return None

    def request_stop(self, futures: list[Any]) -> None:
        pass

    def kill(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr(executors, "make_executor", lambda kind, jobs, scheduler, *timeout: InProcess())


def sweep(data_dir: Path, *args: Any, sets: tuple[str, ...] = TWO):
    options = [a for s in sets for a in ("--set", s)]
    return runner.invoke(app, ["sweep", "--config", "default", *options, "--data-dir", str(data_dir),
                               *(str(a) for a in args)])


def rows_of(out: Path) -> dict[str, dict[str, Any]]:
    return records.latest(read_trials(out))


def test_the_best_trial_is_the_one_with_the_highest_dev_accuracy(mnist_data_dir, tmp_path, in_process):
    out, best_file = tmp_path / "s", tmp_path / "best.yaml"
    result = sweep(mnist_data_dir, "--out", out, "--json", "--save-best", best_file)

    assert result.exit_code == 0, result.output
    rows = rows_of(out)
    scores = {name: rows[name]["best_dev_accuracy"] for name in NAMES}
    assert {rows[n]["status"] for n in NAMES} == {"ok"} and scores[NAMES[0]] != scores[NAMES[1]]
    winner = max(scores, key=scores.__getitem__)
    assert json.loads(result.stdout)["best"]["trial"] == winner
    assert load_config(best_file).optimizer.lr == (0.5 if winner == NAMES[0] else 0.002)
    for name in NAMES:  # stored as best_dev_accuracy: the best dev accuracy of the trial's own metrics
        metrics = read_metrics(out / "trials" / name)
        best = max(metrics, key=lambda r: r["dev_accuracy"])
        assert (rows[name]["best_dev_accuracy"], rows[name]["best_epoch"]) == (best["dev_accuracy"], best["epoch"])
        assert rows[name]["best_by"] == "dev_accuracy"
    assert any(r["dev_accuracy"] != r["train_accuracy"] for n in NAMES for r in read_metrics(out / "trials" / n))


def test_a_new_sweep_with_one_more_set_gets_its_own_directory(mnist_data_dir, tmp_path, in_process, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = sweep(mnist_data_dir, "--json", sets=TINY)
    assert first.exit_code == 0, first.output
    other = sweep(mnist_data_dir, "--json", sets=(*TINY, "train.l2=0.001"))  # same name, other trials
    assert other.exit_code == 0, other.output
    again = sweep(mnist_data_dir, "--json", sets=TINY)  # the first command again continues the first
    assert again.exit_code == 0, again.output

    first_dir, other_dir, again_dir = (json.loads(r.stdout)["sweep_dir"] for r in (first, other, again))
    assert first_dir != other_dir and again_dir == first_dir
    assert json.loads(other.stdout)["skipped"] == 0 and json.loads(again.stdout)["skipped"] == 1
    assert load_config(Path(other_dir) / "trials" / "000" / "config.yaml").train.l2 == 0.001, other.stdout


def test_two_sweeps_planned_in_the_same_second_get_two_directories(mnist_data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = spec_from_sets("default", TINY, None, None)
    plan = plan_sweep(spec)
    twin = dataclasses.replace(plan)  # the same directory name, chosen by another process

    results = [SweepRun(p, InProcess(), data_dir=mnist_data_dir).run() for p in (plan, twin)]

    assert results[0].directory == plan.directory
    assert results[1].directory == plan.directory.with_name(plan.directory.name + "-2")
    for result in results:
        trial_dir = result.directory / "trials" / "000"
        assert load_config(trial_dir / "config.yaml").run.dir == str(trial_dir)
        assert [r["status"] for r in read_trials(result.directory)] == ["ok"]


def test_a_second_sweep_on_one_out_is_refused_and_writes_nothing(mnist_data_dir, tmp_path, in_process):
    out = tmp_path / "s"
    out.mkdir()
    holder = subprocess.Popen(  # another `mlp sweep` holding the sweep's lock
        [sys.executable, "-c", "import sys; from filelock import FileLock; lock = FileLock(sys.argv[1]); "
         "lock.acquire(); print('held', flush=True); sys.stdin.read()", str(out / ".lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = sweep(mnist_data_dir, "--out", out)
    finally:
        holder.communicate("")

    assert result.exit_code == 2, result.output
    assert f"sweep directory {out} is being written by" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no spec.yaml, no failed rows


def test_a_trial_directory_that_links_to_another_run_is_refused_and_the_run_untouched(mnist_data_dir, tmp_path,
                                                                                       in_process):
    out = tmp_path / "s"
    assert sweep(mnist_data_dir, "--out", out, "-q").exit_code == 0
    elsewhere = tmp_path / "precious"
    (out / "trials" / NAMES[0]).rename(elsewhere)
    (out / "trials" / NAMES[0]).symlink_to(elsewhere, target_is_directory=True)
    (out / records.TRIALS_FILE).write_text("")  # no rows: every trial would run
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir() if p.is_file()}

    result = sweep(mnist_data_dir, "--out", out)

    assert result.exit_code == 2, result.output
    assert f"{out / 'trials' / NAMES[0]} is a symbolic link, not a directory of this sweep" in result.stderr
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir() if p.is_file()} == before


def test_an_ok_row_whose_files_are_gone_or_not_its_own_runs_again(mnist_data_dir, tmp_path, in_process):
    import shutil

    out = tmp_path / "s"
    assert sweep(mnist_data_dir, "--out", out, "-q").exit_code == 0
    shutil.rmtree(out / "trials" / NAMES[0])  # deleted
    config = out / "trials" / NAMES[1] / "config.yaml"
    config.write_text(config.read_text().replace("hidden: 16", "hidden: 17"))  # not its config any more

    result = sweep(mnist_data_dir, "--out", out, "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"] == 0
    assert [r["trial"] for r in read_trials(out)] == [*NAMES, *NAMES]
    assert load_config(config).model.hidden == 16 and (out / "trials" / NAMES[0] / "best.npz").is_file()


def test_a_trial_that_finished_without_its_row_is_recorded_without_training_again(mnist_data_dir, tmp_path,
                                                                                    in_process):
    out = tmp_path / "s"
    assert sweep(mnist_data_dir, "--out", out, "-q").exit_code == 0
    lines = (out / records.TRIALS_FILE).read_text().splitlines()
    (out / records.TRIALS_FILE).write_text(lines[0] + "\n")  # the second trial's row was never appended
    last = out / "trials" / NAMES[1] / "last.npz"
    before = (last.stat().st_mtime_ns, last.read_bytes())

    for _ in range(2):  # and again: it is settled now
        result = sweep(mnist_data_dir, "--out", out, "--json")
        assert result.exit_code == 0, result.output

    assert rows_of(out)[NAMES[1]]["status"] == "ok" and rows_of(out)[NAMES[1]]["epochs"] == 2
    assert [r["trial"] for r in read_trials(out)] == [NAMES[0], NAMES[1]]
    assert (last.stat().st_mtime_ns, last.read_bytes()) == before


def test_a_torn_last_line_never_blocks_a_rerun_and_is_cut_off(mnist_data_dir, tmp_path, in_process):
    out = tmp_path / "s"
    assert sweep(mnist_data_dir, "--out", out, "-q").exit_code == 0
    path = out / records.TRIALS_FILE
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:25])  # a crash in the middle of the second row

    for _ in range(2):
        result = sweep(mnist_data_dir, "--out", out, "--json")
        assert result.exit_code == 0, result.output
        assert {r["status"] for r in json.loads(result.stdout)["trials"]} == {"ok"}

    assert [json.loads(line)["trial"] for line in path.read_text().splitlines()] == list(NAMES)


def test_a_trial_that_found_the_disk_full_makes_the_sweep_exit_non_zero(mnist_data_dir, tmp_path, in_process,
                                                                        monkeypatch):
    from mlp_cli.training import checkpoint

    def full(path, data) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full)
    out = tmp_path / "s"
    result = sweep(mnist_data_dir, "--out", out, sets=TINY)

    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "trial 000 failed: the disk is full: No space left on device" in line
    assert "run the same command again" in line
    assert rows_of(out)["000"]["status"] == "failed"  # so that the rerun trains it


def test_a_trials_row_ranks_its_epochs_by_dev_accuracy_not_train_accuracy(tmp_path):
    from mlp_cli.sweeps.runner import TrialTask, summarize

    epochs = [(1, 0.70, 0.81), (2, 0.90, 0.79), (3, 0.95, 0.80)]  # (epoch, train, dev): dev peaks first
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "step": 10 * e, "train_loss": 1.0, "train_accuracy": train, "dev_loss": 1.0,
                    "dev_accuracy": dev, "lr": 0.1, "seconds": 1.0}) + "\n" for e, train, dev in epochs))
    task = TrialTask(sweep="s", index=0, name="000", overrides={}, config={"train": {"epochs": 3}})

    row = summarize(task, tmp_path, "ok", None, 1.0, "here")

    assert (row["best_dev_accuracy"], row["best_epoch"], row["best_by"]) == (0.81, 1, "dev_accuracy")
    assert (row["train_accuracy"], row["dev_accuracy"], row["epochs"]) == (0.95, 0.80, 3)


def test_a_checkpoint_of_another_config_in_a_trial_directory_is_trained_over_not_reported(mnist_data_dir, tmp_path,
                                                                                           in_process):
    from mlp_cli.training.checkpoint import load_checkpoint

    mine, other = tmp_path / "mine", tmp_path / "other"
    assert sweep(mnist_data_dir, "--out", mine, "-q", sets=TINY).exit_code == 0
    assert sweep(mnist_data_dir, "--out", other, "-q", sets=(*TINY[1:], "model.hidden=32")).exit_code == 0
    for name in ("last.npz", "best.npz"):  # the other sweep's finished weights, in my trial's place
        (mine / "trials" / "000" / name).write_bytes((other / "trials" / "000" / name).read_bytes())
    (mine / records.TRIALS_FILE).write_text("")

    result = sweep(mnist_data_dir, "--out", mine, "--json", sets=TINY)

    assert result.exit_code == 0, result.output
    assert rows_of(mine)["000"]["status"] == "ok"
    for name in ("last.npz", "best.npz"):
        assert load_checkpoint(mine / "trials" / "000" / name).params.W1.shape == (784, 16)


def test_a_whole_row_without_its_newline_is_torn_for_the_reader_as_for_the_writer(tmp_path):
    """The writer cuts off a last line without its newline before appending: the reader must not
    count it either (a trial read as done, then cut off, would vanish from the record)."""
    first, second = ({"trial": name, "status": "ok", "index": i} for i, name in enumerate(NAMES))
    path = tmp_path / records.TRIALS_FILE
    path.write_text(json.dumps(first) + "\n" + json.dumps(second))  # valid JSON, its newline never written

    assert [row["trial"] for row in read_trials(tmp_path)] == [NAMES[0]]
    records.append_trial(tmp_path, {"trial": NAMES[1], "status": "ok", "index": 1})
    assert [row["trial"] for row in read_trials(tmp_path)] == list(NAMES)
