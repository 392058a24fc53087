"""`mlp runs` over mixed run directories, and `mlp eval` of several models (whose results
`mlp runs` then shows)."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import time
from pathlib import Path

import pytest
from helpers import runner

from mlp_cli.cli import app
from mlp_cli.config import Config, OptimizerConfig, TrainConfig
from mlp_cli.sweeps.records import append_trial

OLD = time.time() - 3600  # an hour ago: nothing that old is running


def make_run(path: Path, *, lr: float = 0.5, epochs: int = 3, done: int = 3, dev: list[float] | None = None,
             checkpoint: bool = True, age: float = OLD) -> Path:
    """A run directory as `mlp train` leaves it (the checkpoints are placeholders: not read)."""
    path.mkdir(parents=True)
    config = dataclasses.replace(Config(), optimizer=OptimizerConfig(lr=lr), train=TrainConfig(epochs=epochs))
    (path / "config.yaml").write_text(config.to_yaml())
    dev = dev or [0.5 + 0.1 * e for e in range(done)]
    rows = [{"epoch": e + 1, "step": 10 * (e + 1), "train_loss": 1.0, "train_accuracy": 0.9, "dev_loss": 1.0,
             "dev_accuracy": dev[e], "lr": lr, "seconds": 1.0, "examples_per_second": 1.0, "elapsed": 1.5 * (e + 1)}
            for e in range(done)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if checkpoint and done:
        (path / "last.npz").write_bytes(b"PK")
    for file in path.iterdir():
        os.utime(file, (age, age))
    return path


def test_runs_shows_each_kind_of_run_and_never_fails_on_a_broken_one(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_run(runs / "finished", lr=0.1, dev=[0.6, 0.8, 0.7])
    make_run(runs / "stopped", lr=0.2, epochs=5, done=2)
    (runs / "empty").mkdir()
    (make_run(runs / "garbled", lr=0.4) / "metrics.jsonl").write_text("{not json\n{}\n")
    locked = make_run(runs / "locked", lr=0.6, epochs=5, done=1)
    sweep = tmp_path / "sweeps" / "s"
    make_run(sweep / "trials" / "000-lr=9", lr=9.0, epochs=3, done=1)
    append_trial(sweep, {"trial": "000-lr=9", "status": "diverged", "error": "training diverged: ..."})
    append_trial(sweep, {"trial": "001-lr=8", "status": "failed", "error": "no data"})  # never got a directory
    (runs / "finished" / "eval.json").write_text(json.dumps({"best.npz": {"test": {"accuracy": 0.75, "epoch": 2}}}))
    (runs / "stopped" / "eval.json").write_text(json.dumps({"best.npz": {"test": {"accuracy": 0.5, "epoch": 9}}}))

    with open(locked / ".lock", "wb") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # as a training process holds it
        result = runner.invoke(app, ["runs", str(runs), str(tmp_path / "sweeps"), "--json"])
    assert result.exit_code == 0, result.output
    table = {Path(r["name"]).name: r for r in json.loads(result.stdout)}
    status = {name: r["status"] for name, r in table.items()}
    assert status == {"finished": "finished", "stopped": "interrupted", "empty": "failed",
                      "garbled": "failed", "locked": "running", "000-lr=9": "diverged", "001-lr=8": "failed"}
    assert table["empty"]["note"] == "no metrics" and "line 1 is not valid JSON" in table["garbled"]["note"]
    finished = table["finished"]
    assert (finished["best_dev_accuracy"], finished["best_epoch"], finished["epochs"]) == (0.8, 2, 3)
    assert finished["test_accuracy"] == 0.75 and finished["seconds"] == 4.5
    assert table["stopped"]["test_accuracy"] is None  # recorded for another best.npz (epoch 9): stale
    assert finished["differing"] == {"lr": 0.1, "epochs": 3}  # only what differs between the runs
    assert table["stopped"]["differing"] == {"lr": 0.2, "epochs": 5}

    by_dev = json.loads(runner.invoke(app, ["runs", str(runs), "--sort", "dev", "--json"]).stdout)
    assert Path(by_dev[0]["name"]).name == "finished"
    assert [r["best_dev_accuracy"] for r in by_dev][-2:] == [None, None]
    by_lr = json.loads(runner.invoke(app, ["runs", str(runs), "--sort", "optimizer.lr", "--json"]).stdout)
    assert [Path(r["name"]).name for r in by_lr][:3] == ["finished", "stopped", "garbled"]
    shown = runner.invoke(app, ["runs", str(runs)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "interrupted" in shown.stdout and "75.00%" in shown.stdout
    bad = runner.invoke(app, ["runs", str(runs), "--sort", "colour"])
    assert bad.exit_code == 2 and "--sort 'colour'" in bad.stderr


def test_runs_defaults_to_runs_and_sweeps_and_says_when_there_is_nothing(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["runs"]).stdout.startswith("no runs found in runs, sweeps")
    make_run(tmp_path / "runs" / "a")
    assert [r["status"] for r in json.loads(runner.invoke(app, ["runs", "--json"]).stdout)] == ["finished"]
    missing = runner.invoke(app, ["runs", "nowhere"])
    assert missing.exit_code == 2 and "nowhere is not a directory" in missing.stderr


def train_tiny(data_dir: Path, out: Path, lr: str) -> None:
    result = runner.invoke(app, ["train", "--data-dir", str(data_dir), "--out", str(out), "--hidden", "16",
                                 "--batch", "100", "--epochs", "1", "--lr", lr, "--set", "data.limit=1000",
                                 "--set", "data.dev_size=500", "--quiet"])
    assert result.exit_code == 0, result.output


def test_eval_of_several_models_names_each_compares_them_and_records_the_results(mnist_data_dir: Path,
                                                                                tmp_path: Path) -> None:
    train_tiny(mnist_data_dir, tmp_path / "a", "0.5")
    train_tiny(mnist_data_dir, tmp_path / "b", "0.05")
    models = [str(tmp_path / "a"), str(tmp_path / "b" / "last.npz")]
    listed = runner.invoke(app, ["eval", *models, "--data-dir", str(mnist_data_dir), "--json"])
    assert listed.exit_code == 0, listed.output
    reports = json.loads(listed.stdout)
    assert [r["checkpoint"] for r in reports] == [str(tmp_path / "a" / "best.npz"), str(tmp_path / "b" / "last.npz")]
    single = json.loads(runner.invoke(app, ["eval", str(tmp_path / "a" / "best.npz"), "--data-dir",
                                            str(mnist_data_dir), "--json"]).stdout)
    assert reports[0]["accuracy"] == single["accuracy"] and reports[0]["examples"] == 10_000
    assert reports[0]["accuracy"] != reports[1]["accuracy"]

    quiet = runner.invoke(app, ["eval", *models, "--data-dir", str(mnist_data_dir), "-q"])
    lines = quiet.stdout.splitlines()
    assert lines == [f"{r['checkpoint']} (epoch 1): loss {r['loss']:.4f}  accuracy {100 * r['accuracy']:.2f}%"
                     for r in reports]
    full = runner.invoke(app, ["eval", *models, "--data-dir", str(mnist_data_dir)], env={"COLUMNS": "200"})
    assert "2 models on the test split" in full.stdout and "best" in full.stdout and "pts" in full.stdout

    recorded = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert recorded["last.npz"]["test"]["accuracy"] == reports[1]["accuracy"]
    shown = json.loads(runner.invoke(app, ["runs", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]).stdout)
    assert [r["test_accuracy"] for r in shown] == [reports[0]["accuracy"], reports[1]["accuracy"]]

    errors = runner.invoke(app, ["eval", *models, "--errors", "3"])
    assert errors.exit_code == 2 and "single checkpoint" in errors.stderr
    (tmp_path / "c").mkdir()
    empty = runner.invoke(app, ["eval", str(tmp_path / "c")])
    assert empty.exit_code == 2 and "without best.npz" in empty.stderr


def test_tables_into_a_pipe_are_not_cut_to_a_terminal_width(tmp_path) -> None:
    import json

    run = tmp_path / ("a-long-run-name-" * 5).rstrip("-")
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "step": 10, "train_loss": 0.5,
                                                   "train_accuracy": 0.912345, "dev_loss": 0.6,
                                                   "dev_accuracy": 0.901234, "lr": 0.1, "seconds": 1.0}) + "\n")
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert run.name in result.stdout and "…" not in result.stdout  # nothing shortened with an ellipsis


def small_sweep(data_dir: Path, out: Path) -> Path:
    """The README's tiny sweep (optimizer x lr, four trials), one epoch on 1,000 images (mlp train's
    shortcut flags: --hidden 16 is --set model.hidden=16, --lr 0.1,0.5 sweeps)."""
    result = runner.invoke(app, ["sweep", "--config", "default", "--set", "data.limit=1000", "--hidden", "16",
                                 "--batch", "100", "--epochs", "1",
                                 "--set", "optimizer.name=sgd,momentum", "--lr", "0.1,0.5",
                                 "--data-dir", str(data_dir), "--out", str(out), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    return out


def name_cells(table: str) -> list[str]:
    """The run column of a boxed table, each name's wrapped lines joined back together."""
    names: list[str] = []
    for line in table.splitlines():
        if not line.startswith("│"):
            continue
        first, status = line.split("│")[1].strip(), line.split("│")[2].strip()
        names.append(first) if status else names.__setitem__(-1, names[-1] + first)
    return names


@pytest.mark.parametrize("width", [80, 100])
def test_runs_of_a_real_sweep_fit_80_and_100_columns_with_whole_headers_and_names(mnist_data_dir: Path,
                                                                                  tmp_path: Path,
                                                                                  width: int) -> None:
    sweep = small_sweep(mnist_data_dir, tmp_path / "tiny")
    trials = sorted(p.name for p in (sweep / "trials").iterdir())

    shown = runner.invoke(app, ["runs", str(sweep)], env={"COLUMNS": str(width)})

    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert all(len(line.rstrip()) <= width for line in lines) and "…" not in shown.stdout
    top = next(i for i, line in enumerate(lines) if line.startswith("┏"))
    title = "".join(line.strip() for line in lines[:top])  # a long folder wraps
    assert title.replace(" ", "") == f"4runsin{sweep}/trials/"  # the folder every run shares moves into the title
    headers = [cell.strip() for cell in lines[top + 1].split("┃")[1:-1]]
    assert headers[:6] == ["run", "status", "epochs", "best dev", "test", "time"]
    assert name_cells(shown.stdout) == trials  # whole, never cut
    assert ("optimizer" in headers) == (width == 100) and "lr" in headers  # settings as many as fit
    wide = runner.invoke(app, ["runs", str(sweep), "--wide"], env={"COLUMNS": str(width)})
    header_line = next(line for line in wide.stdout.splitlines() if line.startswith("┃"))
    assert [h.strip() for h in header_line.split("┃")[1:-1]][-2:] == ["lr", "optimizer"]


def test_runs_into_a_pipe_are_tab_separated_and_columns_are_chosen_by_name(mnist_data_dir: Path,
                                                                           tmp_path: Path) -> None:
    sweep = small_sweep(mnist_data_dir, tmp_path / "tiny")

    piped = runner.invoke(app, ["runs", str(sweep)])  # no terminal, no COLUMNS: a pipe

    rows = [line.split("\t") for line in piped.stdout.splitlines()]
    assert rows[0] == ["run", "status", "epochs", "best dev", "test", "time", "lr", "optimizer"]
    assert [row[0] for row in rows[1:]] == sorted(str(p) for p in (sweep / "trials").iterdir())
    assert {row[6] for row in rows[1:]} == {"0.1", "0.5"} and {len(row) for row in rows} == {8}
    assert {row[2] for row in rows[1:]} == {"1/1"}  # --epochs 1 reached every trial
    chosen = runner.invoke(app, ["runs", str(sweep), "--columns", "run,optimizer.lr,hidden,dev"])
    assert chosen.stdout.splitlines()[0].split("\t") == ["run", "lr", "hidden", "best dev"]
    assert {line.split("\t")[2] for line in chosen.stdout.splitlines()[1:]} == {"16"}  # same for all: asked for
    typo = runner.invoke(app, ["runs", str(sweep), "--columns", "run,optimzer"])
    assert typo.exit_code == 2 and "'optimzer' is not a column (did you mean optimizer?)" in typo.stderr
    assert json.loads(runner.invoke(app, ["runs", str(sweep), "--json"]).stdout)[0]["differing"].keys() == {
        "lr", "optimizer"}


def test_runs_shows_what_a_sweep_record_says_without_obeying_it_or_following_its_links(tmp_path: Path) -> None:
    """A trial folder replaced by a link is named, never read through; an error text holding
    terminal escapes (set the title, clear the screen) is shown escaped, in the table and the TSV."""
    sweep = tmp_path / "s"
    make_run(sweep / "trials" / "000-lr=0.5", lr=0.5)
    outside = make_run(tmp_path / "outside", lr=9.75)
    (sweep / "trials" / "001-lr=1").symlink_to(outside)
    append_trial(sweep, {"trial": "000-lr=0.5", "status": "ok"})
    append_trial(sweep, {"trial": "001-lr=1", "status": "ok"})
    append_trial(sweep, {"trial": "002-lr=2", "status": "failed", "error": "\x1b]0;PWNED\x07\x1b[2J"})

    listed = runner.invoke(app, ["runs", str(sweep), "--json"])
    table = {Path(r["name"]).name: r for r in json.loads(listed.stdout)}
    assert table["000-lr=0.5"]["status"] == "finished"
    assert table["001-lr=1"]["status"] == "failed" and "is a symbolic link" in table["001-lr=1"]["note"]
    assert "9.75" not in listed.stdout

    for env in ({}, {"COLUMNS": "250"}):  # tab-separated into a pipe; the rich table
        shown = runner.invoke(app, ["runs", str(sweep)], env=env)
        assert shown.exit_code == 0 and "\\x1b]0;PWNED\\x07\\x1b[2J" in shown.stdout, shown.stdout
        assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout


def test_runs_says_when_a_sweeps_record_cannot_be_read(tmp_path: Path) -> None:
    """Its trials are still listed from their folders, each with a note naming the record's
    problem (here a trials.jsonl that is a link, never read through); a readable sweep has none."""
    sweep, readable = tmp_path / "s", tmp_path / "ok"
    make_run(sweep / "trials" / "000-lr=0.5", lr=0.5)
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text(json.dumps({"trial": "000-lr=0.5", "status": "diverged", "error": "from elsewhere"}) + "\n")
    (sweep / "trials.jsonl").symlink_to(elsewhere)
    make_run(readable / "trials" / "000-lr=0.5", lr=0.5)
    append_trial(readable, {"trial": "000-lr=0.5", "status": "ok"})

    listed = runner.invoke(app, ["runs", str(sweep), str(readable), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {str(Path(r["name"]).relative_to(tmp_path).parts[0]): r for r in json.loads(listed.stdout)}
    assert rows["s"]["status"] == "finished" and "from elsewhere" not in listed.stdout
    assert rows["s"]["note"].startswith("its sweep's record could not be read (") and "link" in rows["s"]["note"]
    assert rows["ok"]["status"] == "finished" and rows["ok"]["note"] is None
