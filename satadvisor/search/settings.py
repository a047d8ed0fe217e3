"""What a search worker is given and what it reports: :class:`SearchSettings` (plain data, so
it crosses process boundaries), :class:`TrialEvent` (one finished trial, for progress display),
and the objectives and strategies a search may name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from satadvisor.config import TrainConfig
from satadvisor.search.space import SearchSpace
from satadvisor.search.strategies import strategy_names

OBJECTIVES = {"accuracy": "maximize", "macs": "minimize", "params": "minimize"}
#: The built-in strategies (:mod:`satadvisor.search.strategies`; more can be registered there).
STRATEGIES = strategy_names()


@dataclass(frozen=True)
class SearchSettings:
    """Everything a worker needs; plain data so it crosses process boundaries."""

    model: str | None
    study_name: str
    storage_url: str
    budget: int
    space: SearchSpace
    baseline: dict[str, Any] = field(default_factory=dict)
    strategy: str = "guided"
    objectives: tuple[str, ...] = ("accuracy", "macs")
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    timeout: float | None = None
    subset: int | None = None
    #: Cap on each split of the full (validation) runs; None: the whole training and test sets.
    full_subset: int | None = None


@dataclass(frozen=True)
class TrialEvent:
    """Reported after every finished trial (for progress display).

    ``state``: "complete", "pruned", "failed", or "did not learn" (the proxy ran but its
    accuracy is not significantly above the majority-class rate, or its loss did not fall;
    ``reason`` says which, and ``accuracy`` / ``macs`` are what it measured). ``seconds``: the
    trial's wall time; ``epoch_seconds``: the mean seconds of one of its proxy epochs (training
    and scoring; None when no epoch ran); ``train_images`` / ``eval_images``: the sizes of its
    proxy's training and validation splits (None when its data were never loaded) — what the
    ETA of :mod:`satadvisor.search.progress` is estimated from.
    """

    number: int
    done: int
    budget: int
    state: str
    knobs: dict[str, Any]
    accuracy: float | None
    macs: int | None
    source: str
    reason: str | None = None
    epochs: int = 0
    seconds: float | None = None
    epoch_seconds: float | None = None
    train_images: int | None = None
    eval_images: int | None = None


__all__ = ["OBJECTIVES", "STRATEGIES", "SearchSettings", "TrialEvent"]
