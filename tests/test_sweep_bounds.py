"""Sweep plans bounded before they are built: the trial count computed from the axes, each key
given once, random ranges drawn inside what the user wrote in the value's printed precision,
integer bounds a draw can use, and --jobs no more than the trials (a note above the cores)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import runner
from limits import GiB, mlp_command, run_limited

from mlp_cli.cli import app
from mlp_cli.errors import ConfigError, UsageError
from mlp_cli.sweeps.executors import default_jobs, plan_jobs
from mlp_cli.sweeps.spec import expand, plan_trials, read_sweep_file, spec_from_sets, trial_count

TEN_AXES = ["model.hidden", "train.batch_size", "train.epochs", "train.seed", "optimizer.lr", "train.l2",
            "data.limit", "data.dev_size", "data.split_seed", "optimizer.momentum"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_ten_axis_grid_is_refused_from_its_size_without_being_built(tmp_path: Path) -> None:
    sets = [arg for key in TEN_AXES for arg in ("--set", f"{key}={','.join(str(v + 1) for v in range(10))}")]
    outcome = run_limited(mlp_command("sweep", *sets, "--dry-run", "--out", tmp_path / "s"), memory=1 * GiB,
                          seconds=60)
    line = outcome.error_line()
    assert outcome.code == 2 and "has 10,000,000,000 trials; at most 10,000 are allowed" in line
    assert outcome.seconds < 20 and outcome.peak_mib < 300, (outcome.seconds, outcome.peak_mib)
    assert not (tmp_path / "s").exists()


def test_the_trial_count_is_computed_not_expanded() -> None:
    spec = spec_from_sets(None, [f"{key}={','.join(str(v + 1) for v in range(10))}" for key in TEN_AXES])
    assert trial_count(spec) == 10**10
    with pytest.raises(ConfigError, match="10,000,000,000 trials"):
        expand(spec)


def test_a_repeated_set_key_is_an_error_not_a_dropped_axis() -> None:
    with pytest.raises(ConfigError, match=r"--set optimizer.lr is given twice; give all its values in one"):
        spec_from_sets(None, ["optimizer.lr=0.1,0.2", "model.hidden=16", "optimizer.lr=0.3,0.4"])
    with pytest.raises(ConfigError, match="given twice"):
        spec_from_sets(None, ["train.epochs=1", "train.epochs=2"])
    result = runner.invoke(app, ["sweep", "--set", "optimizer.lr=0.1,0.2", "--set", "optimizer.lr=0.3",
                                 "--dry-run"])
    assert result.exit_code == 2 and "given twice" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(("text", "message"), [
    ("set: {optimizer.lr: 0.1}\ngrid: {optimizer.lr: [0.2, 0.3]}", "optimizer.lr is in both set and grid"),
    ("grid: {train.l2: [0, 0.1]}\nrandom: {train.l2: {uniform: [0, 1]}}\ntrials: 2",
     "train.l2 is in both grid and random"),
    ("random: {model.hidden: {int: [1, 100000000000000000000000000000]}}\ntrials: 2",
     "int takes two integers lo < hi, each below 2^62 in size"),
    ("random: {train.l2: {uniform: [0, 1.0e+400]}}\ntrials: 2", "uniform takes two numbers lo < hi"),
    ("random: {train.l2: {uniform: [-1.0e+308, 1.0e+308]}}\ntrials: 2", "each below 1e300 in size"),
    ("random: {train.l2: {loguniform: [1, " + "9" * 400 + "]}}\ntrials: 2", "loguniform takes two numbers"),
])
def test_plans_that_would_break_a_draw_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_trials(read_sweep_file(write(tmp_path, text)))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_huge_int_range_in_a_sweep_file_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, "random: {model.hidden: {int: [1, 100000000000000000000000000000]}}\ntrials: 2")
    result = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "int takes two integers" in result.stderr


@pytest.mark.parametrize(("kind", "lo", "hi"), [
    ("uniform", 0.12341, 0.12344),  # narrower than 4 significant digits
    ("uniform", 0.9999, 0.99999),  # next to momentum's limit of 1
    ("loguniform", 0.99991, 0.99999),
    ("uniform", 0.5000001, 0.5000002),  # beyond the 6 digits of :g in the name
])
def test_drawn_values_stay_inside_the_range_written(tmp_path: Path, kind: str, lo: float, hi: float) -> None:
    path = write(tmp_path, f"random: {{optimizer.momentum: {{{kind}: [{lo}, {hi}]}}}}\n"
                           "set: {optimizer.name: momentum}\ntrials: 200")
    trials = plan_trials(read_sweep_file(path))  # validated: no momentum rounded to 1.0
    values = [t.overrides["optimizer.momentum"] for t in trials]
    assert all(lo <= v <= hi for v in values) and len(set(values)) >= 2
    assert all(t.config.optimizer.momentum == t.overrides["optimizer.momentum"] for t in trials)
    assert all(t.name.endswith(f"momentum={v!r}") or t.name.endswith(f"momentum={v:g}")
               for t, v in zip(trials, values, strict=True))  # the name says the exact value


def test_wide_ranges_keep_four_significant_digits(tmp_path: Path) -> None:
    path = write(tmp_path, "random: {optimizer.momentum: {uniform: [0.5, 0.9]}}\ntrials: 100")
    values = [t.overrides["optimizer.momentum"] for t in plan_trials(read_sweep_file(path))]
    assert all(float(f"{v:.4g}") == v for v in values)


def test_jobs_are_capped_at_the_trials_and_a_request_above_the_cores_is_noted() -> None:
    cores = default_jobs()
    assert plan_jobs(64, "local", None, 3)[0] == 3
    assert plan_jobs(None, "local", None, 1) == (1, None)
    assert plan_jobs(None, "dask", None, 1) == (1, None)
    assert plan_jobs(cores, "local", None, 100) == (cores, None)
    jobs, note = plan_jobs(cores + 5, "local", None, 100)
    assert jobs == cores + 5 and note is not None and f"has {cores} core" in note
    assert plan_jobs(None, "dask", "tcp://10.0.0.5:8786", 100)[1] is None  # remote workers: no note for here
    with pytest.raises(UsageError, match="with --scheduler the cluster's own workers decide"):
        plan_jobs(cores + 5, "dask", "tcp://10.0.0.5:8786", 100)  # it would do nothing there
    with pytest.raises(UsageError, match="--jobs 0"):
        plan_jobs(0, "local", None, 3)


def test_the_sweep_starts_no_more_workers_than_trials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    started: list[int] = []

    def fake_executor(kind: str, jobs: int, *args: object) -> None:
        started.append(jobs)
        raise UsageError("stopped before any trial ran")

    monkeypatch.setattr("mlp_cli.sweeps.executors.make_executor", fake_executor)
    trials = default_jobs() + 2
    rates = ",".join(str(0.1 * (i + 1)) for i in range(trials))
    result = runner.invoke(app, ["sweep", "--set", f"optimizer.lr={rates}", "--jobs", "256", "--out",
                                 str(tmp_path / "s")])
    assert started == [trials] and result.exit_code == 2, (result.output, result.exception)
    assert f"note: --jobs 256: this machine has {default_jobs()} core" in result.stderr


def test_jobs_above_the_maximum_are_refused_before_any_process_starts(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    from mlp_cli.sweeps.executors import MAX_JOBS

    assert plan_jobs(MAX_JOBS, "local", None, 10 * MAX_JOBS)[0] == MAX_JOBS
    with pytest.raises(UsageError, match=f"--jobs {MAX_JOBS + 1}; expected 1 to {MAX_JOBS}"):
        plan_jobs(MAX_JOBS + 1, "local", None, 3)  # whatever the trials: a typo, not a plan
    started: list[int] = []
    monkeypatch.setattr("mlp_cli.sweeps.executors.make_executor", lambda kind, jobs, *args: started.append(jobs))
    result = runner.invoke(app, ["sweep", "--set", "optimizer.lr=0.1,0.2", "--jobs", "100000", "--out",
                                 str(tmp_path / "s")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.stderr.strip() == f"error: --jobs 100000; expected 1 to {MAX_JOBS} (trials at once, each a " \
                                    "process of its own)"
    assert started == [] and not (tmp_path / "s").exists()
