"""The records of a run that `mlp eval` and `mlp train --resume --out` write and `mlp runs` reads:
eval.json files each result under the split evaluated, keeps every entry when evaluations run at
once and is replaced atomically; `mlp runs` takes the test accuracy of best.npz before last.npz;
parent.json names the epoch branched from. The run here has best != last (best.npz is epoch 2,
last.npz epoch 3), so that a mix-up of the two shows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import runner
from limits import mlp_command, run_limited

from mlp_cli.cli import app
from mlp_cli.reports.eval_record import EVAL_FILE, read_eval_record, record_evaluation
from mlp_cli.training.checkpoint import load_checkpoint

TINY = ["--hidden", "16", "--batch", "100", "--set", "data.limit=1000", "--set", "data.dev_size=500", "-q"]


def invoke(*args: object) -> object:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def best_before_last(mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs at lr 0.5, then a third at lr 8 that does worse on dev: best.npz stays epoch 2."""
    run = tmp_path_factory.mktemp("records") / "run"
    invoke("train", *TINY, "--epochs", "2", "--lr", "0.5", "--out", run, "--data-dir", mnist_data_dir)
    invoke("train", "--resume", run / "last.npz", "--epochs", "3", "--lr", "8", "-q", "--data-dir", mnist_data_dir)
    last, best = load_checkpoint(run / "last.npz"), load_checkpoint(run / "best.npz")
    assert (best.epoch, last.epoch, last.meta["best_epoch"]) == (2, 3, 2)  # what the tests rely on
    return run


@pytest.fixture
def run(best_before_last: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(best_before_last, tmp_path / "run"))


def runs_row(run: Path) -> dict:
    (row,) = json.loads(invoke("runs", run, "--json").stdout)  # type: ignore[attr-defined]
    return row


def test_a_branch_records_the_epoch_it_branched_from_not_the_best_one(run: Path, mnist_data_dir: Path,
                                                                     tmp_path: Path) -> None:
    last = load_checkpoint(run / "last.npz")
    invoke("train", "--resume", run / "last.npz", "--out", tmp_path / "branch", "--epochs", "4", "-q",
           "--data-dir", mnist_data_dir)
    parent = json.loads((tmp_path / "branch" / "parent.json").read_text())
    assert (parent["path"], parent["epoch"], parent["step"]) == (str(run / "last.npz"), 3, last.step)


def test_each_split_is_filed_under_its_name_and_runs_shows_only_test(run: Path, mnist_data_dir: Path) -> None:
    dev = json.loads(invoke("eval", run, "--split", "dev", "--json", "--data-dir", mnist_data_dir).stdout)  # type: ignore[attr-defined]
    recorded, notes = read_eval_record(run)
    assert notes == [] and list(recorded) == ["best.npz"] and list(recorded["best.npz"]) == ["dev"]
    assert recorded["best.npz"]["dev"]["accuracy"] == dev["accuracy"] and recorded["best.npz"]["dev"]["examples"] == 500
    assert runs_row(run)["test_accuracy"] is None  # a dev result never fills the test column
    invoke("eval", run / "best.npz", "--split", "train", "-q", "--data-dir", mnist_data_dir)
    assert sorted(read_eval_record(run)[0]["best.npz"]) == ["dev", "train"]
    assert runs_row(run)["test_accuracy"] is None


def test_runs_takes_the_test_accuracy_of_best_before_last(run: Path, mnist_data_dir: Path) -> None:
    def test_accuracy(checkpoint: str) -> float:
        out = invoke("eval", run / checkpoint, "--json", "--data-dir", mnist_data_dir).stdout  # type: ignore[attr-defined]
        return float(json.loads(out)["accuracy"])

    of_last = test_accuracy("last.npz")
    assert runs_row(run)["test_accuracy"] == of_last  # the only one recorded
    of_best = test_accuracy("best.npz")
    assert of_best != of_last
    row = runs_row(run)
    assert (row["test_accuracy"], row["best_epoch"], row["epochs"]) == (of_best, 2, 3)


def test_eval_json_is_replaced_never_written_in_place(run: Path) -> None:
    """A second name for the old file (a hard link, a reader holding it open) keeps the old text."""
    record_evaluation(run / "best.npz", 2, "test", 0.5, 0.75, 10_000)
    old = (run / EVAL_FILE).read_text()
    os.link(run / EVAL_FILE, run / "old-eval.json")
    record_evaluation(run / "last.npz", 3, "test", 0.6, 0.70, 10_000)
    assert (run / "old-eval.json").read_text() == old
    assert sorted(read_eval_record(run)[0]) == ["best.npz", "last.npz"]


WRITER = """
import sys
import time
from pathlib import Path
from mlp_cli.reports.eval_record import record_evaluation
run, who, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
(run / f"ready-{who}").touch()
while not (run / "go").exists():
    time.sleep(0.001)
for i in range(count):
    record_evaluation(run / f"{who}-{i:03d}.npz", i, "test", 0.5, 0.9, 100)
"""


def test_concurrent_evaluations_keep_every_entry(tmp_path: Path) -> None:
    """Two processes record 150 results each into one run at once: all 300 are kept."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(run), who, "150"]) for who in ("a", "b")]
    while not all((run / f"ready-{who}").exists() for who in ("a", "b")):  # both started: then go together
        assert all(w.poll() is None for w in writers)
        time.sleep(0.01)
    (run / "go").touch()
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    recorded, notes = read_eval_record(run)
    assert notes == [] and len(recorded) == 300
    assert {recorded[f"a-{i:03d}.npz"]["test"]["epoch"] for i in range(150)} == set(range(150))


def test_a_record_that_cannot_be_read_is_replaced_with_a_note(run: Path, mnist_data_dir: Path) -> None:
    (run / EVAL_FILE).write_text("[" * 200_000)
    result = runner.invoke(app, ["eval", str(run), "-q", "--data-dir", str(mnist_data_dir)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "(not fatal)" in result.stderr and "is not valid JSON; replaced" in result.stderr
    assert list(read_eval_record(run)[0]) == ["best.npz"]


BAD_ENTRIES = [
    ({"accuracy": "0.9", "epoch": 2}, "'accuracy' = '0.9' is not a fraction from 0 to 1"),
    ({"accuracy": True, "epoch": 2}, "'accuracy' = 'True' is not a fraction"),
    ({"accuracy": 1.5, "epoch": 2}, "'accuracy' = '1.5' is not a fraction"),
    ({"accuracy": 0.9, "epoch": "2"}, "'epoch' = '2' is not a whole number"),
    ({"accuracy": 0.9, "epoch": 2, "loss": -1}, "'loss' = '-1' is not a finite number"),
    ({"accuracy": 0.9, "epoch": 2, "examples": 1.5}, "'examples' = '1.5' is not a whole number"),
    ([0.9], "not an object"),
]


@pytest.mark.parametrize(("entry", "note"), BAD_ENTRIES)
def test_a_bad_entry_is_a_note_in_runs_never_a_score(run: Path, entry: object, note: str) -> None:
    (run / EVAL_FILE).write_text(json.dumps({"best.npz": {"test": entry, "dev": {"accuracy": 0.5, "epoch": 2}}}))
    row = runs_row(run)
    assert row["test_accuracy"] is None and row["status"] == "finished"
    assert note in row["note"] and "ignored" in row["note"]
    assert read_eval_record(run)[0] == {"best.npz": {"dev": {"accuracy": 0.5, "epoch": 2}}}


def test_non_finite_accuracies_are_refused(run: Path) -> None:
    for text in ("NaN", "Infinity", "-Infinity"):
        (run / EVAL_FILE).write_text('{"best.npz": {"test": {"accuracy": ' + text + ', "epoch": 2}}}')
        row = runs_row(run)
        assert row["test_accuracy"] is None and "is not a fraction" in row["note"]


HOSTILE = [(record, kind) for record in (EVAL_FILE, "config.yaml", "metrics.jsonl")
           for kind in ("fifo", "dev-zero", "nested", "huge", "number-digits", "directory")
           if (record, kind) != ("config.yaml", "number-digits")]  # YAML reads long integers as numbers


@pytest.mark.parametrize(("record", "kind"), HOSTILE)
def test_hostile_records_are_notes_in_bounded_time_and_memory(run: Path, record: str, kind: str) -> None:
    path = run / record
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "nested":
        path.write_text("[" * 200_000)
    elif kind == "huge":
        with open(path, "wb") as handle:
            handle.truncate(80 << 20)  # sparse: costs no disk
    elif kind == "number-digits":
        path.write_text('{"best.npz": {"test": {"accuracy": 1' + "0" * 5000 + ', "epoch": 2}}}')
    else:
        path.mkdir()
    outcome = run_limited(mlp_command("runs", run, "--json"), memory=1 << 30, seconds=60)
    assert outcome.code == 0 and not outcome.killed and "Traceback" not in outcome.output, outcome.output[-2000:]
    (row,) = json.loads(outcome.stdout)
    assert row["test_accuracy"] is None and row["note"], row
    assert outcome.seconds < 30 and outcome.peak_mib < 400, (outcome.seconds, outcome.peak_mib)
