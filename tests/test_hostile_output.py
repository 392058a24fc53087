"""Hostile text and paths on the way out: names that would leave runs/, paths that look like rich
markup, metrics files and options built to break the reports, scores that overflow, and --json
that must stay strict JSON. Each command runs in a child process under memory and time limits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hostile_inputs import good_checkpoint, good_row, metrics_lines
from limits import GiB, mlp_command, run_limited

WIDE = {"COLUMNS": "250"}  # rich would wrap long paths in a narrow table


def run(*args, cwd: Path | None = None, memory: int = 2 * GiB):
    return run_limited(mlp_command(*args), memory=memory, seconds=180, cwd=cwd, env=WIDE)


def strict(text: str):
    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def cache_is_empty() -> bool:
    return not any(Path(os.environ["MLP_DATA_DIR"]).iterdir())


TINY_RUN = ("--hidden", "8", "--batch", "100", "--epochs", "1", "--set", "data.limit=200", "--set", "data.dev_size=100")


def test_a_run_directory_that_looks_like_markup_is_printed_as_it_is(mnist_data_dir, tmp_path):
    outcome = run("train", *TINY_RUN, "--out", "runs/x[/]", "--data-dir", mnist_data_dir, cwd=tmp_path)

    assert outcome.code == 0 and "Traceback" not in outcome.output, outcome.output
    assert "runs/x[/]" in outcome.stdout and "runs/x[/]" in outcome.stderr
    assert (tmp_path / "runs" / "x[" / "]" / "best.npz").is_file()


def test_a_data_dir_that_looks_like_markup_is_printed_as_it_is(offline_mnist_url, tmp_path):
    data_dir = tmp_path / "m[/]" / "[bold]d"
    outcome = run("download-data", "--data-dir", data_dir, "--mirror", offline_mnist_url)

    assert outcome.code == 0 and "Traceback" not in outcome.output, outcome.output
    assert str(data_dir / "mnist") in outcome.stdout.replace("\n", "")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("../../x", "run.name = '../../x' (str) must be one folder name inside runs/"),
        ("..", "must be one folder name inside runs/"),
        ("a" * 300, "run.name is 300 characters long; expected at most 100"),
    ],
    ids=["climbs-out", "dot-dot", "300-characters"],
)
def test_a_run_name_that_would_leave_runs_or_is_too_long_is_refused_before_work(tmp_path, name, fragment):
    (tmp_path / "work").mkdir()
    outcome = run("train", "--name", name, cwd=tmp_path / "work")

    line = outcome.error_line()
    assert outcome.code == 2 and fragment in line, line
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["work"] and cache_is_empty()


def _bad_row(**fields: object) -> str:
    """A good row of epoch 2 with some fields replaced (None: removed)."""
    row = {**json.loads(good_row(2)), **fields}
    return json.dumps({key: value for key, value in row.items() if value is not None})


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        (_bad_row(epoch="two"), "'epoch' = 'two' is not a whole number"),
        (_bad_row(dev_accuracy="high"), "'dev_accuracy' = 'high' is not a number from 0 to 1"),
        (_bad_row(train_loss=float("nan")), "'train_loss' = 'nan' is not a number"),
        (_bad_row(train_loss=True), "'train_loss' = 'True' is not a number"),
        ('[1, 2]', "expected an object with an 'epoch'"),
        ('{"epoch": ' + "9" * 5000 + "}", "line 2 is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "line 2 is not valid JSON"),
    ],
    ids=["epoch-text", "accuracy-text", "nan", "bool", "not-object", "digits-5000", "nested-100000"],
)
@pytest.mark.parametrize("how", ["terminal", "file"])
def test_a_malformed_metrics_row_is_one_line(tmp_path, row, fragment, how):
    metrics = metrics_lines(tmp_path / "run" / "metrics.jsonl", good_row(1), row, good_row(3))
    args = ["--terminal"] if how == "terminal" else ["--out", tmp_path / "curves.png"]

    line = run("plot", tmp_path / "run", *args, memory=1 * GiB).error_line()

    assert f"metrics file {metrics} line 2" in line and fragment in line


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        (_bad_row(dev_accuracy=1.5), "'dev_accuracy' = '1.5' is not a number from 0 to 1"),
        (_bad_row(step=None), "it has no 'step'"),
        (_bad_row(step=2.5), "'step' = '2.5' is not a whole number"),
        (_bad_row(lr=1e39), "'lr' = '1e+39' is not a number"),  # past float32, which the loggers write
        (_bad_row(elapsed="abc"), "'elapsed' = 'abc' is not a number"),
        (_bad_row(elapsed=-1e308), "'elapsed' = '-1e+308' is not a number"),
        (_bad_row(elapsed=10**400), "'elapsed' = '" + "1" + "0" * 19 + "' is not a number"),
        (_bad_row(stopped_early="yes"), "'stopped_early' = 'yes' is not true or false"),
        (_bad_row(changes=[1, 2]), "'changes' is not a mapping"),
        (_bad_row(changes={"a": 5}), "'changes' is not a mapping"),
    ],
    ids=["accuracy-past-1", "no-step", "step-fraction", "lr-past-float32", "elapsed-text", "elapsed-negative",
         "elapsed-400-digits", "stopped-early-text", "changes-list", "changes-not-pairs"],
)
def test_every_field_of_a_metrics_row_is_checked_when_read(tmp_path, row, fragment):
    """What every reader of the rows (plot, runs, the loggers) relies on, held by the one reader
    (the command-line path of its errors is the test above)."""
    from mlp_cli.errors import MlpError
    from mlp_cli.training.metrics import read_metrics

    metrics = metrics_lines(tmp_path / "run" / "metrics.jsonl", good_row(1), row, good_row(3))
    with pytest.raises(MlpError) as refused:
        read_metrics(metrics)
    assert f"metrics file {metrics} line 2 is not a metrics row: " in str(refused.value)
    assert fragment in str(refused.value)


def test_plot_weights_with_absurd_columns_is_one_line_at_once(tmp_path):
    checkpoint = good_checkpoint(tmp_path / "run" / "best.npz")

    outcome = run("plot", "--weights", checkpoint, "--columns", "1000000000", "--out", tmp_path / "w.png",
                  memory=1 * GiB)

    line = outcome.error_line()
    assert outcome.code == 2 and "--columns 1000000000 is more than the 16 hidden units" in line
    assert outcome.seconds < 20 and not (tmp_path / "w.png").exists()


@pytest.fixture
def overflowing(tmp_path) -> Path:
    return good_checkpoint(tmp_path / "run" / "best.npz", w2_fill=3e38)  # float32's largest: scores overflow


@pytest.mark.parametrize("flag", ["-q", "--json"])
def test_an_evaluation_whose_scores_overflow_says_so(overflowing, mnist_data_dir, flag):
    outcome = run("eval", overflowing, "--data-dir", mnist_data_dir, flag)

    line = outcome.error_line()
    assert outcome.code == 1 and "overflows: the network's scores are not finite on the test split" in line
    if flag == "--json":  # no scores: the error, as one strict JSON line for scripts
        assert strict(outcome.stdout) == {"error": line.removeprefix("error: "), "exit_code": 1}
    else:
        assert outcome.stdout == ""  # no "loss nan accuracy 9.80%"


def test_json_output_is_strict_even_when_scores_overflow(overflowing, mnist_data_dir, tmp_path):
    from hostile_inputs import digit_image

    outcome = run("predict", overflowing, digit_image(tmp_path / "digit.png"), "--json")

    assert outcome.code == 0, outcome.output
    (result,) = strict(outcome.stdout)["predictions"]
    assert all(entry["probability"] is None or 0 <= entry["probability"] <= 1 for entry in result["top"])
    for args in (("info", overflowing, "--json"), ("download-data", "--data-dir", mnist_data_dir, "--json")):
        finished = run(*args)
        assert finished.code == 0, finished.output
        strict(finished.stdout)


@pytest.mark.parametrize("record", ["metrics.jsonl", "config.yaml"])
def test_a_record_that_is_a_link_is_refused_not_followed(tmp_path, record):
    """A run's record linked to another file (a secret, say): refused by name, its target never read."""
    run_dir = tmp_path / "run"
    metrics_lines(run_dir / "metrics.jsonl", good_row(1), good_row(2))
    (run_dir / "config.yaml").write_text("model:\n  hidden: 8\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("model:\n  hidden: 9\n" if record == "config.yaml" else good_row(1) + "\n")
    (run_dir / record).unlink()
    (run_dir / record).symlink_to(secret)

    outcome = run("runs", run_dir, "--json")  # the table names the run's problem in its row

    assert outcome.code == 0 and "Traceback" not in outcome.output, outcome.output
    (row,) = strict(outcome.stdout)
    assert f"{run_dir / record} is a symbolic link" in row["note"] and row["epochs"] == 0, row
    if record == "metrics.jsonl":
        line = run("plot", run_dir, "--terminal").error_line()
        assert f"metrics file {run_dir / record} is a symbolic link" in line, line


def test_a_huge_record_is_refused_by_its_size_before_it_is_read(tmp_path):
    """A 2 GiB sparse metrics.jsonl: refused by its size; the reader's peak memory stays that of a
    good run's (reading up to the 64 MiB limit first would add as much)."""
    good, huge = tmp_path / "good", tmp_path / "huge"
    metrics_lines(good / "metrics.jsonl", good_row(1), good_row(2))
    huge.mkdir()
    with open(huge / "metrics.jsonl", "wb") as handle:
        handle.truncate(2 * GiB)

    baseline, outcome = run("plot", good, "--terminal"), run("plot", huge, "--terminal")

    assert baseline.code == 0, baseline.output
    assert "larger than 64 MiB" in outcome.error_line() and outcome.code != 0
    assert outcome.peak_mib < baseline.peak_mib + 32, (outcome.peak_mib, baseline.peak_mib)
