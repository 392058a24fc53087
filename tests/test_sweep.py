"""`mlp sweep` on local processes, end to end on real MNIST with tiny trials: a diverging and an
impossible trial are results, a rerun skips what is settled, and the sweep's outputs (plot,
runs table, best config) read it back."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import runner

from mlp_cli.cli import app
from mlp_cli.config_file import load_config
from mlp_cli.sweeps.records import read_trials

TINY = ["--config", "default", "--set", "model.hidden=16", "--set", "data.limit=1000",
        "--set", "train.batch_size=100", "--set", "train.epochs=2"]
# lr 1e6 diverges; a dev set of 60,000 leaves no training images: known only with the data
GRID = ["--set", "optimizer.lr=0.5,1e6", "--set", "data.dev_size=500,60000"]


def sweep(data_dir: Path, out: Path, *extra: str):
    return runner.invoke(app, ["sweep", *TINY, *GRID, "--jobs", "2", "--data-dir", str(data_dir),
                               "--out", str(out), *extra])


def test_a_local_sweep_records_every_outcome_and_a_rerun_skips_the_settled(mnist_data_dir: Path,
                                                                            tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    best_file = tmp_path / "best.yaml"
    result = sweep(mnist_data_dir, out, "--json", "--save-best", str(best_file))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    status = {row["trial"]: row["status"] for row in summary["trials"]}
    assert status == {"000-lr=0.5-dev_size=500": "ok", "001-lr=0.5-dev_size=60000": "failed",
                      "002-lr=1e+06-dev_size=500": "diverged", "003-lr=1e+06-dev_size=60000": "failed"}
    rows = {row["trial"]: row for row in read_trials(out)}
    good = rows["000-lr=0.5-dev_size=500"]
    assert good["epochs"] == 2 and 0.5 < good["best_dev_accuracy"] <= 1 and good["error"] is None
    assert "diverged" in rows["002-lr=1e+06-dev_size=500"]["error"]
    assert "leaves no training examples" in rows["001-lr=0.5-dev_size=60000"]["error"]
    assert summary["best"]["trial"] == "000-lr=0.5-dev_size=500"
    assert {p.name for p in (out / "trials" / good["trial"]).iterdir()} >= {
        "config.yaml", "metrics.jsonl", "last.npz", "best.npz"}
    saved = load_config(best_file)
    assert saved.model.hidden == 16 and saved.optimizer.lr == 0.5 and saved.run.dir is None

    last = out / "trials" / good["trial"] / "last.npz"
    before = last.stat().st_mtime_ns
    again = sweep(mnist_data_dir, out, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["skipped"] == 2  # ok and diverged are settled; failed ones run again
    assert last.stat().st_mtime_ns == before
    counts = [row["trial"] for row in read_trials(out)]
    assert counts.count(good["trial"]) == 1 and counts.count("001-lr=0.5-dev_size=60000") == 2
    assert len(counts) == 6  # history only grows

    plotted = runner.invoke(app, ["plot", str(out), "--out", str(tmp_path / "sweep.png")])
    assert plotted.exit_code == 0, plotted.output
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert "skipped trial 002-lr=1e+06-dev_size=500" in plotted.stderr and "diverged" in plotted.stderr
    assert "000-lr=0.5-dev_size=500" in plotted.stdout

    table = runner.invoke(app, ["runs", str(out), "--json", "--sort", "dev"])
    assert table.exit_code == 0, table.output
    runs = json.loads(table.stdout)
    assert [r["status"] for r in runs][:1] == ["finished"]
    assert sorted(r["status"] for r in runs) == ["diverged", "failed", "failed", "finished"]
    assert runs[0]["differing"] == {"lr": 0.5}  # the failed trials never wrote a config to differ by


def test_plain_progress_then_the_table_and_a_sweep_where_nothing_works_exits_1(mnist_data_dir: Path,
                                                                               tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", *TINY, "--set", "optimizer.lr=1e6,1e7", "--jobs", "1",
                                 "--data-dir", str(mnist_data_dir), "--out", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "[1/2]" in result.stderr and "ETA" in result.stderr and "diverged" in result.stderr
    assert "(sorted by dev accuracy)" in " ".join(result.stdout.split())
    assert "no trial finished successfully" in result.stderr
    other = runner.invoke(app, ["sweep", *TINY, "--set", "optimizer.lr=0.1,0.2", "--out", str(tmp_path / "s")])
    assert other.exit_code == 2 and "holds something else than this sweep" in other.stderr


def openblas_threads(_: object = None) -> int:
    """The thread count OpenBLAS (numpy's, loaded in this process) actually uses."""
    import ctypes

    import numpy  # noqa: F401  (loads OpenBLAS)

    with open("/proc/self/maps") as maps:
        library = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})[0]
    lib = ctypes.CDLL(library)
    for symbol in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
        if hasattr(lib, symbol):
            return int(getattr(lib, symbol)())
    raise AssertionError(f"no thread-count function in {library}")


def test_trials_side_by_side_get_their_share_of_blas_threads(monkeypatch) -> None:
    from mlp_cli.sweeps.executors import LocalExecutor, default_jobs

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # what the workers would inherit
    alone = min(3, default_jobs())  # OpenBLAS uses at most the cores
    for jobs, expected in ((2, max(1, default_jobs() // 2)), (1, alone)):
        pool = LocalExecutor(jobs)
        try:
            assert pool.submit(openblas_threads, None).result(timeout=60) == expected  # type: ignore[arg-type]
        finally:
            pool.close()
