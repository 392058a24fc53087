"""Sweep specs: grid and random expansion, trial names, and validation before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import mlp, runner

from mlp_cli.cli import app
from mlp_cli.errors import ConfigError
from mlp_cli.sweeps.spec import expand, plan_trials, read_sweep_file, spec_from_sets, trial_name


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_grid_is_the_product_of_the_lists_in_order() -> None:
    spec = spec_from_sets(None, ["optimizer.lr=0.05,0.1,0.2", "model.hidden=300,800", "train.epochs=3"])
    assert spec.fixed == {"train.epochs": 3}
    points = expand(spec)
    assert len(points) == 6
    assert points[0] == {"optimizer.lr": 0.05, "model.hidden": 300}
    assert points[1] == {"optimizer.lr": 0.05, "model.hidden": 800}  # the last key varies fastest
    assert {(p["optimizer.lr"], p["model.hidden"]) for p in points} == {
        (lr, h) for lr in (0.05, 0.1, 0.2) for h in (300, 800)}
    trials = plan_trials(spec)
    assert [t.config.train.epochs for t in trials] == [3] * 6
    assert trials[5].config.optimizer.lr == 0.2 and trials[5].config.model.hidden == 800
    assert trials[5].name == "005-lr=0.2-hidden=800"


@pytest.mark.parametrize(("sets", "message"), [
    (["model.hidden"], "--set expects section.key=value or section.key=a,b,c, got 'model.hidden'"),
    ([" =3"], "--set expects section.key=value or section.key=a,b,c, got ' =3'"),
    (["hidden=3,4"], "'hidden' must look like section.key (e.g. model.hidden)"),
    (["model.hidden.x=3"], "'model.hidden.x' must look like section.key"),
    (["modle.hidden=3,4"], "unknown section 'modle' (did you mean 'model'?)"),
])
def test_set_in_a_sweep_is_split_and_merged_by_the_config_s_rules(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_trials(spec_from_sets(None, sets))
    assert message in str(caught.value)


def test_exponents_without_a_dot_are_numbers_in_a_sweep_as_in_a_config() -> None:
    spec = spec_from_sets(None, ["train.l2=1e-5,+2E-4", "optimizer.lr=5e-1", "run.name=1e5x"])
    assert spec.grid == {"train.l2": [1e-5, 2e-4]} and spec.fixed["optimizer.lr"] == 0.5
    assert spec.fixed["run.name"] == "1e5x"
    assert [t.config.train.l2 for t in plan_trials(spec_from_sets(None, ["train.l2=1e-5,2e-4"]))] == [1e-5, 2e-4]


def test_random_draws_are_reproducible_in_range_and_stable_as_trials_grow(tmp_path: Path) -> None:
    path = write(tmp_path, """
config: default
grid: {optimizer.name: [sgd, momentum]}
random:
  optimizer.lr: {loguniform: [1.0e-3, 1.0]}
  optimizer.momentum: {uniform: [0.8, 0.99]}
  model.hidden: {int: [10, 12]}
  train.batch_size: {choice: [50, 100]}
trials: 40
seed: 3
""")
    spec = read_sweep_file(path)
    points = expand(spec)
    assert len(points) == 80  # every draw with every grid point
    assert points == expand(read_sweep_file(path))
    draws = points[:40]
    assert all(1e-3 <= p["optimizer.lr"] <= 1.0 for p in draws)
    assert all(0.8 <= p["optimizer.momentum"] <= 0.99 for p in draws)
    assert {p["model.hidden"] for p in draws} == {10, 11, 12}  # inclusive
    assert {p["train.batch_size"] for p in draws} == {50, 100}
    assert all(float(f"{p['optimizer.lr']:.4g}") == p["optimizer.lr"] for p in draws)  # the name is exact
    assert points[40]["optimizer.name"] == "momentum" and points[40]["optimizer.lr"] == draws[0]["optimizer.lr"]
    fewer = expand(read_sweep_file(path, trials=5))
    assert fewer[:5] == draws[:5]  # more trials extend the search, the first ones stay
    assert expand(read_sweep_file(path, seed=4))[:40] != draws
    lrs = sorted(p["optimizer.lr"] for p in draws)
    assert lrs[len(lrs) // 2] < 0.2  # log-uniform: the median is near sqrt(1e-3), not 0.5


def test_trial_names_are_unique_filesystem_safe_and_disambiguated() -> None:
    assert trial_name(7, {"optimizer.name": "adam", "train.l2": 1e-05}) == "007-optimizer=adam-l2=1e-05"
    assert trial_name(0, {"train.seed": 1, "data.seed": 2}) == "000-train.seed=1-data.seed=2"
    assert trial_name(1, {"run.x": "a/b c"}) == "001-x=a_b_c"
    assert trial_name(2, {}) == "002"


@pytest.mark.parametrize(("text", "message"), [
    ("grid: {optimizer.lr: [0.1, -1]}", "trial 001-lr=-1: optimizer.lr = -1"),
    ("grid: {optimizer.lrr: [0.1]}", "unknown key 'optimizer.lrr' (did you mean 'optimizer.lr'?)"),
    ("random: {train.l2: {loguniform: [0, 1]}}\ntrials: 2", "loguniform needs lo > 0"),
    ("random: {train.l2: {uniform: [1, 0.5]}}\ntrials: 2", "uniform takes two numbers lo < hi"),
    ("random: {model.hidden: {int: [1.5, 3]}}\ntrials: 2", "int takes two integers"),
    ("random: {train.l2: {normal: [0, 1]}}", "expected one of {choice: [...]}"),
    ("grid: {optimizer.lr: []}", "expected a non-empty list"),
    ("grd: {optimizer.lr: [1]}", "unknown key 'grd'"),
    ("trials: 0", "trials = 0"),
    ("grid: {run.dir: [a, b]}", "run.dir cannot be set in a sweep"),
    ("grid: {model.hidden: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\nrandom: {train.l2: {choice: [0]}}\ntrials: 1001",
     "10,010 trials; at most 10,000"),
])
def test_a_bad_sweep_file_is_one_line_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        plan_trials(read_sweep_file(write(tmp_path, text)))
    assert message in str(caught.value)


def test_every_trial_is_validated_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", "--set", "optimizer.lr=0.1,0.5,-2", "--set", "train.epochs=1",
                                 "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "trial 002-lr=-2" in result.stderr and "optimizer.lr = -2" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing written, nothing trained


def test_dry_run_lists_the_trials_of_a_shipped_sweep() -> None:
    result = runner.invoke(app, ["sweep", "best-300", "--dry-run", "--json", "--out", "unused"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert len(listed["trials"]) == 32
    assert len({t["trial"] for t in listed["trials"]}) == 32
    assert all(t["overrides"].get("model.hidden", 300) == 300 for t in listed["trials"])


SHIPPED_SWEEPS = sorted((Path(__file__).resolve().parent.parent / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_SWEEPS, ids=lambda p: p.stem)
def test_every_shipped_sweep_file_plans_its_trials(path: Path) -> None:
    result = runner.invoke(app, ["sweep", path.stem, "--dry-run", "--json", "--out", "unused"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["trials"]


@pytest.mark.parametrize(("recipe", "sweep"), [("fashion-800", "fashion"), ("record", "record"),
                                             ("record", "record-longer")])
def test_a_searched_recipe_is_a_trial_of_the_sweep_that_chose_it(recipe: str, sweep: str) -> None:
    """A shipped config that says a sweep chose it is one of that sweep's trials."""
    from mlp_cli.config_file import load_config

    configs = Path(__file__).resolve().parent.parent / "configs"
    assert f"configs/sweeps/{sweep}.yaml" in (configs / f"{recipe}.yaml").read_text()
    shipped = load_config(configs / f"{recipe}.yaml").to_dict()
    shipped.pop("run")
    trials = [t.config.to_dict() for t in plan_trials(read_sweep_file(configs / "sweeps" / f"{sweep}.yaml"))]
    assert sum({k: v for k, v in trial.items() if k != "run"} == shipped for trial in trials) == 1


def test_usage_errors_of_the_command(tmp_path: Path) -> None:
    both = runner.invoke(app, ["sweep", "tiny", "--config", "best"])
    assert both.exit_code == 2 and "not both" in both.stderr
    missing = runner.invoke(app, ["sweep", "no-such-sweep"])
    assert missing.exit_code == 2 and "tiny" in missing.stderr  # lists the shipped ones
    scheduler = runner.invoke(app, ["sweep", "tiny", "--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path / "x")])
    assert scheduler.exit_code == 2 and "--executor dask" in scheduler.stderr


def test_sweep_takes_train_shortcut_flags_as_their_set_keys(tmp_path) -> None:
    shortcut = mlp("sweep", "--config", "default", "--lr", "0.1,0.5", "--hidden", "16", "--epochs", "2",
                   "--batch", "50", "--dry-run", "--json", "--out", tmp_path / "s")
    spelt = mlp("sweep", "--config", "default", "--set", "optimizer.lr=0.1,0.5", "--set", "model.hidden=16",
                "--set", "train.epochs=2", "--set", "train.batch_size=50", "--dry-run", "--json",
                "--out", tmp_path / "s")

    assert shortcut.exit_code == 0, shortcut.output
    assert shortcut.stdout == spelt.stdout and '"trial": "001-lr=0.5"' in shortcut.stdout
    twice = mlp("sweep", "--config", "default", "--lr", "0.1", "--set", "optimizer.lr=0.2", "--dry-run")
    assert twice.exit_code == 2 and "optimizer.lr" in twice.stderr
    with_file = mlp("sweep", "tiny", "--epochs", "1")
    assert with_file.exit_code == 2 and "--set goes with --config (so do --hidden" in with_file.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["tiny", "--trials", "5"], "--trials goes with a random search (random: in the sweep file, or --search tpe"),
    (["tiny", "--seed", "7"], "--seed goes with a random search (random: in the sweep file, or --search tpe"),
    (["--config", "default", "--lr", "0.1,0.2", "--seed", "9"], "--seed goes with a random search, which only a "
     "sweep file can describe"),
    (["--config", "default", "--lr", "0.1,0.2", "--trials", "1"], "--trials goes with a random search"),
    (["grid", "--trials", "2"], "--trials goes with a random search"),  # the file's key is refused by itself too
    (["grid"], "trials: goes with random: (the draws it counts or seeds), which this file lacks"),
    (["seeded"], "seed: goes with random: (the draws it counts or seeds), which this file lacks"),
])
def test_draws_asked_of_a_sweep_without_random_axes_are_refused(tmp_path: Path, args: list[str],
                                                                message: str) -> None:
    """--trials and --seed (and the file's trials: and seed:) count and seed the random draws: a
    grid has none, so each is a one-line usage error, not an option that silently does nothing."""
    (tmp_path / "grid.yaml").write_text("grid: {optimizer.lr: [0.1, 0.2]}\ntrials: 5\n")
    (tmp_path / "seeded.yaml").write_text("grid: {optimizer.lr: [0.1, 0.2]}\nseed: 3\n")
    args = [str(tmp_path / f"{a}.yaml") if a in ("grid", "seeded") else a for a in args]
    result = runner.invoke(app, ["sweep", *args, "--dry-run", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_trials_and_seed_still_go_with_random_axes(tmp_path: Path) -> None:
    path = write(tmp_path, "random: {optimizer.lr: {loguniform: [0.01, 1.0]}}\ntrials: 2\nseed: 1\n")
    result = runner.invoke(app, ["sweep", str(path), "--trials", "3", "--seed", "4", "--dry-run", "--json",
                                 "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["trials"]) == 3
