"""Early stopping and the reduce-on-plateau schedule: when they act, and that their state survives
a checkpoint exactly; the config keys that switch them on."""

from __future__ import annotations

import json

import pytest

from mlp_cli.config import Config, EarlyStoppingConfig, ScheduleConfig
from mlp_cli.config_file import load_config
from mlp_cli.errors import CheckpointError, ConfigError
from mlp_cli.nn.schedules import PlateauSchedule, make_schedule
from mlp_cli.training.early_stopping import EarlyStopping

# Dev accuracy after epochs 1, 2, ...: rises, stalls (with one tiny rise), rises again, stalls.
CURVE = [0.90, 0.93, 0.95, 0.95, 0.9502, 0.94, 0.95, 0.96, 0.96, 0.955, 0.958, 0.959, 0.96, 0.957]


def stop_epoch(stopper: EarlyStopping, curve: list[float]) -> int | None:
    for epoch, accuracy in enumerate(curve, start=1):
        if stopper.update(epoch, accuracy):
            return epoch
    return None


# --- EarlyStopping ---------------------------------------------------------------------------


def test_stops_after_patience_epochs_without_improvement() -> None:
    stopper = EarlyStopping(patience=3)
    assert stop_epoch(stopper, CURVE) == 11  # 0.96 at epoch 8; 9, 10 and 11 do not exceed it
    assert stopper.reference == 0.96 and stopper.stopped


def test_counts_restart_at_every_improvement() -> None:
    stopper = EarlyStopping(patience=2)
    flags = [stopper.update(e, a) for e, a in enumerate([0.5, 0.6, 0.6, 0.7, 0.65, 0.7, 0.7], start=1)]
    assert flags == [False, False, False, False, False, True, True]
    assert stopper.stopped_epoch == 6 and stopper.reference == 0.7


def test_min_delta_decides_progress() -> None:
    stopper = EarlyStopping(patience=2, min_delta=0.001)
    # 0.9502 (epoch 5) beats 0.95 by less than min_delta: no progress (best.npz still takes it).
    assert stop_epoch(stopper, CURVE[:6]) == 5
    assert stopper.reference == 0.95
    without_delta = EarlyStopping(patience=2)
    assert stop_epoch(without_delta, CURVE[:6]) is None  # there, epoch 5 was progress


def test_patience_one_stops_at_the_first_stall() -> None:
    assert stop_epoch(EarlyStopping(patience=1), [0.5, 0.6, 0.6, 0.9]) == 3


def test_from_config() -> None:
    assert EarlyStopping.from_config(EarlyStoppingConfig()) is None  # off by default
    config = EarlyStoppingConfig(enabled=True, patience=4, min_delta=0.01)
    stopper = EarlyStopping.from_config(config)
    assert stopper is not None
    assert (stopper.patience, stopper.min_delta) == (4, 0.01)


@pytest.mark.parametrize("cut", range(len(CURVE) + 1))
def test_state_round_trip_through_json_stops_at_the_same_epoch(cut: int) -> None:
    """Resume after any epoch: the same decisions as an uninterrupted run."""
    reference = EarlyStopping(patience=3, min_delta=0.0005)
    expected = [reference.update(e, a) for e, a in enumerate(CURVE, start=1)]
    first = EarlyStopping(patience=3, min_delta=0.0005)
    flags = [first.update(e, a) for e, a in enumerate(CURVE[:cut], start=1)]
    resumed = EarlyStopping(patience=3, min_delta=0.0005)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    flags += [resumed.update(e, a) for e, a in enumerate(CURVE[cut:], start=cut + 1)]
    assert flags == expected
    assert resumed.state_dict() == reference.state_dict()


def test_state_of_release_0_1_loads() -> None:
    stopper = EarlyStopping(patience=3)
    stopper.load_state_dict({"best_accuracy": 0.9, "best_epoch": 2, "reference": 0.9, "bad_epochs": 1,
                             "stopped_epoch": None})
    assert (stopper.reference, stopper.bad_epochs, stopper.stopped) == (0.9, 1, False)


@pytest.mark.parametrize("state", [
    {},
    {"best_accuracy": 0.9, "best_epoch": 1, "reference": 0.9, "bad_epochs": 0},  # a key missing
    {"best_accuracy": 1.5, "best_epoch": 1, "reference": 0.9, "bad_epochs": 0, "stopped_epoch": None},
    {"best_accuracy": 0.9, "best_epoch": -1, "reference": 0.9, "bad_epochs": 0, "stopped_epoch": None},
    {"best_accuracy": 0.9, "best_epoch": 1, "reference": 0.9, "bad_epochs": "2", "stopped_epoch": None},
    {"best_accuracy": 0.9, "best_epoch": 1, "reference": 0.9, "bad_epochs": True, "stopped_epoch": None},
    "not a dict",
])
def test_malformed_state_is_a_checkpoint_error_and_changes_nothing(state: object) -> None:
    stopper = EarlyStopping(patience=3)
    stopper.update(1, 0.5)
    before = stopper.state_dict()
    with pytest.raises(CheckpointError, match="early stopping state"):
        stopper.load_state_dict(state)  # type: ignore[arg-type]
    assert stopper.state_dict() == before


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError):
        EarlyStopping(patience=2, min_delta=-0.1)


# --- PlateauSchedule -----------------------------------------------------------------------------


def plateau(**options: float) -> PlateauSchedule:
    settings = ScheduleConfig(name="plateau", **{"plateau_patience": 2, "plateau_factor": 0.5, **options})  # type: ignore[arg-type]
    schedule = make_schedule(settings, 0.4, total_steps=1000, steps_per_epoch=10)
    assert isinstance(schedule, PlateauSchedule)
    return schedule


def test_plateau_reduces_the_rate_after_patience_epochs_without_improvement() -> None:
    lr = plateau()
    rates, reduced = [], []
    for epoch, accuracy in enumerate([0.9, 0.92, 0.92, 0.91, 0.93, 0.93, 0.93, 0.93, 0.93], start=1):
        reduced.append(lr.update(epoch, accuracy))
        rates.append(lr(epoch * 10))  # the first step of the next epoch
    assert reduced == [False, False, False, True, False, False, True, False, True]
    assert rates == [0.4, 0.4, 0.4, 0.2, 0.2, 0.2, 0.1, 0.1, 0.05]
    assert all(type(r) is float for r in rates)


def test_plateau_rate_is_constant_within_an_epoch_and_floored_at_min_lr() -> None:
    lr = plateau(plateau_patience=1, min_lr=0.06)
    lr.update(1, 0.9)
    for epoch in range(2, 10):
        lr.update(epoch, 0.8)
    assert lr(95) == lr(99) == 0.06 and lr.reductions == 3  # 0.4 -> 0.2 -> 0.1 -> 0.06 (floor), then no more


def test_plateau_min_delta() -> None:
    lr = plateau(plateau_patience=2, plateau_min_delta=0.01)
    for epoch, accuracy in enumerate([0.90, 0.905, 0.909], start=1):
        lr.update(epoch, accuracy)
    assert lr.reductions == 1  # two epochs less than 0.01 above 0.90


def test_plateau_warmup_ramps_and_its_epochs_do_not_count() -> None:
    lr = plateau(warmup_epochs=2, plateau_patience=1)
    assert [lr(s) for s in (0, 9, 19, 20)] == pytest.approx([0.02, 0.2, 0.4, 0.4])
    lr.update(1, 0.9)
    lr.update(2, 0.8)  # a fall inside the warmup: not counted
    assert lr.reductions == 0 and lr(20) == 0.4
    lr.update(3, 0.8)
    assert lr.reductions == 1 and lr(30) == 0.2


@pytest.mark.parametrize("cut", [0, 3, 5, 8])
def test_plateau_state_round_trip_gives_bit_identical_rates(cut: int) -> None:
    curve = [0.9, 0.92, 0.92, 0.91, 0.93, 0.93, 0.93, 0.94, 0.93, 0.93, 0.93]
    settings = {"plateau_factor": 0.3, "plateau_patience": 2}
    reference = plateau(**settings)
    expected = []
    for epoch, accuracy in enumerate(curve, start=1):
        reference.update(epoch, accuracy)
        expected.append(reference(epoch * 10))
    first = plateau(**settings)
    got = []
    for epoch, accuracy in enumerate(curve[:cut], start=1):
        first.update(epoch, accuracy)
        got.append(first(epoch * 10))
    resumed = plateau(**settings)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for epoch, accuracy in enumerate(curve[cut:], start=cut + 1):
        resumed.update(epoch, accuracy)
        got.append(resumed(epoch * 10))
    assert got == expected  # exact equality: the rate is recomputed from the count of reductions


@pytest.mark.parametrize("state", [
    {"best": 0.9, "bad_epochs": 0},
    {"best": 0.9, "bad_epochs": -1, "reductions": 0},
    {"best": "x", "bad_epochs": 0, "reductions": 0},
    {"best": 0.9, "bad_epochs": 0, "reductions": 1.5},
])
def test_plateau_malformed_state(state: dict) -> None:
    with pytest.raises(CheckpointError, match="plateau"):
        plateau().load_state_dict(state)


@pytest.mark.parametrize(("option", "key"), [
    ({"plateau_patience": 0}, "plateau_patience"), ({"plateau_factor": 1.0}, "plateau_factor"),
    ({"plateau_factor": 0.0}, "plateau_factor"), ({"plateau_min_delta": -0.1}, "plateau_min_delta"),
])
def test_plateau_invalid_options(option: dict, key: str) -> None:
    (value,) = option.values()
    with pytest.raises(ConfigError, match=key):
        load_config(None, {"schedule.name": "plateau", f"schedule.{key}": value})


# --- config --------------------------------------------------------------------------------------


def test_defaults_are_off() -> None:
    config = Config()
    assert not config.early_stopping.enabled and config.schedule.name == "constant"
    assert (config.early_stopping.patience, config.early_stopping.min_delta) == (10, 0.0)
    assert (config.schedule.plateau_patience, config.schedule.plateau_factor, config.schedule.plateau_min_delta) == (
        5, 0.5, 0.0)


def test_keys_are_read() -> None:
    config = load_config(None, sets=[
        "early_stopping.enabled=true", "early_stopping.patience=3", "early_stopping.min_delta=0.001",
        "schedule.name=plateau", "schedule.plateau_patience=2",
        "schedule.plateau_factor=0.2", "schedule.plateau_min_delta=1e-4",
    ])
    assert config.early_stopping == EarlyStoppingConfig(enabled=True, patience=3, min_delta=0.001)
    assert (config.schedule.name, config.schedule.plateau_patience, config.schedule.plateau_factor,
            config.schedule.plateau_min_delta) == ("plateau", 2, 0.2, 1e-4)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("early_stopping.patience", 0, r"early_stopping\.patience = 0; expected an integer >= 1"),
    ("early_stopping.patience", 2.5, r"early_stopping\.patience = 2\.5 .*expected an integer"),
    ("early_stopping.min_delta", 2, r"early_stopping\.min_delta = 2\.0; expected a number in \[0\.0, 1\.0\]"),
    ("early_stopping.restore_best", True, r"early_stopping\.restore_best was removed"),
    ("schedule.plateau_factor", 1, r"schedule\.plateau_factor = 1\.0; expected a number in \(0\.0, 1\.0\)"),
    ("schedule.plateau_patience", 0, r"schedule\.plateau_patience = 0; expected an integer in \[1, 100000\]"),
    ("schedule.name", "plateu", r"did you mean 'plateau'"),
])
def test_keys_are_validated(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, {key: value})


@pytest.mark.parametrize("setting", ["early_stopping.enabled=true", "schedule.name=plateau"])
def test_watching_dev_accuracy_needs_a_dev_set(setting: str) -> None:
    with pytest.raises(ConfigError, match=r"data\.dev_size = 0 leaves no dev set"):
        load_config(None, sets=[setting, "data.dev_size=0"])
    load_config(None, sets=[setting])  # the default dev set is fine
