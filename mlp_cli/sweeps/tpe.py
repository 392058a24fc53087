"""Model-based proposals: ``mlp sweep --search tpe``, through Optuna's TPE sampler (ask and tell).

The sweep file's ``random:`` axes are the search space (``choice`` a categorical, ``uniform`` and
``loguniform`` floats, ``int`` integers) and its ``trials:`` the number of trials. Trials are
proposed on the client one at a time, as workers come free, so the workers need nothing new.

The study lives in the sweep directory's ``trials.jsonl``, not in a database: before each
proposal an in-memory study is rebuilt from every trial recorded so far (a finished trial with
its best dev accuracy, a pruned one with its score at the epoch it reached, a diverged or failed
one as failed), and TPE, seeded with ``[seed, number of the trial]``, proposes the next. The
proposal for trial ``n`` thus depends only on the seed and the results before it: the same seed
gives the same proposals, and an interrupted sweep run again continues as if it had not stopped.
Optuna is imported only here, only for ``--search tpe`` (the ``optuna`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlp_cli.errors import ConfigError, UsageError
from mlp_cli.sweeps.spec import SweepSpec, _round_within

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial

OPTUNA_HINT = "pip install -e '.[optuna]' (in the mlp checkout), or pip install optuna"
SEED_STRIDE = 1_000_003  # seed * stride + trial number: one sampler seed per proposal
SAMPLER_SEEDS = 2**32  # numpy's seeds, which Optuna's sampler takes: 0 to 2**32 - 1


def check_tpe(spec: SweepSpec) -> None:
    """What a model-based search needs: a random: part to search, and no grid beside it."""
    if not spec.random:
        raise ConfigError(f"sweep {spec.name}: --search tpe searches the sweep file's random: part, which it lacks")
    if spec.grid:
        raise ConfigError(f"sweep {spec.name}: --search tpe takes no grid: ({', '.join(spec.grid)}); give those "
                          "keys as {choice: [...]} in random:")


def in_space(spec: SweepSpec, overrides: dict[str, Any]) -> bool:
    """Whether ``overrides`` is a point of the random: axes (a recorded proposal read back from
    trials.jsonl, which anyone may have edited): every axis, and each value within its range."""
    if set(overrides) != set(spec.random):
        return False
    for key, axis in spec.random.items():
        value = overrides[key]
        if axis.kind == "choice":
            if not any(type(value) is type(choice) and value == choice for choice in axis.values):
                return False
            continue
        number = int if axis.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, number) or not axis.values[0] <= value <= axis.values[1]:
            return False
    return True


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UsageError(f"--search tpe needs Optuna, which is not installed: {OPTUNA_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def space(spec: SweepSpec) -> dict[str, BaseDistribution]:
    """The random: axes as Optuna distributions."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    distributions: dict[str, BaseDistribution] = {}
    for key, axis in spec.random.items():
        if axis.kind == "choice":
            distributions[key] = CategoricalDistribution(list(axis.values))
        elif axis.kind == "int":
            distributions[key] = IntDistribution(*axis.values)
        else:
            lo, hi = axis.values
            distributions[key] = FloatDistribution(lo, hi, log=axis.kind == "loguniform")
    return distributions


def sampler_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial ``number``: ``seed * SEED_STRIDE + number`` while numpy takes
    it (every seed up to 4294, for the 10,000 trials a sweep may have: the proposals they always
    made), else one derived from both by numpy's SeedSequence (any seed up to 2**32 - 1)."""
    import numpy as np

    plain = seed * SEED_STRIDE + number
    if plain < SAMPLER_SEEDS:
        return plain
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def propose(spec: SweepSpec, rows: Sequence[dict[str, Any]], number: int) -> dict[str, Any]:
    """Trial ``number``'s overrides, from the latest row of each trial recorded so far."""
    optuna = _optuna()
    distributions = space(spec)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed(spec.seed, number))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for row in sorted(rows, key=lambda row: row.get("index") or 0):  # in the order they were proposed
        known = _known(row, distributions)
        if known is not None:
            study.add_trial(known)
    trial = study.ask(distributions)
    overrides = {}
    for key, axis in spec.random.items():
        value = trial.params[key]
        overrides[key] = _round_within(float(value), *axis.values) if axis.kind in ("uniform", "loguniform") else value
    return overrides


def _known(row: dict[str, Any], distributions: dict[str, BaseDistribution]) -> FrozenTrial | None:
    """A recorded trial as Optuna's: finished, pruned at its score, or failed; None while it runs."""
    from optuna.trial import TrialState, create_trial

    params = row.get("overrides", {})
    if set(params) != set(distributions):
        return None
    score, status = row.get("best_dev_accuracy"), row["status"]
    try:  # a row whose values lie outside the space (an edited trials.jsonl) is not the study's
        if status == "ok" and score is not None:
            return create_trial(value=score, params=params, distributions=distributions)
        if status in ("pruned", "promoted") and score is not None:
            return create_trial(state=TrialState.PRUNED, params=params, distributions=distributions,
                                intermediate_values={int(row.get("epochs") or 0): score})
        if status in ("diverged", "failed"):
            return create_trial(state=TrialState.FAIL, params=params, distributions=distributions)
    except ValueError:
        return None
    return None
