"""`mlp train` and `mlp eval` end to end on real MNIST (the offline copy), kept small and quick."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import runner

from mlp_cli.cli import app
from mlp_cli.training.checkpoint import load_checkpoint
from mlp_cli.training.metrics import read_metrics

SMALL = ["--hidden", "32", "--batch", "100", "--set", "data.limit=2000", "--set", "data.dev_size=1000"]


def train(data_dir: Path, out: Path, *extra: str):
    return runner.invoke(app, ["train", "--data-dir", str(data_dir), "--out", str(out), *SMALL, *extra])


def test_train_writes_a_run_and_eval_reads_it(mnist_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(mnist_data_dir, out, "--epochs", "2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 2 and summary["steps"] == 40  # 2000 / 100 per epoch
    assert 0.5 < summary["dev_accuracy"] <= 1.0
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "metrics.jsonl", "last.npz", "best.npz"}

    evaluated = runner.invoke(app, ["eval", str(out / "last.npz"), "--data-dir", str(mnist_data_dir), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["split"] == "test" and report["examples"] == 10_000
    assert 0.5 < report["accuracy"] <= 1.0

    dev = runner.invoke(app, ["eval", str(out / "last.npz"), "--data-dir", str(mnist_data_dir),
                              "--split", "dev", "--json"])
    assert json.loads(dev.stdout)["accuracy"] == pytest.approx(rows[-1]["dev_accuracy"])
    assert json.loads(dev.stdout)["examples"] == 1000

    quiet = runner.invoke(app, ["eval", str(out / "last.npz"), "--data-dir", str(mnist_data_dir), "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert quiet.stdout == f"loss {report['loss']:.4f}  accuracy {100 * report['accuracy']:.2f}%\n"


def test_plain_progress_lines_when_not_a_terminal_and_quiet_prints_nothing(
    mnist_data_dir: Path, tmp_path: Path
) -> None:
    result = train(mnist_data_dir, tmp_path / "a", "--epochs", "2")
    assert result.exit_code == 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "dev loss" in lines[0]
    assert "Training finished" in result.stdout and "mlp eval" in result.stdout
    assert "dev accuracy" in result.stdout and "→" in result.stdout  # the closing sparklines
    quiet = train(mnist_data_dir, tmp_path / "b", "--epochs", "1", "--quiet")
    assert quiet.exit_code == 0 and quiet.output == ""


def test_resume_through_the_cli_matches_an_uninterrupted_run(mnist_data_dir: Path, tmp_path: Path) -> None:
    extra = ["--optimizer", "momentum", "--lr", "0.1"]
    assert train(mnist_data_dir, tmp_path / "full", "--epochs", "3", *extra).exit_code == 0
    assert train(mnist_data_dir, tmp_path / "part", "--epochs", "1", *extra).exit_code == 0
    resumed = runner.invoke(app, ["train", "--resume", str(tmp_path / "part" / "last.npz"), "--epochs", "3",
                                  "--data-dir", str(mnist_data_dir)])
    assert resumed.exit_code == 0, resumed.output
    full, part = load_checkpoint(tmp_path / "full" / "last.npz"), load_checkpoint(tmp_path / "part" / "last.npz")
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(full.params[name], part.params[name])
    assert [r["epoch"] for r in read_metrics(tmp_path / "part")] == [1, 2, 3]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--hidden", "0"], "model.hidden = 0"),
        (["--lr", "-1"], "optimizer.lr = -1.0"),
        (["--set", "model.hiden=3"], "did you mean 'model.hidden'"),
        (["--optimizer", "adma"], "did you mean 'adam'"),
        (["--config", "no/such.yaml"], "not found"),
        (["--name", "nm"], "--name names the run's folder in runs/, --out a directory anywhere"),  # beside --out
    ],
)
def test_bad_settings_exit_2_with_one_line_and_write_nothing(
    mnist_data_dir: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    result = train(mnist_data_dir, tmp_path / "run", *args)
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_hidden_batch_flags_alone_train_and_download_on_demand(offline_mnist_url: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLP_MNIST_MIRROR", offline_mnist_url)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--hidden", "300", "--batch", "1000", "--epochs", "1",
                                 "--set", "data.limit=3000", "--quiet"])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("default-") and (run / "best.npz").exists()
    assert load_checkpoint(run / "last.npz").params.hidden == 300


def test_existing_run_dir_is_refused_unless_overwrite(mnist_data_dir: Path, tmp_path: Path) -> None:
    assert train(mnist_data_dir, tmp_path / "run", "--epochs", "1").exit_code == 0
    before = (tmp_path / "run" / "last.npz").read_bytes()
    again = train(mnist_data_dir, tmp_path / "run", "--epochs", "1")
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    assert (tmp_path / "run" / "last.npz").read_bytes() == before
    assert train(mnist_data_dir, tmp_path / "run", "--epochs", "1", "--overwrite", "--seed", "3").exit_code == 0
    assert (tmp_path / "run" / "last.npz").read_bytes() != before


def test_the_advice_for_an_existing_run_dir_fits_what_it_holds(mnist_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    diverged = train(mnist_data_dir, out, "--epochs", "1", "--lr", "1e4")
    assert diverged.exit_code == 1 and "learning rate" in diverged.stderr
    assert sorted(p.name for p in out.iterdir()) == [".lock", "config.yaml"]  # .lock: the writers' lock
    refused = train(mnist_data_dir, out, "--epochs", "1", "--lr", "0.5")
    assert refused.exit_code == 2
    assert "holds only a config.yaml, no checkpoint; pass --overwrite" in refused.stderr
    assert "--resume" not in refused.stderr
    retried = train(mnist_data_dir, out, "--epochs", "1", "--lr", "0.5", "--overwrite")
    assert retried.exit_code == 0, retried.output
    assert load_checkpoint(out / "last.npz").epoch == 1
    # a directory holding something else is refused, and --resume is offered only with a checkpoint
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused = train(mnist_data_dir, other, "--epochs", "1")
    assert refused.exit_code == 2 and "--overwrite" in refused.stderr and "--resume" not in refused.stderr
    again = train(mnist_data_dir, out, "--epochs", "1")
    assert again.exit_code == 2 and f"--resume {out / 'last.npz'}" in again.stderr
    # a file where a directory of --out should be: the path typed is wrong, exit 2
    in_a_file = train(mnist_data_dir, other / "notes.txt" / "run", "--epochs", "1")
    assert in_a_file.exit_code == 2 and f"{other / 'notes.txt'} is a file, not a directory" in in_a_file.stderr


def test_without_a_dev_set_best_is_chosen_by_train_accuracy(mnist_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(mnist_data_dir, out, "--epochs", "2", "--set", "data.dev_size=0", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dev_accuracy"] is None and summary["best_by"] == "train_accuracy"
    rows = read_metrics(out)
    assert summary["best_accuracy"] == max(r["train_accuracy"] for r in rows)
    no_dev = runner.invoke(app, ["eval", str(out / "best.npz"), "--split", "dev", "--data-dir", str(mnist_data_dir)])
    assert no_dev.exit_code == 2 and "no dev split" in no_dev.stderr


def test_the_summary_says_when_early_stopping_ended_the_run(mnist_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--epochs", "6", "--set", "early_stopping.enabled=true", "--set", "early_stopping.patience=1",
            "--set", "early_stopping.min_delta=0.5"]  # no epoch can gain 50 points: stops after epoch 2
    result = train(mnist_data_dir, out, *args, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stopped_early"] is True and summary["epochs"] == 2 and summary["planned_epochs"] == 6
    shown = train(mnist_data_dir, tmp_path / "shown", *args)
    assert "stopped early" in shown.stdout and "epoch 2 of 6" in shown.stdout


def test_eval_rejects_bad_checkpoints_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_text("not a checkpoint")
    result = runner.invoke(app, ["eval", str(bad)])
    assert result.exit_code == 1 and str(bad) in result.stderr and "Traceback" not in result.output
    missing = runner.invoke(app, ["eval", str(tmp_path / "none.npz")])
    assert missing.exit_code == 2 and "not found" in missing.stderr
    split = runner.invoke(app, ["eval", str(bad), "--split", "validation"])
    assert split.exit_code == 2 and "validation" in split.stderr


def test_ctrl_c_saves_a_checkpoint_exits_130_and_resume_finishes(mnist_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mlp_cli", "train", "--data-dir", str(mnist_data_dir), "--out", str(out),
           *SMALL, "--epochs", "200"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ((out / "metrics.jsonl").exists() and read_metrics(out)):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    ckpt = load_checkpoint(out / "last.npz")
    assert 1 <= ckpt.epoch < 200
    done = read_metrics(out)
    assert all(np.isfinite(r["train_loss"]) for r in done)
    resumed = runner.invoke(app, ["train", "--resume", str(out / "last.npz"), "--epochs", str(ckpt.epoch + 1),
                                  "--data-dir", str(mnist_data_dir), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out / "last.npz").epoch == ckpt.epoch + 1
    assert os.path.exists(out / "best.npz")
