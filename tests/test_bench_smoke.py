"""The benchmark suite's smoke mode runs end to end and writes the JSON the full mode writes.

Its numbers mean nothing (a few steps on a busy CI machine); what is checked is that every part
ran and reported the fields that benchmarks/README.md and `make bench` rely on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TEST_MNIST_ENV, find_mnist_copy

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_COPY = find_mnist_copy()


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
    if MNIST_COPY is not None:
        env[TEST_MNIST_ENV] = str(MNIST_COPY)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Targets:" in done.stdout and str(out) in done.stdout
    return json.loads(out.read_text())


def test_smoke_records_the_machine(smoke_results: dict) -> None:
    assert smoke_results["mode"] == "smoke"
    info = smoke_results["machine"]
    assert info["cores"] >= 1 and info["cpu"] and info["numpy"]
    assert isinstance(info["blas"], list) and info["blas"]
    assert info["kernels"]["optimizer_updates"] in ("numpy", "numba")
    assert info["kernels"]["sigmoid"] in ("tanh", "exp") and info["kernels"]["elementwise_threads"] >= 1


def test_smoke_times_the_recipes_steps(smoke_results: dict) -> None:
    part = smoke_results["recipes"]
    assert part["threads"]["blas"] >= 1 and part["threads"]["elementwise"] >= 1
    assert part["kernels"]["optimizer_updates"] in ("numpy", "numba")
    assert [r["recipe"] for r in part["recipes"]] == ["best", "best-30"]
    for r in part["recipes"]:
        assert r["batch"] == 50 and r["optimizer"] == "nesterov" and r["tool_vs_floor"] > 0
        tool, floor = r["ms"]["tool"]["samples_ms"], r["ms"]["floor"]["samples_ms"]  # one round in smoke mode
        assert r["paired"]["tool_vs_floor"] == tool[0] / floor[0]
        for name in ("tool", "floor") + (("torch",) if part["torch"] else ()):
            assert r["ms"][name]["median_ms"] > 0, name


def test_smoke_times_every_epoch_contender(smoke_results: dict) -> None:
    epochs = smoke_results["epochs"]
    assert epochs["threads"] >= 1 and epochs["cases"]
    for case in epochs["cases"]:
        assert {"case", "hidden", "batch", "dtype", "init", "lr", "steps", "seconds", "tool_vs_floor"} <= set(case)
        for name in ("tool", "floor") + (("torch", "torch_ftz", "torch_floor") if epochs["torch"] else ()):
            assert case["seconds"][name]["median"] > 0, name
        if epochs["torch"]:
            assert case["torch_best"] in ("torch", "torch_ftz") and case["tool_vs_torch"] > 0
        fractions = case["subnormal_fraction"]
        assert {"A1", "dZ2", "dZ1", "W1", "W2"} <= set(fractions)
        assert fractions["A1"] == 0.0  # the tanh form of the sigmoid saturates to exact 0 and 1


def test_smoke_times_the_processes(smoke_results: dict) -> None:
    assert 0 < smoke_results["startup"]["median"] < 30
    if MNIST_COPY is None:
        pytest.skip("no MNIST copy found (see tests/conftest.py): the dataset parts are skipped")
    load = smoke_results["dataset_load"]
    assert load["train"]["shape"] == [60000, 28, 28] and load["test"]["shape"] == [10000, 28, 28]
    assert load["train"]["median"] > 0 and load["train_fresh_process"]["median"] > 0
    assert smoke_results["end_to_end"]["tool"] > 0
    assert smoke_results["eval"]["median"] > 0 and smoke_results["eval"]["output"]["examples"] == 10000
    assert smoke_results["memory"]["max_rss_mb"] > 10
    assert "skipped" in smoke_results["time_to_98"]


def test_smoke_lists_every_target_unjudged(smoke_results: dict) -> None:
    targets = smoke_results["targets"]
    assert len(targets) == 13
    for target in targets:
        assert set(target) == {"target", "limit", "value", "met"}
        assert target["met"] is None  # smoke numbers are never judged against the targets
    measured = {t["target"]: t["value"] for t in targets}
    recipes = {r["recipe"]: r["tool_vs_floor"] for r in smoke_results["recipes"]["recipes"]}
    assert measured["recipe step best.yaml: tool / floor"] == recipes["best"]
    assert measured["recipe step best-30.yaml: tool / floor"] == recipes["best-30"]
