"""Each family's names come from its registry alone: datasets, optimisers, schedules, executors,
export formats.

A member added to a registry reaches the command line (choices, help text, shell completion) and
the config's checks with no other edit; each registry's ``implementation`` names a class or
builder that its module really maps (no ``globals()`` lookups a rename could break unseen).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlp_cli.nn import optimizers, schedules
from mlp_cli.nn.registry import OPTIMIZERS, SCHEDULES
from mlp_cli.sweeps import executors
from mlp_cli.sweeps.registry import EXECUTORS, PRUNERS, SEARCHES
from mlp_cli.training.loggers.registry import LOGGERS

# `mlp` with one more member in every registry, added before the CLI is imported.
WITH_NEW_MEMBERS = """
import dataclasses, sys
from mlp_cli.data.registry import DATASETS
from mlp_cli.nn.registry import OPTIMIZERS, SCHEDULES
from mlp_cli.sweeps.registry import EXECUTORS, PRUNERS
from mlp_cli.reports.export.registry import EXPORT_FORMATS
EXPORT_FORMATS["tflite"] = EXPORT_FORMATS["onnx"]
DATASETS["kmnist"] = DATASETS["mnist"]._replace(name="kmnist", mirror_env="MLP_KMNIST_MIRROR",
                                         default_mirrors=())
OPTIMIZERS["lion"] = OPTIMIZERS["sgd"]
SCHEDULES["linear"] = SCHEDULES["constant"]
EXECUTORS["slurm"] = EXECUTORS["dask"]
PRUNERS["hyperband"] = PRUNERS["halving"]
from mlp_cli.training.loggers.registry import LOGGERS
LOGGERS["wandb"] = LOGGERS["tensorboard"]
from mlp_cli.cli import main
sys.argv[0] = "mlp"
main()
"""


def mlp_with_new_members(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITH_NEW_MEMBERS, *args], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **env}, timeout=60)


def completions(tmp_path: Path, words: str) -> list[str]:
    done = mlp_with_new_members(tmp_path, _MLP_COMPLETE="complete_bash", COMP_WORDS=words,
                                COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize(("args", "shown"), [
    (["download-data", "--help"], ["<mnist|fashion-mnist|kmnist>", "$MLP_KMNIST_MIRROR"]),
    (["train", "--help"], ["adam, adamw or lion", "mnist, fashion-mnist or kmnist", "tensorboard, mlflow or wandb"]),
    (["sweep", "--help"], ["slurm (a Dask cluster)", "hyperband (successive halving", "tensorboard, mlflow or wandb"]),
    (["export", "--help"], ["onnx, safetensors or tflite"]),
    (["log", "--help"], ["tensorboard, mlflow or wandb"]),
])
def test_a_new_registry_member_reaches_the_help(tmp_path: Path, args: list[str], shown: list[str]) -> None:
    done = mlp_with_new_members(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # the help wraps its lines
    for name in shown:
        assert name in text


@pytest.mark.parametrize(("words", "offered"), [
    ("mlp download-data --dataset ", ["mnist", "fashion-mnist", "kmnist"]),
    ("mlp train --dataset k", ["kmnist"]),
    ("mlp train --optimizer ", [*OPTIMIZERS, "lion"]),
    ("mlp sweep --executor ", [*EXECUTORS, "slurm"]),
    ("mlp sweep --prune ", [*PRUNERS, "hyperband"]),
    ("mlp sweep --search ", [*SEARCHES]),
    ("mlp export run --format ", ["onnx", "safetensors", "tflite"]),
    ("mlp train --log ", [*LOGGERS, "wandb"]),
])
def test_a_new_registry_member_is_offered_by_shell_completion(tmp_path: Path, words: str, offered: list[str]) -> None:
    assert completions(tmp_path, words) == offered


def test_a_new_registry_member_is_a_valid_choice(tmp_path: Path) -> None:
    """The command line's checks and the config's read the same registries."""
    fetch = mlp_with_new_members(tmp_path, "download-data", "--dataset", "kmnist", "--data-dir", str(tmp_path),
                                 "--mirror", (tmp_path / "none").as_uri() + "/", "--json")
    assert fetch.returncode == 1 and "set MLP_KMNIST_MIRROR" in fetch.stderr, fetch.stderr  # accepted; no files
    plan = mlp_with_new_members(tmp_path, "sweep", "--config", "default", "--set", "schedule.name=linear,constant",
                                "--set", "optimizer.name=lion", "--set", "data.dataset=kmnist", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    slurm = mlp_with_new_members(tmp_path, "sweep", "--config", "default", "--executor", "slurm", "--dry-run")
    assert slurm.returncode == 0, slurm.stderr


def test_each_registry_entry_names_an_implementation_its_module_maps() -> None:
    assert {spec.implementation for spec in OPTIMIZERS.values()} == set(optimizers.IMPLEMENTATIONS)
    assert {spec.implementation for spec in SCHEDULES.values()} == set(schedules.BUILDERS)
    assert {spec.implementation for spec in EXECUTORS.values()} == set(executors.IMPLEMENTATIONS)
    for name, spec in EXECUTORS.items():
        assert executors.IMPLEMENTATIONS[spec.implementation].shares_files == spec.shares_files, name  # type: ignore[attr-defined]


@pytest.mark.parametrize(("words", "offered"), [
    ("mlp train --config cs", ["cs229", "cs229-l2"]),
    ("mlp sweep -c best-", ["best-30", "best-60"]),
    ("mlp info --config def", ["default"]),
    ("mlp sweep ti", ["tiny"]),
    ("mlp train --set optimizer.l", ["optimizer.lr="]),
    ("mlp sweep --set model.", ["model.hidden=", "model.init=", "model.dtype="]),
    ("mlp train --set optimizer.name=", [f"optimizer.name={name}" for name in [*OPTIMIZERS, "lion"]]),
])
def test_completion_offers_config_and_sweep_names_and_set_keys(tmp_path: Path, words: str, offered: list[str]) -> None:
    """Names from configs/ and configs/sweeps/, keys from the config's schema (its choices from the registries)."""
    assert completions(tmp_path, words) == offered


def test_a_config_file_added_to_configs_is_offered(tmp_path: Path) -> None:
    (tmp_path / "configs" / "sweeps").mkdir(parents=True)
    (tmp_path / "configs" / "csmine.yaml").write_text("model: {hidden: 8}\n")
    (tmp_path / "configs" / "sweeps" / "tinier.yaml").write_text("config: default\n")
    assert completions(tmp_path, "mlp train -c cs") == ["cs229", "cs229-l2", "csmine"]
    assert completions(tmp_path, "mlp sweep tin") == ["tinier", "tiny"]
