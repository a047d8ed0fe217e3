"""Search strategies: what samples the proxy trials and what stops them early.

A :class:`Strategy` names a base Optuna sampler (built per worker from a seed and the budget), a
pruner (built from the study's objectives), and whether the science steers the search
(``guided``: the rule moves of :mod:`satadvisor.rules`, the receptive-field prior that redraws
configurations with unproductive layers, and the rule candidates each trial hands on). Every
strategy runs inside the same :class:`~satadvisor.search.sampler.StudySampler`, so it gets the
baseline first, no configuration twice, and the study's budget and storage handling for free.

Adding one is a :func:`register_strategy` call in a module the workers import (a local worker
process imports ``satadvisor`` afresh, so register it at import time of a module the model file
or your entry point imports)::

    register_strategy(Strategy("qmc", "Optuna's quasi-Monte Carlo sampler alone",
                               base=lambda seed, budget: optuna.samplers.QMCSampler(seed=seed)))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler

from satadvisor.errors import UsageError
from satadvisor.search import policy
from satadvisor.search.pruner import SaturationPruner


def _tpe(seed: int, budget: int) -> BaseSampler:
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        constant_liar=True,
        n_startup_trials=policy.startup_trials(budget),
    )


def _random(seed: int, budget: int) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _no_pruning(objectives: Sequence[str]) -> BasePruner:
    return optuna.pruners.NopPruner()


def _saturation_pruner(objectives: Sequence[str]) -> BasePruner:
    return SaturationPruner(objectives=tuple(objectives))


@dataclass(frozen=True)
class Strategy:
    """One search strategy (see the module docstring)."""

    name: str
    description: str
    base: Callable[[int, int], BaseSampler]
    pruner: Callable[[Sequence[str]], BasePruner] = _no_pruning
    guided: bool = False


_STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    """Make ``strategy`` available by its name (replacing one of the same name)."""
    _STRATEGIES[strategy.name] = strategy
    return strategy


def strategy_names() -> tuple[str, ...]:
    """The registered strategies' names, built-in ones first."""
    return tuple(_STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; a one-line :class:`UsageError` naming the known ones."""
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise UsageError(f"unknown strategy {name!r}: use {', '.join(strategy_names())}") from None


DEFAULT = "guided"

register_strategy(
    Strategy(
        "guided",
        "TPE steered by saturation (rule moves, early stops of settled tails and dominated "
        "trials) and receptive fields (no draws with unproductive layers)",
        base=_tpe,
        pruner=_saturation_pruner,
        guided=True,
    )
)
register_strategy(Strategy("tpe", "Optuna's multi-objective TPE alone", base=_tpe))
register_strategy(Strategy("random", "Optuna's RandomSampler alone", base=_random))
