"""Config: the shipped files, overrides, and strict validation with useful messages."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import runner

from mlp_cli import config as config_module
from mlp_cli.cli import app
from mlp_cli.config import Config, best_epoch, check_against_data, selection_accuracy, selection_key
from mlp_cli.config_file import load_config
from mlp_cli.errors import ConfigError
from mlp_cli.reports.runs import read_run
from mlp_cli.sweeps.runner import summarize
from mlp_cli.training.checkpoint import load_checkpoint
from mlp_cli.training.metrics import read_metrics

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_default_yaml_spells_out_the_builtin_defaults() -> None:
    assert load_config(CONFIGS / "default.yaml") == Config()
    assert Config().model.hidden == 300 and Config().train.batch_size == 1000


def test_cs229_configs_are_the_course_setting() -> None:
    c = load_config(CONFIGS / "cs229.yaml")
    assert (c.model.hidden, c.model.init, c.train.batch_size, c.optimizer.lr) == (300, "normal", 1000, 5.0)
    assert (c.train.epochs, c.train.shuffle, c.data.split_seed, c.data.dev_size) == (30, False, 100, 10000)
    assert c.data.preprocess == "standardize" and c.train.l2 == 0.0
    assert load_config(CONFIGS / "cs229-l2.yaml").train.l2 == 1e-4


def test_flags_override_file_and_set_overrides_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  hidden: 50\ntrain:\n  epochs: 3\n")
    c = load_config(path, {"model.hidden": 80, "train.l2": None}, ["model.hidden=90", "optimizer.name=adam"])
    assert c.model.hidden == 90 and c.train.epochs == 3 and c.optimizer.name == "adam"
    assert c.train.l2 == 0.0  # None means "flag not given"


def test_base_then_file(tmp_path: Path) -> None:
    base = Config(). to_dict()
    base["model"]["hidden"] = 64
    c = load_config(write(tmp_path, "train:\n  epochs: 7\n"), base=base)
    assert c.model.hidden == 64 and c.train.epochs == 7


def test_yaml_round_trip() -> None:
    c = load_config(None, {"model.hidden": 17, "optimizer.eps": 1e-7})
    assert load_config(None, base=yaml.safe_load(c.to_yaml())) == c


def test_int_like_float_is_accepted_for_int_keys() -> None:
    assert load_config(None, {"train.epochs": 5.0}).train.epochs == 5


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("model:\n  hiden: 3\n", "did you mean 'model.hidden'"),
        ("modle:\n  hidden: 3\n", "did you mean 'model'"),
        ("model:\n  hidden: many\n", "model.hidden = 'many' (str); expected an integer in [1, 100000]"),
        ("model:\n  hidden: 0\n", "model.hidden = 0; expected an integer in [1, 100000]"),
        ("model:\n  hidden: 2.5\n", "expected an integer"),
        ("train:\n  batch_size: -4\n", "train.batch_size = -4"),
        ("optimizer:\n  lr: 0\n", "optimizer.lr = 0.0; expected a number > 0.0"),
        ("optimizer:\n  lr: -1\n", "optimizer.lr"),
        ("optimizer:\n  name: adma\n", "did you mean 'adam'"),
        ("schedule:\n  name: linear\n", "schedule.name = 'linear' is not one of constant, step, cosine"),
        ("optimizer:\n  momentum: 1.0\n", "optimizer.momentum = 1.0; expected a number in [0.0, 1.0)"),
        ("train:\n  shuffle: 1\n", "train.shuffle = 1 (int); expected true or false"),
        ("model:\n  hidden: null\n", "model.hidden = null"),
        ("model: 3\n", "section 'model' must be a mapping"),
        ("- a\n- b\n", "must be a mapping of sections"),
        ("model:\n  hidden: 3\n  - x\n", "line 3"),
        ("", "is empty"),
        ("train:\n  l2: .inf\n", "expected a finite number"),
    ],
)
def test_bad_files_are_refused_with_a_message_naming_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


@pytest.mark.parametrize("item", ["model.hidden", "hidden=3", "=3", "model.hidden.x=3", "nosuch.key=1"])
def test_bad_set_items(item: str) -> None:
    with pytest.raises(ConfigError):
        load_config(None, sets=[item])


def test_set_values_are_parsed_like_yaml() -> None:
    c = load_config(None, sets=["train.shuffle=false", "optimizer.lr=0.25", "run.name=exp 1", "train.l2=1e-5"])
    assert c.train.shuffle is False and c.optimizer.lr == 0.25 and c.run.name == "exp 1"
    assert c.train.l2 == 1e-5  # YAML 1.1 would read 1e-5 as a string


def test_exponent_without_dot_in_a_file_is_a_number(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "train:\n  l2: 1e-4\n")).train.l2 == 1e-4
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(write(tmp_path, "train:\n  l2: 1e-4x\n"))
    assert load_config(None, sets=["run.name=1e5"]).run.name == "1e5"  # strings stay strings


def test_consistency_checks() -> None:
    with pytest.raises(ConfigError, match="min_lr"):
        load_config(None, {"schedule.min_lr": 1.0, "optimizer.lr": 0.1})
    with pytest.raises(ConfigError, match="warmup_epochs"):
        load_config(None, {"schedule.warmup_epochs": 5, "train.epochs": 5})
    check_against_data(load_config(None, {"train.batch_size": 600}), 500)  # one smaller batch
    with pytest.raises(ConfigError, match="no training examples"):
        check_against_data(load_config(None), 0)


def test_a_limit_below_the_batch_size_trains_one_smaller_batch(mnist_data_dir: Path, tmp_path: Path) -> None:
    import json

    from helpers import mlp

    from mlp_cli.training.metrics import read_metrics

    out = tmp_path / "run"
    result = mlp("train", "--data-dir", mnist_data_dir, "--out", out, "--hidden", "8", "--batch", "1000",
                 "--epochs", "2", "--set", "data.limit=300", "--set", "data.dev_size=100", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 2
    assert [row["step"] for row in read_metrics(out)] == [1, 2]  # one batch (of 300) per epoch


def test_config_is_frozen() -> None:
    c = Config()
    with pytest.raises(AttributeError):
        c.model.hidden = 3  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Which accuracy selects the best epoch: one rule, read by every user


def test_the_best_epoch_is_chosen_by_dev_accuracy_else_train_accuracy() -> None:
    with_dev = [{"epoch": 1, "train_accuracy": 0.9, "dev_accuracy": 0.8},
                {"epoch": 2, "train_accuracy": 0.95, "dev_accuracy": 0.7}]
    no_dev = [{"epoch": 1, "train_accuracy": 0.9, "dev_accuracy": None},
              {"epoch": 2, "train_accuracy": 0.95, "dev_accuracy": None}]
    assert (selection_key(True), selection_key(False)) == ("dev_accuracy", "train_accuracy")
    assert [selection_accuracy(row) for row in with_dev + no_dev] == [0.8, 0.7, 0.9, 0.95]
    assert best_epoch(with_dev) == (with_dev[0], "dev_accuracy")
    assert best_epoch(no_dev) == (no_dev[1], "train_accuracy")
    assert best_epoch([]) == (None, "train_accuracy")


def test_training_the_summary_runs_and_sweeps_all_take_the_rule_from_the_config(
    mnist_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changed in config.selection_key, the rule changes everywhere: best.npz and the training
    loop, `mlp train`'s summary, `mlp runs` and a sweep's trial row (none keeps its own copy)."""
    monkeypatch.setattr(config_module, "selection_key", lambda has_dev_set: "train_accuracy")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(out), "--data-dir", str(mnist_data_dir), "--hidden", "16",
                                 "--batch", "100", "--epochs", "3", "--set", "data.limit=1000",
                                 "--set", "data.dev_size=500", "--json"])
    assert result.exit_code == 0, result.output
    rows = read_metrics(out)
    best = max(rows, key=lambda row: row["train_accuracy"])
    assert all(row["dev_accuracy"] not in (None, best["train_accuracy"]) for row in rows)  # dev differs
    summary = json.loads(result.stdout)
    assert (summary["best_by"], summary["best_accuracy"]) == ("train_accuracy", best["train_accuracy"])
    assert load_checkpoint(out / "best.npz").meta["accuracy"] == best["train_accuracy"]
    assert read_run(out).best_dev_accuracy == best["train_accuracy"]
    task = SimpleNamespace(name="t", index=0, overrides={}, config={"train": {"epochs": 3}}, stop_at=None)
    row = summarize(task, out, "ok", None, 1.0, "here")
    assert (row["best_by"], row["best_dev_accuracy"]) == ("train_accuracy", best["train_accuracy"])
