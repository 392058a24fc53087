"""run.log and --log: names from the LOGGERS registry, checked before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import mlp

from mlp_cli.config_file import load_config
from mlp_cli.errors import ConfigError
from mlp_cli.training.loggers.registry import LOGGERS


@pytest.mark.parametrize(("value", "message"), [
    ("tensorboard", "run.log = 'tensorboard' (str); expected a list of tensorboard, mlflow"),
    ("[tensorbord]", "run.log = 'tensorbord' is not one of tensorboard, mlflow (did you mean 'tensorboard'?)"),
    ("[tensorboard, tensorboard]", "expected each at most once"),
])
def test_run_log_is_a_list_of_registered_names(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, sets=[f"run.log={value}"])
    assert message in str(raised.value)
    assert load_config(None, sets=["run.log=[mlflow, tensorboard]"]).run.log == ("mlflow", "tensorboard")
    assert load_config(None).to_dict()["run"]["log"] == []  # a list in config.yaml and checkpoints


def test_the_registry_names_every_choice_and_the_help() -> None:
    from mlp_cli.config import RunConfig

    choices = next(f for f in RunConfig.__dataclass_fields__.values() if f.name == "log").metadata["choices"]
    assert tuple(choices) == tuple(LOGGERS)
    for command in ("train", "sweep"):
        assert "tensorboard or mlflow (run.log)" in " ".join(mlp(command, "--help").stdout.split())


def test_an_unknown_logger_or_no_mlflow_store_stops_before_any_work(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    done = mlp("train", "--log", "tensorbord", "--out", "run")
    assert done.exit_code == 2 and "run.log = 'tensorbord' is not one of" in done.stderr
    done = mlp("train", "--log", "mlflow", "--out", "run")
    assert done.exit_code == 2, done.output
    [line] = done.stderr.strip().splitlines()
    assert "set MLFLOW_TRACKING_URI" in line
    assert list(tmp_path.iterdir()) == []  # no run directory, no mlruns/
