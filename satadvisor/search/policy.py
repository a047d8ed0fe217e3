"""Which rule candidate a study runs next, and when: the policy of ``hybrid`` and ``rules``.

Every finished trial stores its *rule candidates* (its analysis's recommendations, snapped into
the search space, with their MACs) in the user attribute :data:`CANDIDATES`; nothing is enqueued
when a trial finishes. Before drawing a trial, a worker asks :func:`next_candidate` whether the
next trial should be a rule candidate, and which one, from the storage alone:

- **Only the front seeds.** Candidates come from the trials on the current proxy Pareto front
  (non-dominated over the study's objectives); a trial whose proxy did not learn is never on
  it and never supplies candidates (:func:`candidates_of`). ``rules`` goes on to the next
  front (rank 1, 2, …) when the front's candidates are spent, so it uses its budget while any
  remain.
- **Expected gain first.** Among the eligible candidates, those cheaper than their parent come
  first, the largest relative MACs cut first (a tail removed from a front trial keeps most of
  its accuracy, so it is the likeliest to move the front); moves that add MACs come last.
- **A capped share, after the sampler's startup (hybrid).** Rule trials take at most
  :data:`HYBRID_RULE_SHARE` of the budget, and only once the baseline and the sampler's
  random startup trials exist (so TPE's model starts from an unbiased sample); the slots are
  spread evenly over the rest of the budget, so every candidate is drawn from a recent front.
  A due slot without a candidate goes to the sampler.

The cap holds with several workers: a worker that draws a rule trial while
:func:`rule_trials_before` its number already reach :func:`rule_cap` records it as skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from satadvisor.search import trials as tr

#: User attribute of a finished trial: its rule candidates, as plain dicts (see :class:`Candidate`).
CANDIDATES = "rule_candidates"
#: At most this fraction of a hybrid study's budget goes to rule candidates.
HYBRID_RULE_SHARE = Fraction(1, 3)  # exact: 12 × 1/3 must be 4, not 3.9999…
RULE_PREFIX = "rule:"
#: Objective name → +1 when maximised, −1 when minimised (user attributes of the same name).
SENSE = {"accuracy": 1.0, "macs": -1.0, "params": -1.0}


@dataclass(frozen=True)
class Candidate:
    """A configuration a rule proposed for trial ``parent``; ``macs`` per image (None: unknown)."""

    params: dict[str, Any]
    kind: str
    parent: int
    macs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"params": dict(self.params), "kind": self.kind, "macs": self.macs}

    @property
    def source(self) -> str:
        return f"{RULE_PREFIX}{self.kind}"


def startup_trials(budget: int) -> int:
    """Random (startup) trials of the TPE sampler for a study of ``budget`` trials."""
    return max(3, budget // 4)


def rule_cap(strategy: str, budget: int) -> int:
    """The most rule trials a study of ``budget`` trials may run (the baseline is not one)."""
    if strategy == "rules":
        return max(0, budget - 1)
    if strategy == "hybrid":
        return int(budget * HYBRID_RULE_SHARE)
    return 0


def is_rule(trial: FrozenTrial) -> bool:
    return str(trial.user_attrs.get(tr.SOURCE, "")).startswith(RULE_PREFIX)


def rule_trials_before(number: int, trials: Iterable[FrozenTrial]) -> int:
    """Counted rule trials numbered below ``number`` (the order the cap is decided in)."""
    return sum(1 for t in trials if t.number < number and tr.counts(t) and is_rule(t))


def front_ranks(trials: Sequence[FrozenTrial], objectives: Sequence[str]) -> dict[int, int]:
    """Trial number → non-domination rank of the complete trials (0 = the proxy Pareto front).

    Objectives are read from the trials' user attributes (accuracy maximised, MACs and params
    minimised); trials lacking one, and trials whose proxy did not learn, are left out (the
    worker never completes those; an older study may have).
    """
    points = {}
    for t in trials:
        if t.state != TrialState.COMPLETE or tr.not_learned(t):
            continue
        values: list[Any] = [t.user_attrs.get(name) for name in objectives]
        if all(v is not None for v in values):
            points[t.number] = tuple(
                SENSE[n] * float(v) for n, v in zip(objectives, values, strict=True)
            )
    ranks: dict[int, int] = {}
    rank = 0
    left = dict(points)
    while left:
        front = [n for n, p in left.items() if not any(_dominates(q, p) for q in left.values())]
        for n in front:
            ranks[n] = rank
            del left[n]
        rank += 1
    return ranks


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` at least as good as ``b`` everywhere and better somewhere (all maximised)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def rule_slot_due(trials: Sequence[FrozenTrial], *, strategy: str, budget: int) -> bool:
    """Whether the next trial of the study is a rule slot (see the module docstring)."""
    cap = rule_cap(strategy, budget)
    position = len(tr.counted(trials))  # the next trial's place in the budget (baseline: 0)
    rules = sum(1 for t in trials if is_rule(t) and (tr.counts(t) or t.state == TrialState.WAITING))
    if rules >= cap or position >= budget:
        return False
    if strategy == "rules":
        return position >= 1
    start = 1 + startup_trials(budget)
    if position < start:
        return False
    # Spread the cap evenly over positions start .. budget-1: rules/cap ≤ elapsed/span.
    span = max(1, budget - start)
    return rules * span <= (position - start) * cap


def candidates_of(trial: FrozenTrial) -> list[Candidate]:
    """The rule candidates stored with ``trial``; none from a proxy that did not learn (its
    profile carries no advice), whatever a study written by an older version stored."""
    if tr.not_learned(trial) or trial.user_attrs.get(tr.LEARNED) is False:
        return []
    stored = trial.user_attrs.get(CANDIDATES) or []
    return [
        Candidate(dict(c["params"]), str(c["kind"]), trial.number, c.get("macs"))
        for c in stored
        if isinstance(c, Mapping) and "params" in c
    ]


def next_candidate(
    trials: Sequence[FrozenTrial],
    *,
    strategy: str,
    budget: int,
    objectives: Sequence[str] = ("accuracy", "macs"),
) -> Candidate | None:
    """The rule candidate the next trial should run, or None (the sampler's turn, or none left).

    ``trials`` is the study as stored. Only untried candidates (not counted, not waiting)
    qualify; see the module docstring for which and in what order.
    """
    if strategy == "tpe" or not rule_slot_due(trials, strategy=strategy, budget=budget):
        return None
    ranks = front_ranks(trials, objectives)
    known = tr.known_keys(trials)
    by_number = {t.number: t for t in trials}
    pool = []
    for number, rank in ranks.items():
        if rank > 0 and strategy != "rules":
            continue
        parent = by_number[number]
        parent_macs = parent.user_attrs.get("macs")
        for cand in candidates_of(parent):
            if tr.config_key(cand.params) in known:
                continue
            ratio = _macs_ratio(cand.macs, parent_macs)
            pool.append(((rank, ratio >= 1.0, ratio, number, tr.config_key(cand.params)), cand))
    if not pool:
        return None
    return min(pool, key=lambda item: item[0])[1]


def _macs_ratio(macs: int | None, parent_macs: Any) -> float:
    """Candidate MACs / parent MACs; 1.0 (no expected gain) when either is unknown."""
    if macs is None or not parent_macs:
        return 1.0
    return float(macs) / float(parent_macs)
