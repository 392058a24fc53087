"""Hostile configs and settings: alias bombs, files that never end, values YAML cannot convert, a
run bigger than the machine. Each runs ``mlp train`` in a child process under memory and time
limits; each must be one line (exit 2 for the config, 1 for the machine) before any work: the
test's cache stays empty."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hostile_inputs import ALIAS_BOMB
from limits import GiB, MiB, mlp_command, run_limited


def cache_is_empty() -> bool:
    return not any(Path(os.environ["MLP_DATA_DIR"]).iterdir())


def train(*args, memory: int = 1 * GiB, cwd: Path | None = None):
    return run_limited(mlp_command("train", "-q", *args), memory=memory, seconds=60, cwd=cwd)


def refused(outcome, code: int, fragment: str) -> str:
    line = outcome.error_line()
    assert outcome.code == code and fragment in line, line
    assert outcome.seconds < 20 and outcome.peak_mib < 400, (outcome.seconds, outcome.peak_mib)
    assert cache_is_empty()
    return line


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    assert bomb.stat().st_size < 1024  # 9**9 strings once expanded

    line = refused(train("--config", bomb), 2, "aliases (*name) are not allowed in a config")
    assert f"config {bomb} line 4, column 9" in line  # the first alias, *a


@pytest.mark.parametrize(("text", "where"), [
    ("model:\n  hidden: 8\n  hidden: 9\n", "line 3, column 3: YAML syntax error: the key 'hidden' is given twice"),
    ("model:\n  hidden: 8\nmodel:\n  init: xavier\n", "line 3, column 1: YAML syntax error: the key 'model' is given"),
], ids=["key", "section"])
def test_a_key_given_twice_is_refused_not_silently_the_last(tmp_path, text, where):
    """PyYAML keeps the last of two equal keys: the first would be a setting that does nothing."""
    config = tmp_path / "twice.yaml"
    config.write_text(text)

    line = refused(train("--config", config), 2, where)
    assert f"config {config}" in line


def test_an_alias_in_a_set_value_is_refused(tmp_path):
    refused(train("--set", "model.hidden=[&a [1, 1], *a, *a]"), 2, "--set model.hidden")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("model.hidden=!!int x", "--set model.hidden: a YAML value cannot be converted (invalid literal"),
        ("model.hidden=!!float y", "--set model.hidden: a YAML value cannot be converted"),
        ("train.seed=!!timestamp 2024-02-30", "--set train.seed: a YAML value cannot be converted"),
    ],
)
def test_a_value_yaml_cannot_convert_is_one_config_line(value, fragment):
    refused(train("--set", value), 2, fragment)


def test_an_impossible_date_is_text_not_a_traceback():
    # run.name = "2024-02-30" is accepted as a name; train.epochs = 0 then stops the run before work
    refused(train("--set", "run.name=2024-02-30", "--set", "train.epochs=0"), 2, "train.epochs = 0")


def test_a_config_larger_than_any_real_one_is_refused_unread(tmp_path):
    huge = tmp_path / "huge.yaml"
    with open(huge, "w") as handle:
        handle.write("model:\n  hidden: 3\n" + "# padding\n" * (10 * MiB // 10))

    refused(train("--config", huge), 2, "is larger than 64 KiB")


def test_a_config_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer for ever

    refused(train("--config", fifo), 2, f"config {fifo} is not a regular file")


def test_an_error_message_shows_only_a_short_prefix_of_a_huge_value(tmp_path):
    config = tmp_path / "long.yaml"
    config.write_text("model:\n  hidden: " + "[" + ", ".join(["123456789"] * 5000) + "]\n")

    line = refused(train("--config", config), 2, "model.hidden = [123456789, ")
    assert len(line) < 300


def test_a_run_bigger_than_the_memory_is_refused_before_work_with_both_numbers():
    from mlp_cli.config_file import load_config
    from mlp_cli.reports.info import info_for_config

    needed = info_for_config(load_config(None, {"model.hidden": 100000, "train.batch_size": 50000})).memory_bytes
    line = refused(train("--hidden", "100000", "--batch", "50000"), 1,
                   f"this run needs {needed / 2**30:.1f} GiB of memory (see mlp info)")
    assert re.search(r"but [\d.]+ [GM]iB is available", line)


def test_the_memory_check_counts_an_address_space_limit():
    # about 1.7 GiB needed; the machine has more, the 1 GiB limit on this process does not
    line = refused(train("--hidden", "20000", "--batch", "5000"), 1, "this run needs 1.")
    available = float(re.search(r"but ([\d.]+) ([GM])iB is available", line).group(1))
    assert available < 1024
