"""`mlp sweep --search tpe`: trials proposed by Optuna's TPE from the results so far, the study
rebuilt from trials.jsonl (so a rerun continues it), the same seed giving the same proposals."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from helpers import runner

from mlp_cli.cli import app
from mlp_cli.errors import ConfigError, UsageError
from mlp_cli.sweeps.records import read_trials
from mlp_cli.sweeps.spec import plan_trials, read_sweep_file

TRIALS = 12  # past TPE's 10 random start-up trials: the last ones are proposed from the results


def _sweep_file(tmp_path: Path, **extra: object) -> Path:
    document = {
        "config": "default",
        "set": {"data.limit": 500, "data.dev_size": 200, "model.hidden": 8, "train.batch_size": 100,
                "train.epochs": 2, "schedule.name": "constant"},
        "random": {"optimizer.lr": {"loguniform": [0.01, 2.0]}, "optimizer.name": {"choice": ["sgd", "momentum"]}},
        "trials": TRIALS, **extra,
    }
    path = tmp_path / "tpe.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _sweep(path: Path, data_dir: Path, out: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["sweep", str(path), "--search", "tpe", "--jobs", "1", "--data-dir", str(data_dir),
                                 "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_same_seed_proposes_the_same_trials_and_a_rerun_continues_the_study(mnist_data_dir: Path,
                                                                                 tmp_path: Path) -> None:
    path = _sweep_file(tmp_path)
    first = _sweep(path, mnist_data_dir, tmp_path / "a")
    names = [row["trial"] for row in first["trials"]]
    assert len(set(names)) == TRIALS and len({json.dumps(r["overrides"]) for r in first["trials"]}) == TRIALS
    assert [row["trial"] for row in _sweep(path, mnist_data_dir, tmp_path / "b")["trials"]] == names

    # Interrupted after 11 trials: the same command proposes the 12th from the 11 recorded.
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "a", cut)
    rows = (cut / "trials.jsonl").read_text().splitlines(keepends=True)
    (cut / "trials.jsonl").write_text("".join(rows[:TRIALS - 1]))
    shutil.rmtree(cut / "trials" / names[-1])
    again = _sweep(path, mnist_data_dir, cut)
    assert again["skipped"] == TRIALS - 1 and [row["trial"] for row in again["trials"]] == names
    assert [row["trial"] for row in read_trials(cut)] == names

    other = _sweep(_sweep_file(tmp_path, seed=1), mnist_data_dir, tmp_path / "c")
    assert [row["trial"] for row in other["trials"]] != names


def test_tpe_and_halving_combine(mnist_data_dir: Path, tmp_path: Path) -> None:
    path, out = _sweep_file(tmp_path, prune={"min_epochs": 1, "reduction": 2}), tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", str(path), "--search", "tpe", "--prune", "halving", "--jobs", "2",
                                 "--data-dir", str(mnist_data_dir), "--out", str(out), "--log", "tensorboard"])
    assert result.exit_code == 0, result.output
    assert f"running {TRIALS} on 2 local processes" in result.output  # not one: no trial is known before
    latest = {row["trial"]: row for row in read_trials(out)}
    statuses = [row["status"] for row in latest.values()]
    assert len(statuses) == TRIALS and "pruned" in statuses and set(statuses) <= {"ok", "pruned"}
    assert all(row["epochs"] == 2 for row in latest.values() if row["status"] == "ok")
    for name in latest:  # --log reaches the proposed trials too: they log as they train
        assert yaml.safe_load((out / "trials" / name / "config.yaml").read_text())["run"]["log"] == ["tensorboard"]


@pytest.mark.parametrize(("extra", "message"), [
    ({"grid": {"train.l2": [0.0, 1e-4]}}, "takes no grid"),
    ({"random": {}}, "lacks"),
    ({"random": {"model.hidden": {"int": [0, 8]}}}, "model.hidden"),
])
def test_a_model_based_sweep_is_validated_first(tmp_path: Path, extra: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_trials(read_sweep_file(_sweep_file(tmp_path, **extra), search="tpe"))


def test_without_optuna_tpe_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlp_cli.sweeps import tpe

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(UsageError, match=r"pip install -e '\.\[optuna\]'"):
        tpe._optuna()


def test_tpe_proposes_from_the_results_once_past_its_random_start(tmp_path: Path) -> None:
    """Ten recorded trials, the best with the largest rates: the 11th proposal is not the one a
    study without them makes, and stays inside the space."""
    from mlp_cli.sweeps.tpe import propose

    spec = read_sweep_file(_sweep_file(tmp_path), search="tpe")
    rates = [0.01 * 1.6**i for i in range(10)]
    rows = [{"trial": f"{i:03d}", "index": i, "status": "ok", "best_dev_accuracy": 0.5 + i / 25,
             "overrides": {"optimizer.lr": round(lr, 4), "optimizer.name": "momentum"}} for i, lr in enumerate(rates)]
    informed = propose(spec, rows, 10)
    assert informed != propose(spec, [], 10)
    assert 0.01 <= informed["optimizer.lr"] <= 2.0 and informed["optimizer.name"] in ("sgd", "momentum")


def test_a_base_config_edited_mid_search_changes_no_trial(mnist_data_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The search fingerprints its base config when it starts and proposes every trial on that
    read: an edit to the file after the first trial is recorded reaches none of the later ones."""
    from mlp_cli.sweeps import records

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"model": {"hidden": 8}}))
    path = _sweep_file(tmp_path, trials=3)
    document = yaml.safe_load(path.read_text())
    document["config"] = str(base)
    del document["set"]["model.hidden"]
    path.write_text(yaml.safe_dump(document))
    recorded = records.append_trial

    def record_then_edit(sweep: Path, row: dict) -> None:
        recorded(sweep, row)
        base.write_text(yaml.safe_dump({"model": {"hidden": 9}}))  # after the first trial, before the next

    monkeypatch.setattr(records, "append_trial", record_then_edit)
    out = tmp_path / "sweep"
    names = [row["trial"] for row in _sweep(path, mnist_data_dir, out)["trials"]]
    assert len(names) == 3 and base.read_text().strip() == "model:\n  hidden: 9"
    for name in names:
        assert yaml.safe_load((out / "trials" / name / "config.yaml").read_text())["model"]["hidden"] == 8


def test_a_recorded_proposal_outside_the_space_or_the_count_is_never_trained(mnist_data_dir: Path,
                                                                              tmp_path: Path) -> None:
    """trials.jsonl is an input: rows naming a 4th trial of a 3-trial search, a value outside an
    axis, or an index another trial holds are not trials of the search; the rerun trains none of
    them, and the trial left to run is the one TPE proposes."""
    from mlp_cli.sweeps.spec import trial_name

    path = _sweep_file(tmp_path, trials=3, random={"optimizer.lr": {"loguniform": [0.01, 2.0]},
                                                   "train.seed": {"int": [0, 9]}})
    names = [row["trial"] for row in _sweep(path, mnist_data_dir, tmp_path / "a")["trials"]]
    out = tmp_path / "cut"
    shutil.copytree(tmp_path / "a", out)
    lines = (out / "trials.jsonl").read_text().splitlines(keepends=True)
    shutil.rmtree(out / "trials" / names[2])
    forged = [(3, 0.5, 5), (2, 0.5, 4000), (2, 5.0, 5), (1, 0.5, 5)]  # past the count, off two axes, taken
    rows = []
    for index, lr, seed in forged:  # each named as the trial it claims to be
        overrides = {"optimizer.lr": lr, "train.seed": seed}
        rows.append({"trial": trial_name(index, overrides), "index": index, "overrides": overrides, "status": "failed"})
    (out / "trials.jsonl").write_text("".join(lines[:2]) + "".join(json.dumps(row) + "\n" for row in rows))
    again = _sweep(path, mnist_data_dir, out)
    assert again["skipped"] == 2 and [row["trial"] for row in again["trials"]] == names
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(names)

    gap = tmp_path / "gap"  # the middle trial unrecorded: it is the one proposed, at its own index
    shutil.copytree(tmp_path / "a", gap)
    (gap / "trials.jsonl").write_text(lines[0] + lines[2])
    shutil.rmtree(gap / "trials" / names[1])
    filled = _sweep(path, mnist_data_dir, gap)["trials"]
    assert sorted(row["index"] for row in filled) == [0, 1, 2] and names[0] in [row["trial"] for row in filled]


def test_a_model_based_search_is_bounded_like_a_grid(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", str(_sweep_file(tmp_path)), "--search", "tpe", "--trials", "2000000000",
                                 "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "has 2,000,000,000 trials; at most 10,000 are allowed" in result.stderr


@pytest.mark.parametrize("seed", [5000, 2**32 - 1])
def test_every_allowed_seed_proposes_and_small_seeds_keep_their_proposals(mnist_data_dir: Path, tmp_path: Path,
                                                                          seed: int) -> None:
    from mlp_cli.sweeps.tpe import SEED_STRIDE, propose, sampler_seed

    assert [sampler_seed(0, 3), sampler_seed(7, 2), sampler_seed(4294, 9999)] == [3, 7 * SEED_STRIDE + 2,
                                                                                  4294 * SEED_STRIDE + 9999]
    spec = read_sweep_file(_sweep_file(tmp_path, trials=2, seed=seed), search="tpe")
    assert propose(spec, [], 1) == propose(spec, [], 1) != propose(spec, [], 0)  # drawn anew, reproducibly
    result = _sweep(_sweep_file(tmp_path, trials=2), mnist_data_dir, tmp_path / "s", "--seed", str(seed))
    assert len(result["trials"]) == 2 and {row["status"] for row in result["trials"]} == {"ok"}
