"""The run configuration: typed, frozen, strict.

A config is read from a YAML file in ``configs/``, then overridden by command-line flags and
``--set section.key=value`` pairs. Every key is checked against one table (the dataclasses below,
whose field metadata holds the allowed range or choices) before any work starts: an unknown key,
a wrong type or an out-of-range value is a :class:`ConfigError` naming the key, the value and what
was expected. The resolved config is recorded with every run and every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from mlp_cli.data.registry import DATASETS
from mlp_cli.errors import ConfigError
from mlp_cli.nn.registry import OPTIMIZERS, SCHEDULES
from mlp_cli.training.loggers.registry import LOGGERS
from mlp_cli.words import did_you_mean

PREPROCESSING = ("standardize", "scale", "none")
INITS = ("normal", "xavier", "glorot")
DTYPES = ("float32", "float64")
MAX_COUNT = 10**9  # rows, batch sizes, steps: far past any dataset (a 400-digit number is a typo, not a setting)


def _range(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> dict:
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open}


def _choices(*options: str) -> dict:
    return {"choices": options}


@dataclass(frozen=True)
class DataConfig:
    dataset: str = field(default="mnist", metadata=_choices(*DATASETS))  # the registry's names
    dev_size: int = field(default=10_000, metadata=_range(0, MAX_COUNT))
    split_seed: int = field(default=100, metadata=_range(0, 2**32 - 1))
    preprocess: str = field(default="standardize", metadata=_choices(*PREPROCESSING))
    limit: int | None = field(default=None, metadata=_range(1, MAX_COUNT))  # use only the first N train rows


@dataclass(frozen=True)
class ModelConfig:
    hidden: int = field(default=300, metadata=_range(1, 100_000))
    init: str = field(default="xavier", metadata=_choices(*INITS))
    dtype: str = field(default="float32", metadata=_choices(*DTYPES))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=30, metadata=_range(1, 100_000))
    batch_size: int = field(default=1000, metadata=_range(1, MAX_COUNT))
    seed: int = field(default=0, metadata=_range(0, 2**32 - 1))
    shuffle: bool = True
    l2: float = field(default=0.0, metadata=_range(0.0))
    # dropout (mlp_cli.nn.dropout): the fraction of hidden units, and of input pixels, left out of
    # each training batch (0: none); the trained network is evaluated without it
    dropout: float = field(default=0.0, metadata=_range(0.0, 1.0, hi_open=True))
    input_dropout: float = field(default=0.0, metadata=_range(0.0, 1.0, hi_open=True))


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimiser (one of mlp_cli.nn.registry.OPTIMIZERS) and every field one of them reads."""

    name: str = field(default="sgd", metadata=_choices(*OPTIMIZERS))
    lr: float = field(default=0.5, metadata=_range(0.0, lo_open=True))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0, hi_open=True))
    beta1: float = field(default=0.9, metadata=_range(0.0, 1.0, hi_open=True))
    beta2: float = field(default=0.999, metadata=_range(0.0, 1.0, hi_open=True))
    eps: float = field(default=1e-8, metadata=_range(0.0, lo_open=True))
    weight_decay: float = field(default=0.0, metadata=_range(0.0))


@dataclass(frozen=True)
class ScheduleConfig:
    """The schedule (one of mlp_cli.nn.registry.SCHEDULES) and every field one of them reads."""

    name: str = field(default="constant", metadata=_choices(*SCHEDULES))
    step_size: int = field(default=10, metadata=_range(1, MAX_COUNT))
    gamma: float = field(default=0.1, metadata=_range(0.0, 1.0, lo_open=True))
    min_lr: float = field(default=0.0, metadata=_range(0.0))
    warmup_epochs: int = field(default=0, metadata=_range(0, 100_000))
    # plateau: multiply the rate by plateau_factor once dev accuracy has not risen by more than
    # plateau_min_delta for plateau_patience epochs in a row (never below min_lr)
    plateau_patience: int = field(default=5, metadata=_range(1, 100_000))
    plateau_factor: float = field(default=0.5, metadata=_range(0.0, 1.0, lo_open=True, hi_open=True))
    plateau_min_delta: float = field(default=0.0, metadata=_range(0.0, 1.0))


@dataclass(frozen=True)
class AugmentConfig:
    """Random distortions of every training batch (see mlp_cli.data.augment); off by default."""

    enabled: bool = False
    shift: float = field(default=0.0, metadata=_range(0.0, 14.0))  # pixels, each axis in [-shift, shift]
    rotate: float = field(default=0.0, metadata=_range(0.0, 180.0))  # degrees, in [-rotate, rotate]
    scale: float = field(default=0.0, metadata=_range(0.0, 1.0, hi_open=True))  # size factor in [1 - scale, 1 + scale]
    shear: float = field(default=0.0, metadata=_range(0.0, 60.0))  # degrees, horizontal, in [-shear, shear]
    elastic_alpha: float = field(default=0.0, metadata=_range(0.0, 200.0))  # Simard's alpha (pixels); 0: no elastic
    elastic_sigma: float = field(default=4.0, metadata=_range(0.0, 28.0, lo_open=True))  # smoothing width (pixels)
    probability: float = field(default=1.0, metadata=_range(0.0, 1.0))  # fraction of images distorted


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when dev accuracy stops improving (see mlp_cli.training.early_stopping); off by default."""

    enabled: bool = False
    patience: int = field(default=10, metadata=_range(1))  # epochs without improvement before stopping
    min_delta: float = field(default=0.0, metadata=_range(0.0, 1.0))  # a rise of dev accuracy must exceed this


@dataclass(frozen=True)
class RunConfig:
    name: str | None = None  # default: <config name>-<timestamp>
    dir: str | None = None  # default: runs/<name>
    checkpoint_every: int = field(default=0, metadata=_range(0))  # 0: only last.npz and best.npz
    log: tuple[str, ...] = field(default=(), metadata=_choices(*LOGGERS))  # loggers besides metrics.jsonl
    log_every: int = field(default=10, metadata=_range(1))  # a logger records the batch loss every N steps


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self, dict_factory=_plain)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS: dict[str, type] = dict(get_type_hints(Config))


def _plain(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """A section as YAML and JSON write it: a tuple of names (run.log) becomes a list."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in items}

# Keys of older releases, and why they are gone (a checkpoint's stored config drops them).
REMOVED_KEYS = {
    "early_stopping.restore_best": (
        "was removed: a run's model is always its best.npz (the best dev epoch's weights; "
        "`mlp eval RUN_DIR` evaluates it) and last.npz its latest state; delete the key"
    ),
}

_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)")

# Short command-line flags and the key each one sets.
FLAG_KEYS = {
    "hidden": "model.hidden",
    "batch": "train.batch_size",
    "lr": "optimizer.lr",
    "epochs": "train.epochs",
    "seed": "train.seed",
    "l2": "train.l2",
    "optimizer": "optimizer.name",
    "out": "run.dir",
    "name": "run.name",
    "dataset": "data.dataset",
    "log": "run.log",
}


# --------------------------------------------------------------------------------------------
# Validation


def yaml11_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` (no dot) as a string; people mean the number (in a config file's
    number fields, and in every value of a sweep's ``--set``)."""
    if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        return float(value)
    return value


def build_config(raw: dict[str, dict[str, Any]], where: str | Path | None = None) -> Config:
    """Validate a nested mapping against the schema and build the frozen Config."""
    sections = {}
    for section, cls in SECTIONS.items():
        values = raw.get(section, {})
        hints = get_type_hints(cls)
        known = [f.name for f in dataclasses.fields(cls)]
        kwargs = {}
        for key, value in values.items():
            if f"{section}.{key}" in REMOVED_KEYS:
                raise ConfigError(f"{where_prefix(where)}{section}.{key} {REMOVED_KEYS[f'{section}.{key}']}")
            if key not in known:
                raise ConfigError(unknown_name("key", f"{section}.{key}", [f"{section}.{k}" for k in known], where))
            spec = next(f for f in dataclasses.fields(cls) if f.name == key)
            kwargs[key] = _check(f"{section}.{key}", value, hints[key], spec.metadata, where)
        sections[section] = cls(**kwargs)
    config = Config(**sections)
    _check_consistency(config, where)
    check_run_paths(config.run.name, config.run.dir, where)
    return config


def _check_consistency(config: Config, where: str | Path | None) -> None:
    if config.schedule.min_lr > config.optimizer.lr:
        raise ConfigError(
            f"{where_prefix(where)}schedule.min_lr = {config.schedule.min_lr} is above optimizer.lr = "
            f"{config.optimizer.lr}; expected min_lr <= lr"
        )
    if config.schedule.warmup_epochs >= config.train.epochs and config.schedule.warmup_epochs:
        raise ConfigError(
            f"{where_prefix(where)}schedule.warmup_epochs = {config.schedule.warmup_epochs} must be "
            f"smaller than train.epochs = {config.train.epochs}"
        )
    if config.data.dev_size == 0:
        needs_dev = [
            key for key, on in (
                ("early_stopping.enabled = true", config.early_stopping.enabled),
                (f"schedule.name = {config.schedule.name}", SCHEDULES[config.schedule.name].watches_dev),
            ) if on
        ]
        if needs_dev:
            raise ConfigError(
                f"{where_prefix(where)}{' and '.join(needs_dev)} watch dev accuracy, but data.dev_size = 0 "
                "leaves no dev set; expected data.dev_size > 0"
            )


def check_against_data(config: Config, n_train: int) -> None:
    """Checks that need the dataset's size (done before any training work). A batch larger than
    the training set is allowed: an epoch is then one smaller batch, as with any last batch."""
    if n_train <= 0:
        raise ConfigError(
            f"data.dev_size = {config.data.dev_size} leaves no training examples; "
            "expected a dev set smaller than the training split"
        )


# --------------------------------------------------------------------------------------------
# Which accuracy selects the best epoch


def selection_key(has_dev_set: bool) -> str:
    """The metric that selects a run's best epoch (its best.npz, its row in ``mlp runs``, a
    sweep's best trial): ``dev_accuracy``, or ``train_accuracy`` for a run without a dev set
    (``data.dev_size = 0``)."""
    return "dev_accuracy" if has_dev_set else "train_accuracy"


def selection_accuracy(metrics: Mapping[str, Any]) -> float:
    """One epoch's accuracy by :func:`selection_key`, from its metrics (a row of metrics.jsonl)."""
    return float(metrics[selection_key(metrics.get("dev_accuracy") is not None)])


def best_epoch(rows: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any] | None, str]:
    """A run's best epoch by :func:`selection_key` (its metrics row, None without rows) and that
    key; the run has a dev set when any row has a dev accuracy."""
    key = selection_key(any(row.get("dev_accuracy") is not None for row in rows))
    return max(rows, key=lambda row: row.get(key) or 0.0, default=None), key


# --------------------------------------------------------------------------------------------
# Helpers


def _check(key: str, value: Any, hint: Any, meta: Any, where: str | Path | None) -> Any:
    at = where_prefix(where)
    if get_origin(hint) is tuple:  # a list of names (run.log), each one of the choices
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{at}{key} = {show_value(value)}; expected a list of {', '.join(meta['choices'])}")
        names = tuple(_check(key, item, str, meta, where) for item in value)
        if len(set(names)) < len(names):
            raise ConfigError(f"{at}{key} names {show_value(list(names))}; expected each at most once")
        return names
    allowed = [a for a in get_args(hint)] if _is_union(hint) else [hint]
    optional = type(None) in allowed
    base = next(a for a in allowed if a is not type(None))
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{at}{key} = null; expected {_describe(base, meta)}")
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{at}{key} = {show_value(value)}; expected true or false")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                value = int(value)
            else:
                raise ConfigError(f"{at}{key} = {show_value(value)}; expected {_describe(base, meta)}")
    elif base is float:
        value = yaml11_number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{at}{key} = {show_value(value)}; expected {_describe(base, meta)}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the float range
            value = math.inf if value > 0 else -math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{at}{key} = {value}; expected a finite number")
    elif base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{at}{key} = {show_value(value)}; expected {_describe(base, meta)}")
        choices = meta.get("choices")
        if choices and value not in choices:
            hint_text = did_you_mean(value, choices)
            raise ConfigError(
                f"{at}{key} = {value!r} is not one of {', '.join(choices)}{hint_text}"
            )
        return value
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value <= lo if meta.get("lo_open") else value < lo):
        raise ConfigError(f"{at}{key} = {value}; expected {_describe(base, meta)}")
    if hi is not None and (value >= hi if meta.get("hi_open") else value > hi):
        raise ConfigError(f"{at}{key} = {value}; expected {_describe(base, meta)}")
    return value


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType)


def _describe(base: type, meta: Any) -> str:
    kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[base]
    if meta.get("choices"):
        return f"one of {', '.join(meta['choices'])}"
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None:
        left, right = "(" if meta.get("lo_open") else "[", ")" if meta.get("hi_open") else "]"
        return f"{kind} in {left}{lo}, {hi}{right}"
    if lo is not None:
        return f"{kind} {'>' if meta.get('lo_open') else '>='} {lo}"
    return kind


def show_value(value: Any) -> str:
    """A short rendering of any value: reprlib visits at most a few dozen of its parts, so a
    value built to be huge (a YAML alias bomb) costs nothing to show."""
    import reprlib

    shorter = reprlib.Repr()
    shorter.maxlevel, shorter.maxstring, shorter.maxother, shorter.maxlong = 3, 50, 50, 40
    shorter.maxlist = shorter.maxtuple = shorter.maxdict = shorter.maxset = 4
    text = shorter.repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


MAX_RUN_NAME = 100  # characters; the default <config>-<timestamp> takes about 25


def check_run_paths(name: str | None, directory: str | None, where: str | Path | None = None) -> None:
    """``run.name`` is one plain folder name inside runs/ (no separators, not ``.`` or ``..``,
    at most MAX_RUN_NAME characters); ``run.dir``, an explicit path, has no part over 255 bytes."""
    at = where_prefix(where)
    if name:  # empty: the default name
        if len(name) > MAX_RUN_NAME:
            raise ConfigError(f"{at}run.name is {len(name)} characters long; expected at most {MAX_RUN_NAME}")
        if name in (".", "..") or any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name):
            raise ConfigError(
                f"{at}run.name = {show_value(name)} must be one folder name inside runs/ (no '/', "
                "'\\', '..' or control characters); use --out for a directory elsewhere"
            )
    if directory:  # empty: the default directory
        parts = Path(directory).parts
        if "\0" in directory or any(len(p.encode("utf-8", "replace")) > 255 for p in parts):
            raise ConfigError(
                f"{at}run.dir = {show_value(directory)} is not a usable path (a NUL byte or a part "
                "longer than 255 bytes)"
            )


def unknown_name(kind: str, name: str, options: list[str], where: str | Path | None) -> str:
    hint = did_you_mean(name, options)
    if not hint:
        hint = f"; known {kind}s: {', '.join(options)}" if len(options) <= 8 else ""
    return f"{where_prefix(where)}unknown {kind} {name!r}{hint}"  # repr: names come from the user


def where_prefix(where: str | Path | None) -> str:
    return f"config {where}: " if where is not None else ""
