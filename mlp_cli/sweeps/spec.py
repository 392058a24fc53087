"""A sweep: a base config plus a search, expanded into trials that are each a full, valid config.

A sweep file (``configs/sweeps/*.yaml``)::

    name: lr-hidden            # optional; default: the file's name
    config: best               # the base config: a name from configs/ or a path
    set: {train.epochs: 10}    # fixed overrides for every trial
    grid:                      # the product of these lists (Hydra's multirun)
      optimizer.lr: [0.05, 0.1, 0.2]
      model.hidden: [300, 800]
    random:                    # `trials` draws, each combined with every grid point
      train.l2: {loguniform: [1.0e-6, 1.0e-3]}
      optimizer.momentum: {uniform: [0.8, 0.99]}
      train.batch_size: {choice: [50, 100]}
      model.hidden: {int: [100, 800]}      # inclusive
    trials: 8
    seed: 0                    # of the random draws (the trials' own seeds stay train.seed)
    prune: {min_epochs: 2, reduction: 3}   # successive halving (sweeps.halving); or --prune halving

On the command line, ``--set key=a,b,c`` is a grid axis and ``--set key=a`` a fixed override.

Random draw ``t`` comes from ``default_rng([seed, t])``, so the first draws do not change when
``trials`` grows. Continuous draws are rounded to 4 significant digits (more where 4 would take
the value out of the range written): the trial's name and its config then say exactly the value
it trained with. Every trial's config is built and validated
(:func:`plan_trials`) before anything runs; a bad key or value names the trial.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlp_cli.config import Config, build_config, show_value, yaml11_number
from mlp_cli.config_file import (
    CHECKOUT_CONFIGS,
    config_names,
    load_config,
    parse_scalar,
    put_setting,
    read_yaml,
    resolve_config_path,
    split_set,
)
from mlp_cli.errors import ConfigError
from mlp_cli.sweeps.halving import Prune, check_prunable, parse_prune
from mlp_cli.words import did_you_mean

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")
SPEC_KEYS = ("name", "config", "set", "grid", "random", "trials", "seed", "prune")
MAX_TRIALS = 10_000  # a sweep is a list held in memory and a directory per trial: bounded
MAX_NAME = 96  # characters of a trial directory's name
UNSWEEPABLE = ("run.",)  # where a trial's files go is the sweep's business


@dataclass(frozen=True)
class Distribution:
    """One random axis: ``choice`` of values, ``uniform`` / ``loguniform`` in [lo, hi], ``int``
    in [lo, hi] inclusive."""

    kind: str
    values: tuple[Any, ...]

    def draw(self, rng: Any) -> Any:
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        lo, hi = self.values
        if self.kind == "int":
            return int(rng.integers(lo, hi + 1))
        if self.kind == "uniform":
            return _round_within(lo + (hi - lo) * float(rng.random()), lo, hi)
        return _round_within(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * float(rng.random())), lo, hi)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    config: str | None  # the base config as given (a name or a path)
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    random: dict[str, Distribution] = field(default_factory=dict)
    trials: int = 1  # random draws; without a random part, 1
    seed: int = 0
    prune: Prune | None = None  # None: every trial trains to its end
    search: str = "random"  # or "tpe": trials proposed one by one from the results (sweeps.tpe)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "config": self.config, "set": dict(self.fixed), "grid": dict(self.grid),
            "random": {k: {d.kind: list(d.values)} for k, d in self.random.items()},
            "trials": self.trials, "seed": self.seed, **({"prune": self.prune.to_dict()} if self.prune else {}),
            **({"search": self.search} if self.search != "random" else {}),
        }


@dataclass(frozen=True)
class Trial:
    index: int
    name: str  # its run directory's name, from its index and overrides
    overrides: dict[str, Any]  # the swept keys only
    config: Config  # the full, validated config (run.dir not yet set)


def _round_within(value: float, lo: float, hi: float) -> float:
    """``value`` to 4 significant digits, or as many more as keep it inside [lo, hi] (a range
    narrower than 4 digits, or one next to a limit: momentum 0.9999 must not become 1.0)."""
    value = min(max(value, lo), hi)  # exp(log(hi)) may land a rounding error above hi
    for digits in range(4, 18):
        rounded = float(f"{value:.{digits}g}")
        if lo <= rounded <= hi:
            return rounded
    return value


# --------------------------------------------------------------------------------------------
# Reading


def resolve_sweep_path(spec: str) -> Path:
    """A path, or the name of a file in ./configs/sweeps or the checkout's configs/sweeps."""
    path = Path(spec)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    for folder in (Path("configs") / "sweeps", CHECKOUT_CONFIGS / "sweeps"):
        if (folder / f"{spec}.yaml").is_file():
            return folder / f"{spec}.yaml"
    names = sorted(p.stem for p in (CHECKOUT_CONFIGS / "sweeps").glob("*.yaml"))
    hint = did_you_mean(spec, config_names("sweeps"))
    raise ConfigError(f"sweep {spec!r} not found{hint}: no such file, and no {spec}.yaml in configs/sweeps "
                      f"(the shipped ones: {', '.join(names) or 'none'})")


def read_sweep_file(path: str | Path, trials: int | None = None, seed: int | None = None,
                    prune: str | None = None, search: str = "random") -> SweepSpec:
    """Parse and check a sweep file; ``trials`` / ``seed`` / ``prune`` (flags) override the file's."""
    path = Path(path)
    raw = read_yaml(path)
    where = f"sweep {path}: "
    for key in raw:
        if key not in SPEC_KEYS:
            raise ConfigError(f"{where}unknown key {key!r}; expected some of {', '.join(SPEC_KEYS)}")
    fixed = _mapping(raw.get("set"), "set", where)
    grid = {str(k): _values(v, f"grid.{k}", where) for k, v in _mapping(raw.get("grid"), "grid", where).items()}
    random = {str(k): parse_distribution(v, f"random.{k}", where)
              for k, v in _mapping(raw.get("random"), "random", where).items()}
    config = raw.get("config")
    if config is not None and not isinstance(config, str):
        raise ConfigError(f"{where}config = {show_value(config)}; expected a config name or path")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        raise ConfigError(f"{where}name = {show_value(name)}; expected letters, digits, '.', '_' or '-'")
    count = _count(raw.get("trials", 1) if trials is None else trials, "trials", where, lo=1)
    draw_seed = _count(raw.get("seed", 0) if seed is None else seed, "seed", where, lo=0)
    _check_draws(raw, random, trials, seed, path)
    return SweepSpec(name=name, config=config, fixed=fixed, grid=grid, random=random,
                     trials=count if random else 1, seed=draw_seed,
                     prune=pruning(raw.get("prune"), prune, where), search=search)


def _check_draws(raw: dict[str, Any], random: dict[str, Distribution], trials: int | None, seed: int | None,
                 path: Path) -> None:
    """``trials`` and ``seed`` (flags or keys) count and seed the random: draws: without any, they
    would do nothing, so they are refused."""
    if random:
        return
    for key, flag in (("trials", trials), ("seed", seed)):
        if flag is not None:
            raise ConfigError(f"--{key} goes with a random search (random: in the sweep file, or --search tpe "
                              f"over it); sweep {path} has no random: part")
        if key in raw:
            raise ConfigError(f"sweep {path}: {key}: goes with random: (the draws it counts or seeds), which this file "
                              "lacks; remove it or add random: axes")


def pruning(raw: Any, method: str | None, where: str) -> Prune | None:
    """The file's ``prune:`` (None when absent), its method replaced by the ``--prune`` flag's."""
    if raw is None and method is None:
        return None
    settings = {} if raw is None else raw
    if method is not None and isinstance(settings, dict):
        settings = {**settings, "method": method}
    return parse_prune(settings, where)


def spec_from_sets(
    config: str | None, sets: list[str] | tuple[str, ...], trials: int | None = None, seed: int | None = None,
    prune: str | None = None, search: str = "random",
) -> SweepSpec:
    """``--set key=a,b,c`` (a grid axis) and ``--set key=a`` (fixed) on top of ``config``."""
    fixed: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    for item in sets:
        key, text = split_set(item, expects="section.key=value or section.key=a,b,c")
        values = [yaml11_number(parse_scalar(part.strip())) for part in text.split(",")]
        if key in fixed or key in grid:  # a dict would silently keep the last one
            raise ConfigError(f"--set {key} is given twice; give all its values in one --set key=a,b,c")
        if len(values) > 1:
            grid[key] = values
        else:
            fixed[key] = values[0]
    for flag, value in (("--trials", trials), ("--seed", seed)):
        if value is not None:  # --set makes a grid: nothing to draw
            raise ConfigError(f"{flag} goes with a random search, which only a sweep file can describe (random:)")
    name = Path(config).stem if config else "sweep"
    return SweepSpec(name=name, config=config, fixed=fixed, grid=grid,
                     prune=pruning(None, prune, "--prune: "), search=search)


def parse_distribution(raw: Any, key: str, where: str) -> Distribution:
    """``{choice: [...]}``, ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}`` or ``{int: [lo, hi]}``."""
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in DISTRIBUTIONS:
        raise ConfigError(f"{where}{key} = {show_value(raw)}; expected one of "
                          + ", ".join(f"{{{d}: [...]}}" for d in DISTRIBUTIONS))
    kind, values = next(iter(raw.items()))
    if kind == "choice":
        return Distribution(kind, tuple(_values(values, key, where)))
    if not isinstance(values, list) or len(values) != 2:
        raise ConfigError(f"{where}{key}: {kind} takes [lo, hi], got {show_value(values)}")
    lo, hi = (parse_scalar(v) if isinstance(v, str) else v for v in values)
    number = int if kind == "int" else (int, float)
    if any(isinstance(v, bool) or not isinstance(v, number) or not _in_range(v, kind) for v in (lo, hi)) or not lo < hi:
        what = "integers" if kind == "int" else "numbers"
        size = f"2^{INT_BITS}" if kind == "int" else "1e300"
        raise ConfigError(f"{where}{key}: {kind} takes two {what} lo < hi, each below {size} in size, "
                          f"got {show_value(values)}")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}{key}: loguniform needs lo > 0, got {lo}")
    return Distribution(kind, (lo, hi))


INT_BITS = 62  # numpy draws integers as int64: hi + 1 must fit


def _in_range(value: int | float, kind: str) -> bool:
    """A bound the draw can use: an int64 for ``int``, a float whose range (hi - lo) is finite else."""
    if kind == "int":
        return abs(value) < 2**INT_BITS
    try:
        return math.isfinite(value) and abs(float(value)) < 1e300
    except OverflowError:  # an integer beyond any float
        return False


def _mapping(raw: Any, key: str, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}{key} = {show_value(raw)}; expected a mapping of section.key to values")
    return {str(k): v for k, v in raw.items()}


def _values(raw: Any, key: str, where: str) -> list[Any]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}{key} = {show_value(raw)}; expected a non-empty list of values")
    return list(raw)


def _count(raw: Any, key: str, where: str, lo: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < lo or raw > 2**32 - 1:
        raise ConfigError(f"{where}{key} = {show_value(raw)}; expected a whole number >= {lo}")
    return raw


# --------------------------------------------------------------------------------------------
# Expanding


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every trial's swept overrides, in order: grid points (the last key varying fastest), each
    combined with every random draw."""
    import numpy as np

    check_count(spec, trial_count(spec))
    points = [dict(zip(spec.grid, combo, strict=True)) for combo in itertools.product(*spec.grid.values())]
    if not spec.random:
        return points
    draws = []
    for t in range(spec.trials):
        rng = np.random.default_rng([spec.seed, t])
        draws.append({key: dist.draw(rng) for key, dist in spec.random.items()})
    return [{**point, **draw} for point in points for draw in draws]


def check_count(spec: SweepSpec, total: int) -> None:
    if total > MAX_TRIALS:
        raise ConfigError(f"sweep {spec.name} has {total:,} trials; at most {MAX_TRIALS:,} are allowed")


def trial_count(spec: SweepSpec) -> int:
    """How many trials ``spec`` expands to, computed from the axes (nothing is built)."""
    return math.prod(len(values) for values in spec.grid.values()) * (spec.trials if spec.random else 1)


def trial_name(index: int, overrides: dict[str, Any]) -> str:
    """``007-lr=0.1-hidden=300``: the index keeps names unique and ordered; the short key (the
    part after the dot) is used unless two swept keys share it."""
    shorts = [short_key(key) for key in overrides]
    parts = [f"{index:03d}"]
    for (key, value), short in zip(overrides.items(), shorts, strict=True):
        label = short if shorts.count(short) == 1 else key
        text = _exact(value) if isinstance(value, float) else str(value)
        text = text.lower() if isinstance(value, bool) else text
        parts.append(re.sub(r"[^A-Za-z0-9._+=-]", "_", f"{label}={text}"))
    return "-".join(parts)[:MAX_NAME]


def _exact(value: float) -> str:
    """``0.1`` -> ``0.1``, ``1e-05``; all the digits when the 6 of ``:g`` would round it."""
    return f"{value:g}" if float(f"{value:g}") == value else repr(value)


def short_key(key: str) -> str:
    """``optimizer.lr`` -> ``lr``; ``optimizer.name`` -> ``optimizer`` (a bare "name" says nothing)."""
    section, _, name = key.partition(".")
    return section if name == "name" else name or key


def plan_trials(spec: SweepSpec) -> list[Trial]:
    """Build and validate every trial's config; the first bad one is a ConfigError naming it."""
    return plan_search(spec)[0]


def plan_search(spec: SweepSpec) -> tuple[list[Trial], dict[str, Any]]:
    """``plan_trials``, and the base config it built them on (read once: a model-based sweep
    fingerprints it and proposes its trials on it)."""
    base = resolve_config_path(spec.config)
    swept = list(spec.grid) + list(spec.random)
    for key in [*spec.fixed, *swept]:
        if key.startswith(UNSWEEPABLE):
            raise ConfigError(f"sweep {spec.name}: {key} cannot be set in a sweep; each trial's run "
                              "directory is chosen by the sweep (use --out for the sweep's own)")
    _check_distinct(spec)
    base_config = load_config(base).to_dict()  # the file's own errors name the file
    if spec.search == "tpe":  # proposed as the sweep goes; each axis's ends are checked now
        from mlp_cli.sweeps.tpe import check_tpe

        check_tpe(spec)
        check_count(spec, spec.trials)  # proposed one by one, yet each is a directory and a row
        ends = [{key: axis.values[0 if end == 0 else -1] for key, axis in spec.random.items()} for end in (0, 1)]
        for overrides in ends:
            trial = make_trial(spec, base_config, 0, overrides)
            if spec.prune is not None:
                check_prunable(spec.name, [trial], spec.prune)
        return [], base_config
    trials = [make_trial(spec, base_config, index, overrides) for index, overrides in enumerate(expand(spec))]
    if spec.prune is not None:
        check_prunable(spec.name, trials, spec.prune)
    return trials, base_config


def make_trial(spec: SweepSpec, base_config: dict[str, Any], index: int, overrides: dict[str, Any]) -> Trial:
    """Trial ``index`` with ``overrides`` on the base config and the sweep's set:, validated."""
    name = trial_name(index, overrides)
    try:
        config = build_config(_merged(base_config, {**spec.fixed, **overrides}))
    except ConfigError as err:
        raise ConfigError(f"sweep {spec.name}, trial {name}: {err}") from None
    return Trial(index=index, name=name, overrides=overrides, config=config)


def _check_distinct(spec: SweepSpec) -> None:
    """A key is set, a grid axis or a random axis: in two places one would silently win."""
    seen: dict[str, str] = {}
    for part, keys in (("set", spec.fixed), ("grid", spec.grid), ("random", spec.random)):
        for key in keys:
            if key in seen:
                raise ConfigError(f"sweep {spec.name}: {key} is in both {seen[key]} and {part}; give it once")
            seen[key] = part


def _merged(base: dict[str, dict[str, Any]], overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``base`` with each ``section.key`` of ``overrides`` set (an unknown section is refused here;
    build_config judges the keys and values)."""
    merged = {section: dict(values) for section, values in base.items()}
    for dotted, value in overrides.items():
        put_setting(merged, dotted, value)
    return merged
