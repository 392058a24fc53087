"""A run directory is a record: resume continues, branches or overwrites only as asked, one
process writes it at a time, and signals save it first. Real subprocesses, real signals, and run
directories written by release 0.1.0 (tests/fixtures)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlp_cli.nn.network import PARAM_NAMES
from mlp_cli.training.checkpoint import load_checkpoint
from mlp_cli.training.metrics import read_metrics

FIXTURES = Path(__file__).parent / "fixtures"
TIMINGS = ("seconds", "examples_per_second", "elapsed")


def mlp(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mlp_cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def start(*args: object) -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mlp_cli", *map(str, args)], env=env,
                            stderr=subprocess.PIPE, text=True)


def error_line(done: subprocess.CompletedProcess, code: int) -> str:
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if not p.name.startswith(".")}


def same_params(a: Path, b: Path) -> bool:
    pa, pb = load_checkpoint(a).params, load_checkpoint(b).params
    return all(np.array_equal(pa[k], pb[k]) for k in PARAM_NAMES)


def without_timings(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


@pytest.fixture
def v01(tmp_path: Path) -> Path:
    """A copy of a run written by release 0.1.0: 4 epochs, epoch-002.npz, last.npz, best.npz."""
    return Path(shutil.copytree(FIXTURES / "v01-run", tmp_path / "v01-run"))


def test_an_earlier_checkpoint_is_never_resumed_over_the_later_history(v01: Path, mnist_data_dir: Path) -> None:
    before = snapshot(v01)
    for earlier in ("epoch-002.npz", "best.npz"):
        if load_checkpoint(v01 / earlier).epoch == 4:
            continue  # best.npz may be the last epoch: then it is the latest state
        line = error_line(mlp("train", "--resume", v01 / earlier, "--data-dir", mnist_data_dir, "-q"), 2)
        assert f"{v01 / earlier} (epoch 2, step 60) is not the latest state" in line
        assert "--out NEW" in line and "--overwrite" in line
        assert line.endswith(f"to continue the run itself, resume {v01 / 'last.npz'}")  # not only the branch
    assert snapshot(v01) == before


def test_resume_of_a_run_directory_names_its_last_npz(v01: Path, tmp_path: Path) -> None:
    line = error_line(mlp("train", "--resume", v01, "-q"), 2)
    assert line.endswith(f"--resume {v01} is a run directory; resume its latest state: --resume {v01 / 'last.npz'}")
    (tmp_path / "new").mkdir()
    fresh = error_line(mlp("train", "--resume", tmp_path / "new", "-q"), 2)
    assert "it has none yet" in fresh and "best.npz" not in fresh


def test_a_branch_of_an_old_release_run_continues_it_bit_identically(
    v01: Path, mnist_data_dir: Path, tmp_path: Path
) -> None:
    before, branch, stepwise = snapshot(v01), tmp_path / "branch", tmp_path / "stepwise"

    done = mlp("train", "--resume", v01 / "epoch-002.npz", "--out", branch, "--data-dir", mnist_data_dir, "-q")

    assert done.returncode == 0, done.stderr
    assert snapshot(v01) == before  # the original is untouched
    parent = json.loads((branch / "parent.json").read_text())
    digest = hashlib.sha256((v01 / "epoch-002.npz").read_bytes()).hexdigest()
    assert parent == {"path": str(v01 / "epoch-002.npz"), "epoch": 2, "step": 60, "sha256": digest}
    assert yaml.safe_load((branch / "config.yaml").read_text())["run"]["dir"] == str(branch)
    assert load_checkpoint(branch / "last.npz").config["run"]["dir"] == str(branch)
    # bit-identical: the same branch taken one epoch at a time ends with the very same numbers
    for epochs in ("3", "4"):
        source = v01 / "epoch-002.npz" if epochs == "3" else stepwise / "last.npz"
        args = ["--out", stepwise] if epochs == "3" else []
        done = mlp("train", "--resume", source, *args, "--epochs", epochs, "--data-dir", mnist_data_dir, "-q")
        assert done.returncode == 0, done.stderr
    assert same_params(branch / "last.npz", stepwise / "last.npz")
    assert without_timings(read_metrics(branch)) == without_timings(read_metrics(stepwise))[:2] + [
        {k: v for k, v in row.items() if k != "changes"} for row in without_timings(read_metrics(stepwise))[2:]]
    # and the release's own epochs 3 and 4: exactly with its BLAS kernel, to rounding with another
    ours, theirs = load_checkpoint(branch / "last.npz").params, load_checkpoint(v01 / "last.npz").params
    for name in PARAM_NAMES:
        np.testing.assert_allclose(ours[name], theirs[name], atol=2e-3)
    for row, old in zip(read_metrics(branch), read_metrics(v01), strict=True):
        assert abs(row["dev_accuracy"] - old["dev_accuracy"]) <= 2e-3 and row["epoch"] == old["epoch"]


def test_an_old_release_checkpoint_evaluates_as_it_recorded(v01: Path, mnist_data_dir: Path) -> None:
    done = mlp("eval", v01 / "last.npz", "--split", "dev", "--data-dir", mnist_data_dir, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accuracy"] == read_metrics(v01)[-1]["dev_accuracy"]


def test_a_copied_checkpoint_never_replaces_an_unrelated_run_beside_it(v01: Path, mnist_data_dir: Path,
                                                                        tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(v01 / "epoch-002.npz", models / "a.npz")
    shutil.copyfile(FIXTURES / "v01-plateau" / "last.npz", models / "last.npz")
    before = snapshot(models)

    line = error_line(mlp("train", "--resume", models / "a.npz", "--data-dir", mnist_data_dir, "-q"), 2)

    assert "is not the latest state" in line and snapshot(models) == before


def test_overwrite_discards_the_later_epochs_when_asked(v01: Path, mnist_data_dir: Path) -> None:
    done = mlp("train", "--resume", v01 / "epoch-002.npz", "--overwrite", "--epochs", "3",
               "--data-dir", mnist_data_dir, "-q")

    assert done.returncode == 0, done.stderr
    assert [r["epoch"] for r in read_metrics(v01)] == [1, 2, 3]
    assert load_checkpoint(v01 / "last.npz").epoch == 3 and load_checkpoint(v01 / "best.npz").epoch <= 3


def test_changed_settings_are_recorded_with_the_epoch_they_took_effect(v01: Path, mnist_data_dir: Path) -> None:
    done = mlp("train", "--resume", v01 / "last.npz", "--lr", "0.1", "--epochs", "5",
               "--data-dir", mnist_data_dir, "-q")

    assert done.returncode == 0, done.stderr
    saved = yaml.safe_load((v01 / "config.yaml").read_text())
    assert (saved["optimizer"]["lr"], saved["train"]["epochs"], saved["run"]["dir"]) == (0.1, 5, str(v01))
    change = {"epoch": 5, "step": 120, "settings": {"train.epochs": [4, 5], "optimizer.lr": [0.5, 0.1]}}
    last = load_checkpoint(v01 / "last.npz")
    assert last.meta["changes"] == [change] and last.config["run"]["dir"] == str(v01)
    rows = read_metrics(v01)
    assert rows[4]["changes"] == change["settings"] and "changes" not in rows[3]
    assert rows[4]["lr"] == 0.1 * 0.5  # the step schedule halved it after epoch 3


@pytest.mark.parametrize("setting", ["data.split_seed=1", "data.dev_size=5000", "data.limit=2000",
                                     "data.preprocess=scale", "model.init=normal", "model.dtype=float64",
                                     "train.batch_size=50", "train.seed=1", "optimizer.name=adam"])
def test_what_defines_the_run_cannot_change_on_resume(v01: Path, mnist_data_dir: Path, setting: str) -> None:
    before = snapshot(v01)
    done = mlp("train", "--resume", v01 / "last.npz", "--epochs", "5", "--set", setting, "--data-dir", mnist_data_dir)
    line = error_line(done, 1)
    key = setting.split("=")[0]
    assert f"the config has {key} = " in line and f"{key} cannot change within a run" in line
    assert snapshot(v01) == before


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


LONG = ["--hidden", "64", "--batch", "50", "--epochs", "40", "--set", "data.limit=4000",
        "--set", "data.dev_size=500", "-q"]


def test_one_writer_at_a_time_and_a_killed_writer_never_blocks(mnist_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    writer = start("train", "--out", out, "--data-dir", mnist_data_dir, *LONG)
    try:
        wait_for(out / "last.npz", writer)
        for args in (["--resume", out / "last.npz"], ["--out", out, "--overwrite"], ["--out", out]):
            began = time.monotonic()
            line = error_line(mlp("train", *args, "--data-dir", mnist_data_dir, "-q"), 2)
            assert time.monotonic() - began < 20  # at once: before any data is loaded
            assert f"run directory {out} is being written by process {writer.pid} on " in line
    finally:
        writer.kill()  # SIGKILL: the lock dies with its process
        writer.wait(timeout=30)

    epoch = load_checkpoint(out / "last.npz").epoch
    done = mlp("train", "--resume", out / "last.npz", "--epochs", epoch + 1, "--data-dir", mnist_data_dir, "-q")
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(out / "last.npz").epoch == epoch + 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_sigterm_and_sighup_save_and_exit_like_ctrl_c(mnist_data_dir: Path, tmp_path: Path, signum: int) -> None:
    out = tmp_path / "run"
    proc = start("train", "--out", out, "--data-dir", mnist_data_dir, *LONG)
    wait_for(out / "last.npz", proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 128 + signum, stderr
    line = stderr.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("interrupted ") and "--resume" in line[0]  # not an error line
    saved = load_checkpoint(out / "last.npz")
    assert 1 <= saved.epoch < 40 and not (out / ".writer").exists()
    if signum != signal.SIGTERM:
        return
    # the resumed, partial epoch reports the examples it saw, not the whole epoch's
    full = read_metrics(out)[0]
    steps, examples = full["step"], round(full["examples_per_second"] * full["seconds"])
    done_batches = saved.step - saved.epoch * steps
    done = mlp("train", "--resume", out / "last.npz", "--epochs", saved.epoch + 1, "--data-dir", mnist_data_dir, "-q")
    assert done.returncode == 0, done.stderr
    resumed = read_metrics(out)[-1]
    assert resumed["epoch"] == saved.epoch + 1 and 0 <= done_batches < steps  # 0: it stopped at an epoch end
    assert round(resumed["examples_per_second"] * resumed["seconds"]) == examples - 50 * done_batches


@pytest.mark.parametrize("gap", [0.0, 0.05, 0.05, 0.2])
def test_two_quick_signals_always_end_with_a_line_naming_the_checkpoint(
    mnist_data_dir: Path, tmp_path: Path, gap: float
) -> None:
    out = tmp_path / "run"
    proc = start("train", "--out", out, "--data-dir", mnist_data_dir, *LONG)
    wait_for(out / "last.npz", proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(gap)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip(), stderr
    assert not any(line.startswith("error: ") for line in stderr.strip().splitlines())  # stopped, not failed
    assert f"--resume {out / 'last.npz'}" in stderr
    load_checkpoint(out / "last.npz")  # whole, whichever save the second signal met


def test_overwrite_refuses_a_directory_in_a_products_place_before_removing_anything(v01: Path,
                                                                                    mnist_data_dir: Path) -> None:
    (v01 / "epoch-003.npz").mkdir()
    before = {p.name: p.read_bytes() for p in v01.iterdir() if p.is_file() and not p.name.startswith(".")}

    line = error_line(mlp("train", "--out", v01, "--overwrite", "--epochs", "1", "--data-dir", mnist_data_dir, "-q"),
                      2)

    assert f"cannot overwrite {v01}: epoch-003.npz there is a directory" in line
    assert {p.name: p.read_bytes() for p in v01.iterdir() if p.is_file() and not p.name.startswith(".")} == before


@pytest.mark.parametrize("product", ["best.npz", "metrics.jsonl"])
def test_a_resume_refuses_a_product_that_is_not_a_file_before_training(v01: Path, mnist_data_dir: Path,
                                                                      product: str) -> None:
    """best.npz a FIFO (replaced at the first better epoch), metrics.jsonl a directory: refused at
    once, by name, with nothing trained (it was an epoch's work, then a refusal)."""
    (v01 / product).unlink()
    os.mkfifo(v01 / product) if product == "best.npz" else (v01 / product).mkdir()
    before = {p.name: p.read_bytes() for p in v01.iterdir() if p.is_file() and not p.name.startswith(".")}

    line = error_line(mlp("train", "--resume", v01 / "last.npz", "--epochs", "5", "--data-dir", mnist_data_dir, "-q"),
                      2)

    kind = "a FIFO" if product == "best.npz" else "a directory"
    assert f"{v01 / product} is {kind}, not a regular file" in line, line
    assert {p.name: p.read_bytes() for p in v01.iterdir() if p.is_file() and not p.name.startswith(".")} == before
    if product == "metrics.jsonl":  # read, it is named as what it is (not as a run directory without metrics)
        from mlp_cli.errors import MlpError

        with pytest.raises(MlpError, match=f"metrics file {v01 / product}: Is a directory"):
            read_metrics(v01 / product)


def test_a_lock_file_replaced_by_a_link_is_refused_and_its_target_never_made(v01: Path, tmp_path: Path,
                                                                             mnist_data_dir: Path) -> None:
    target = tmp_path / "elsewhere"
    (v01 / ".lock").unlink(missing_ok=True)
    (v01 / ".lock").symlink_to(target)
    before = snapshot(v01)

    line = error_line(mlp("train", "--resume", v01 / "last.npz", "--epochs", "5", "--data-dir", mnist_data_dir, "-q"),
                      2)

    assert f"cannot lock run directory {v01}: its .lock is a symbolic link" in line
    assert not target.exists() and snapshot(v01) == before
