"""What every command shares: shell completion, and errors that reach scripts under --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import runner

from mlp_cli.cli import app

MLP = [sys.executable, "-c", "from mlp_cli.cli import main; main()"]


def test_completion_is_offered_and_answers_the_shell() -> None:
    help_text = runner.invoke(app, ["--help"]).stdout
    assert "--install-completion" in help_text and "--show-completion" in help_text
    env = {**os.environ, "_MLP_COMPLETE": "complete_bash", "COMP_WORDS": "mlp tr", "COMP_CWORD": "1"}
    commands = subprocess.run(MLP, env=env, capture_output=True, text=True, timeout=60)
    assert commands.stdout.split() == ["train"]
    env.update(COMP_WORDS="mlp train --hid", COMP_CWORD="2")
    options = subprocess.run(MLP, env=env, capture_output=True, text=True, timeout=60)
    assert options.stdout.split() == ["--hidden"]


def test_show_completion_prints_the_script_for_the_shell_it_runs_in() -> None:
    # typer asks the process tree which shell runs mlp: here a bash that stays mlp's parent
    # ("; exit" keeps bash from exec-ing the command), whatever shell runs the test suite
    in_bash = ["bash", "-c", '"$@"; exit $?', "bash", *MLP, "--show-completion"]
    done = subprocess.run(in_bash, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "_MLP_COMPLETE=complete_bash" in done.stdout


def test_under_json_an_error_is_also_a_json_line_on_stdout(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    for args, code in (
        (["eval", str(missing), "--json"], 2),
        (["train", "--hidden", "-5", "--json"], 2),
        (["eval", str(missing), "--json", "--split"], 2),  # a usage error of the command line itself
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == code, result.output
        assert len(result.stdout.strip().splitlines()) == 1
        error = json.loads(result.stdout)
        assert error["exit_code"] == code and error["error"] in result.stderr.replace("\n", " ")
    plain = runner.invoke(app, ["eval", str(missing)])
    assert plain.exit_code == 2 and plain.stdout == "" and "not found" in plain.stderr
    after_dashes = runner.invoke(app, ["predict", str(missing), "--", "--json"])
    assert after_dashes.stdout == ""  # "--json" as a file name is not the flag


def test_errors_name_the_flag_typed_as_well_as_the_key() -> None:
    for args, expected in (
        (["train", "--hidden", "-5"], "--hidden / model.hidden = -5"),
        (["train", "--dataset", "mnsit"], "--dataset / data.dataset = 'mnsit'"),
        (["train", "--config", "cs229", "--epochs", "0"], "--epochs / train.epochs = 0"),
    ):
        result = runner.invoke(app, args)
        line = " ".join(result.stderr.split())
        assert result.exit_code == 2 and f"error: {expected}" in line, result.output  # not "config cs229.yaml:"
    # --set wins over the flag, so the error is about what --set gave, not the flag
    both = runner.invoke(app, ["train", "--hidden", "5", "--set", "model.hidden=-5"])
    assert both.exit_code == 2 and "--hidden" not in both.stderr and "model.hidden = -5" in both.stderr


def test_train_help_gives_the_real_defaults_and_the_dataset_flag() -> None:
    text = " ".join(runner.invoke(app, ["train", "--help"]).stdout.split())
    assert "runs/<config>-<timestamp>" in text and "runs/<name>)" not in text
    assert "--dataset" in text and "fashion-mnist" in text
