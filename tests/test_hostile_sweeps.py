"""Hostile paths and records around many runs: output paths where a file must not go (a FIFO, a
directory, a device through a link, a file where a folder must be), and a sweep's trials.jsonl
made to hang, flood or lie. Each command runs in a child process under memory and time limits;
each case is one line with its exit status, or a note in the table, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hostile_inputs import good_checkpoint, good_row, metrics_lines
from limits import GiB, mlp_command, run_limited

from mlp_cli.atomic import append_line, atomic_write_text, check_output
from mlp_cli.errors import OutputPathError

TINY = ("--config", "default", "--set", "model.hidden=8", "--set", "data.limit=200", "--set", "data.dev_size=100",
        "--set", "train.epochs=1", "--set", "train.batch_size=100", "--jobs", "1")


def run(*args, cwd: Path | None = None, seconds: float = 120):
    return run_limited(mlp_command(*args), memory=2 * GiB, seconds=seconds, cwd=cwd, env={"COLUMNS": "250"})


@pytest.fixture
def places(tmp_path) -> dict[str, Path]:
    """A FIFO, a directory, a file, a link to the FIFO and a link to /dev/null (never touched)."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("mine\n")
    (tmp_path / "to-fifo").symlink_to(tmp_path / "fifo")
    (tmp_path / "to-null").symlink_to("/dev/null")
    (tmp_path / "to-file").symlink_to(tmp_path / "file")
    return {name: tmp_path / name for name in ("fifo", "dir", "file", "to-fifo", "to-null", "to-file")}


def untouched(places: dict[str, Path]) -> None:
    assert stat.S_ISFIFO(os.lstat(places["fifo"]).st_mode) and places["dir"].is_dir()
    assert places["file"].read_text() == "mine\n" and stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize(("where", "fragment"), [
    ("fifo", "fifo is a FIFO, not a regular file; refusing to replace it"),
    ("dir", "dir is a directory, not a regular file; refusing to replace it"),
    ("file/x.yaml", "cannot write {tmp}/file/x.yaml: {tmp}/file is a file, not a directory"),
])
def test_save_best_where_no_file_can_go_is_refused_before_the_sweep(places, tmp_path, where, fragment):
    outcome = run("sweep", *TINY, "--set", "optimizer.lr=0.1,0.2", "--save-best", tmp_path / where,
                  "--out", tmp_path / "s", seconds=30)

    assert outcome.code == 2 and fragment.format(tmp=tmp_path) in outcome.error_line()
    assert not (tmp_path / "s").exists()  # before any work
    untouched(places)


@pytest.mark.parametrize("link", ["to-fifo", "to-null"])
def test_save_best_onto_a_link_replaces_the_link_never_its_target(places, mnist_data_dir, tmp_path, link):
    outcome = run("sweep", *TINY, "--save-best", places[link], "--out", tmp_path / "s", "--data-dir", mnist_data_dir,
                  "-q")

    assert outcome.code == 0, outcome.output
    assert not places[link].is_symlink() and "hidden: 8" in places[link].read_text()
    untouched(places)


def test_sweep_out_below_a_file_is_refused_before_work_and_markup_in_out_is_printed(mnist_data_dir, tmp_path):
    (tmp_path / "file").write_text("mine\n")
    refused = run("sweep", *TINY, "--out", tmp_path / "file" / "x", seconds=30)
    assert refused.code == 2 and f"{tmp_path / 'file'} is a file, not a directory" in refused.error_line()

    outcome = run("sweep", *TINY, "--out", "sweeps/[/]x", "--data-dir", mnist_data_dir, cwd=tmp_path)
    assert outcome.code == 0 and "Traceback" not in outcome.output, outcome.output
    assert "Sweep sweeps/[/]x" in outcome.stdout and (tmp_path / "sweeps" / "[" / "]x" / "trials.jsonl").is_file()


@pytest.mark.parametrize(("where", "fragment"), [
    ("fifo.png", "fifo.png is a FIFO, not a regular file"),
    ("dir.png", "dir.png is a directory, not a regular file"),
    ("file/x.png", "file is a file, not a directory"),
])
def test_plot_out_where_no_file_can_go_is_refused_before_reading(places, tmp_path, where, fragment):
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "dir.png").mkdir()
    metrics_lines(tmp_path / "run" / "metrics.jsonl", good_row(1), good_row(2))
    checkpoint = good_checkpoint(tmp_path / "run" / "best.npz")
    missing = tmp_path / "missing"  # checked after the output path: the refusal comes before any reading
    for command in (("plot", tmp_path / "run"), ("plot", "--weights", checkpoint), ("plot", missing)):
        outcome = run(*command, "--out", tmp_path / where, seconds=30)
        assert outcome.code == 2 and fragment in outcome.error_line()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo.png").st_mode) and (tmp_path / "dir.png").is_dir()
    untouched(places)


def test_the_write_rule_itself(places, tmp_path):
    for where in ("fifo", "dir"):
        with pytest.raises(OutputPathError):
            atomic_write_text(places[where], "x")
        with pytest.raises(OutputPathError):  # a FIFO nobody reads is refused at once, never waited on
            append_line(places[where], "x\n")
    for link in ("to-null", "to-file"):
        with pytest.raises(OutputPathError):  # a link is never followed by an append
            append_line(places[link], "x\n")
    atomic_write_text(places["to-fifo"], "new\n")  # the link is replaced
    assert places["to-fifo"].read_text() == "new\n" and not places["to-fifo"].is_symlink()
    check_output(places["dir"], directory=True)
    with pytest.raises(OutputPathError):
        check_output(places["fifo"], directory=True)
    untouched(places)


# --------------------------------------------------------------------------------------------
# trials.jsonl


def fake_sweep(root: Path, *rows: str) -> Path:
    """A sweep directory with one trial (its metrics) and the given trials.jsonl lines."""
    sweep = root / "sweep"
    metrics_lines(sweep / "trials" / "000-lr=0.1" / "metrics.jsonl", good_row(1), good_row(2))
    (sweep / "spec.yaml").write_text("name: fake\n")
    (sweep / "trials.jsonl").write_text("".join(row + "\n" for row in rows))
    return sweep


def row(**changes) -> str:
    good = {"trial": "000-lr=0.1", "index": 0, "overrides": {"optimizer.lr": 0.1}, "status": "ok",
            "best_dev_accuracy": 0.5, "best_epoch": 2, "epochs": 2, "planned_epochs": 2, "train_accuracy": 0.5,
            "seconds": 1.0, "where": "here", "attempts": 1, "error": None}
    return json.dumps({**good, **changes})


@pytest.mark.parametrize(("line", "fragment"), [
    (row(best_dev_accuracy=float("nan")), "best_dev_accuracy = NaN is not a number from 0 to 1"),
    (row(best_dev_accuracy=float("inf")), "best_dev_accuracy = Infinity is not a number from 0 to 1"),
    (row(train_accuracy=True), "train_accuracy = true is not a number from 0 to 1"),
    (row(best_dev_accuracy="high"), "best_dev_accuracy = 'high' is not a number from 0 to 1"),
    (row(epochs=10**4000), "epochs = 1000000000000000000000000000000000000... is not a whole number"),
    (row(overrides=[1]), "overrides is not a table of settings"),
], ids=["nan", "inf", "true", "text", "digits-4000", "overrides-list"])
def test_a_lying_trials_row_is_a_note_in_the_table_never_a_percentage(tmp_path, line, fragment):
    sweep = fake_sweep(tmp_path, line)

    table = run("runs", sweep, seconds=60)
    listed = run("runs", sweep, "--json", seconds=60)

    assert table.code == 0 and listed.code == 0 and "Traceback" not in table.output + listed.output
    assert "nan%" not in table.stdout and "inf%" not in table.stdout and "100.00%" not in table.stdout
    (trial,) = json.loads(listed.stdout)
    assert trial["status"] == "failed" and f"trials.jsonl line 1: {fragment}" in trial["note"]


HOSTILE_FILES = ["fifo", "dev-zero", "nested", "huge-line"]


def make_hostile(path: Path, how: str) -> None:
    path.unlink()
    if how == "fifo":
        os.mkfifo(path)
    elif how == "dev-zero":
        path.symlink_to("/dev/zero")
    elif how == "nested":
        path.write_text("[" * 30_000 + "]" * 30_000 + "\n" + row() + "\n")  # under the line cap: parsed
    else:
        path.write_text('{"trial": "' + "x" * 10_000_000 + '"}\n' + row() + "\n")


@pytest.mark.parametrize("how", HOSTILE_FILES)
def test_runs_reads_a_trials_file_made_to_hang_or_flood_within_bounds(tmp_path, how):
    sweep = fake_sweep(tmp_path, row())
    make_hostile(sweep / "trials.jsonl", how)

    listed = run("runs", sweep, "--json", seconds=60)

    assert listed.code == 0 and not listed.killed and "Traceback" not in listed.output, listed.output[-2000:]
    assert [r["name"] for r in json.loads(listed.stdout)] == [str(sweep / "trials" / "000-lr=0.1")]
    assert listed.peak_mib < 1024


@pytest.mark.parametrize("how", HOSTILE_FILES)
def test_a_sweep_over_a_trials_file_made_to_hang_or_flood_is_one_line_or_runs(mnist_data_dir, tmp_path, how):
    sweep, args = tmp_path / "s", (*TINY, "--data-dir", mnist_data_dir, "-q")
    assert run("sweep", *args, "--out", sweep).code == 0
    path = sweep / "trials.jsonl"
    make_hostile(path, how)

    again = run("sweep", *args, "--out", sweep, seconds=60)

    assert not again.killed and again.peak_mib < 1024, again.output[-2000:]
    if how in ("fifo", "dev-zero"):
        kind = "a FIFO" if how == "fifo" else "a symbolic link"
        assert again.code == 2 and f"{path} is {kind}, not a file of this sweep; remove it" in again.error_line()
        assert stat.S_ISFIFO(os.lstat(path).st_mode) == (how == "fifo") and path.is_symlink() == (how != "fifo")
    else:  # the bad lines are not rows: the trial is settled by its own row
        assert again.code == 0 and "Traceback" not in again.output, again.output[-2000:]


def test_eval_into_a_run_whose_eval_json_is_a_fifo_is_refused_before_evaluating(tmp_path):
    checkpoint = good_checkpoint(tmp_path / "run" / "best.npz")
    metrics_lines(tmp_path / "run" / "metrics.jsonl", good_row(1))
    os.mkfifo(tmp_path / "run" / "eval.json")

    outcome = run("eval", checkpoint, "--data-dir", tmp_path / "no-data", seconds=30)  # no data: not reached

    line = outcome.error_line()
    assert outcome.code == 2 and f"{tmp_path / 'run' / 'eval.json'} is a FIFO, not a regular file" in line
    assert stat.S_ISFIFO(os.lstat(tmp_path / "run" / "eval.json").st_mode)


@pytest.mark.parametrize("what", ["fifo", "link-to-dev-null"])
def test_a_cache_array_that_is_a_fifo_or_a_link_is_rebuilt_its_target_untouched(mnist_data_dir, tmp_path, what):
    import shutil

    cache = tmp_path / "data" / "mnist"
    cache.mkdir(parents=True)
    for gz in (mnist_data_dir / "mnist").glob("*.gz"):
        shutil.copy(gz, cache / gz.name)
    array = cache / "train-images.npy"
    os.mkfifo(array) if what == "fifo" else array.symlink_to("/dev/null")

    outcome = run("download-data", "--data-dir", tmp_path / "data", "-q", seconds=60)

    assert outcome.code == 0 and "Traceback" not in outcome.output, outcome.output
    assert stat.S_ISREG(os.lstat(array).st_mode) and array.stat().st_size > 47_000_000
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize(("where", "fragment"), [
    ("fifo", "fifo is a FIFO, not a regular file"), ("to-null", None),
    ("file/x.png", "file is a file, not a directory"),
])
def test_augment_preview_out_where_no_file_can_go_is_refused_before_the_data(places, tmp_path, where, fragment):
    outcome = run("augment-preview", "--out", tmp_path / where, "--data-dir", tmp_path / "no-data",
                  "--mirror", (tmp_path / "no-mirror").as_uri() + "/", seconds=30)

    if fragment is None:  # a link: replaced by the picture, once there is data (here there is none)
        assert outcome.code != 0 and places["to-null"].is_symlink()
    else:
        assert outcome.code == 2 and fragment in outcome.error_line()
    untouched(places)


def test_a_file_named_sweeps_is_one_line_before_work_and_a_file_beside_the_new_directory_is_no_matter(tmp_path):
    (tmp_path / "sweeps").write_text("mine\n")
    refused = run("sweep", *TINY, "--set", "optimizer.lr=0.1,0.2", "--dry-run", cwd=tmp_path, seconds=30)
    assert refused.code == 2 and "sweeps is a file, not a directory" in refused.error_line()

    (tmp_path / "sweeps").unlink()
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "default").write_text("mine\n")  # the sweep's name, without its time
    planned = run("sweep", *TINY, "--set", "optimizer.lr=0.1,0.2", "--dry-run", cwd=tmp_path, seconds=30)
    assert planned.code == 0 and "2 trials, all valid; sweep directory sweeps/default-" in planned.stdout


ALIAS_BOMB = "run: {dir: null}\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))
HOLDS = """
import sys
from pathlib import Path
from mlp_cli.config_file import load_config
from mlp_cli.sweeps.records import holds_trial
print(holds_trial(Path(sys.argv[1]), load_config(None).to_dict(), ("config.yaml",)))
"""


def test_a_trial_config_that_is_an_alias_bomb_is_not_its_config_and_costs_little(tmp_path: Path) -> None:
    """A trial's stored config.yaml is read by the records' one YAML rule (no aliases): 400 bytes
    that expand to 9^10 entries are a config that is not the trial's, never gigabytes of memory."""
    from limits import python_command

    trial = tmp_path / "000-lr=0.1"
    trial.mkdir()
    (trial / "config.yaml").write_text(ALIAS_BOMB, encoding="utf-8")
    outcome = run_limited(python_command(HOLDS, trial), memory=1 * GiB, seconds=60)
    assert outcome.code == 0 and outcome.stdout.strip() == "False", outcome.output[-2000:]
    assert outcome.peak_mib < 300, outcome.peak_mib


class Remote:
    """An executor that shares no filesystem with the sweep (as Dask's): it keeps each task it is
    given and runs none (each future: stopped before it started)."""

    shares_files, workers, description = False, 1, "nowhere"

    def __init__(self) -> None:
        self.tasks: list = []

    def placement(self, resume_files: dict[str, bytes]):
        from mlp_cli.sweeps.runner import DaskPlacement

        return DaskPlacement("stop", "topic", resume_files)

    def submit(self, fn, task):
        from concurrent.futures import Future

        from mlp_cli.sweeps.runner import TrialOutcome

        self.tasks.append(task)
        future: Future = Future()
        future.set_result(TrialOutcome(task.name, None))
        return future

    def as_completed(self, futures):
        return iter(list(futures))

    def attempts(self, trial: str) -> list[str]:
        return []

    def lost(self, future) -> None:
        return None

    def request_stop(self, futures) -> None:
        pass

    def kill(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("name", "prune"), [("best.npz", False), ("last.npz", False), ("metrics.jsonl", False),
                                             ("config.yaml", False), ("best.npz", True)])
def test_a_trial_file_too_large_to_be_the_trial_s_is_refused_unread_not_shipped(tmp_path: Path, name: str,
                                                                                prune: bool) -> None:
    """An interrupted trial's files go to a remote worker as bytes: each is refused by its size
    (a sparse file one byte past what the trial's network can write), the trial recorded as failed
    with one line, and the other trials still sent."""
    from mlp_cli.sweeps.records import read_trials
    from mlp_cli.sweeps.spec import spec_from_sets
    from mlp_cli.sweeps.sweep import SweepRun, plan_sweep, shipped_limits

    sets = ["model.hidden=8", "data.limit=500", "data.dev_size=100", "train.epochs=3", "optimizer.lr=0.1,0.2"]
    spec = spec_from_sets("default", sets, prune="halving" if prune else None)
    plan = plan_sweep(spec, tmp_path / "sweep")
    trial = plan.trials[0]
    folder = Path(trial.config.run.dir or "")
    folder.mkdir(parents=True)
    (folder / "last.npz").write_bytes(b"an interrupted trial's checkpoint")
    with open(folder / name, "ab") as handle:  # sparse: no disk and, unread, no memory spent
        handle.truncate(shipped_limits(trial.config)[name] + 1)
    executor = Remote()
    SweepRun(plan, executor).run()
    assert [task.name for task in executor.tasks] == [plan.trials[1].name]
    (row,) = read_trials(tmp_path / "sweep")
    assert row["trial"] == trial.name and row["status"] == "failed", row
    assert f"trial file {folder / name} is larger than" in row["error"], row["error"]
    assert row["error"].endswith(f"more than trial {trial.name} (model.hidden = 8) can have written; remove it "
                                 "and run the same command again")


def test_the_checkpoint_bound_holds_a_float64_adam_checkpoint(tmp_path: Path) -> None:
    """The largest checkpoint a config can write (float64, Adam's two state arrays) is within it."""
    import numpy as np

    from mlp_cli.config import build_config
    from mlp_cli.config_file import load_config
    from mlp_cli.nn.network import init_params
    from mlp_cli.nn.optimizers import make_optimizer
    from mlp_cli.sweeps.sweep import shipped_limits
    from mlp_cli.training.checkpoint import save_checkpoint

    settings = load_config(None).to_dict()
    settings["model"].update(hidden=8, dtype="float64")
    settings["optimizer"].update(name="adam")
    config = build_config(settings)
    params = init_params(8, np.random.default_rng(0), dtype="float64")
    state = make_optimizer(config.optimizer, params.as_dict()).state_dict()
    save_checkpoint(tmp_path / "last.npz", params, state, {"config": config.to_dict()})
    shaped = [*params.as_dict().values(), *(a for a in state.values() if a.ndim)]  # Adam's step count: overhead
    arrays = sum(a.nbytes for a in shaped)
    limit = shipped_limits(config)["last.npz"]
    assert limit >= 3 * arrays and limit >= (tmp_path / "last.npz").stat().st_size  # three such, as Adam has


@pytest.mark.parametrize(("how", "fragment"), [
    ("fifo", "spec.yaml is not a regular file; choose another --out (or remove it)"),
    ("huge", "spec.yaml is larger than 16 MiB; not a record this tool wrote; choose another --out"),
])
def test_a_spec_file_made_to_hang_or_flood_is_named_as_such(tmp_path: Path, how: str, fragment: str) -> None:
    """--out with a spec.yaml that is a FIFO or a 2 GB (sparse) file: one line that names the file's
    problem, not "holds something else than this sweep"; the file is left as it was."""
    out = tmp_path / "sweep"
    out.mkdir()
    if how == "fifo":
        os.mkfifo(out / "spec.yaml")
    else:
        with open(out / "spec.yaml", "wb") as handle:
            handle.truncate(2 << 30)
    outcome = run("sweep", *TINY, "--out", out, seconds=60)
    line = outcome.error_line()
    assert outcome.code == 2 and f"{out}/{fragment}" in line, outcome.output[-2000:]
    assert stat.S_ISFIFO(os.lstat(out / "spec.yaml").st_mode) if how == "fifo" else \
        (out / "spec.yaml").stat().st_size == 2 << 30
    assert sorted(p.name for p in out.iterdir()) == ["spec.yaml"]
