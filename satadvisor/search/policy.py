"""Which rule move the guided sampler proposes next, and when.

Every trial that learned stores its *rule candidates* in its record (its analysis's
recommendations — remove the tail, drop a downsampling, widen — snapped into the search space,
with their MACs). Before each draw the sampler (:mod:`.sampler`) asks :func:`next_candidate`
whether this trial should be a rule move, and which, from the stored trials alone (so several
workers agree without talking):

- **Hand-offs first.** A trial the pruner stopped because its profile settled with a tail
  (:mod:`.pruner`) handed its tail-removed configuration over: it runs at the next slot.
- **Then the front.** Otherwise candidates come from trials on the current proxy Pareto front
  (non-dominated over the study's objectives); a trial whose proxy did not learn is never on it
  and supplies none.
- **Expected gain first.** Among eligible candidates, those cheaper than their parent come
  first, the largest relative MACs cut first; moves that add MACs come last.
- **A capped share, after the sampler's startup.** Rule moves take at most
  :data:`RULE_SHARE` of the budget, and only once the baseline and TPE's startup trials exist
  (so TPE's model starts from an unbiased sample); the slots are spread evenly over the rest
  of the budget, so every candidate is drawn from a recent front. Hand-offs may take a slot
  early (still under the cap). A due slot without a candidate goes to the sampler.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from satadvisor.search.record import Candidate, TrialRecord, searched_key

#: At most this fraction of a study's budget goes to rule moves.
RULE_SHARE = Fraction(1, 3)  # exact: 12 × 1/3 must be 4, not 3.9999…
#: Objective name → +1 when maximised, −1 when minimised (fields of the trial record).
SENSE = {"accuracy": 1.0, "macs": -1.0, "params": -1.0}
#: Reason prefix of a trial the pruner stopped because its profile settled with a tail.
TAIL_HANDOFF = "settled with a tail"

Numbered = tuple[int, TrialRecord]


@dataclass(frozen=True)
class Move:
    """The rule move chosen for the next trial: the candidate and the trial it came from."""

    candidate: Candidate
    parent: int


def startup_trials(budget: int) -> int:
    """Random (startup) trials of the TPE sampler for a study of ``budget`` trials."""
    return max(3, budget // 4)


def rule_cap(budget: int) -> int:
    """The most rule moves a study of ``budget`` trials may run (the baseline is not one)."""
    return int(budget * RULE_SHARE)


def front_ranks(trials: Sequence[Numbered], objectives: Sequence[str]) -> dict[int, int]:
    """Trial number → non-domination rank of the completed trials (0 = the proxy front).

    Objectives are read from the records (accuracy maximised, MACs and params minimised);
    trials lacking one, and trials whose proxy did not learn, are left out.
    """
    points = {}
    for number, rec in trials:
        if rec.status != "completed":
            continue
        values = [getattr(rec, name) for name in objectives]
        if all(v is not None for v in values):
            points[number] = tuple(
                SENSE[n] * float(v) for n, v in zip(objectives, values, strict=True)
            )
    ranks: dict[int, int] = {}
    rank = 0
    left = dict(points)
    while left:
        front = [n for n, p in left.items() if not any(dominates(q, p) for q in left.values())]
        for n in front:
            ranks[n] = rank
            del left[n]
        rank += 1
    return ranks


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` at least as good as ``b`` everywhere and better somewhere (all maximised)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def handed_off(rec: TrialRecord) -> bool:
    return rec.status == "pruned" and (rec.reason or "").startswith(TAIL_HANDOFF)


def slot_due(trials: Sequence[Numbered], *, budget: int, handoff: bool) -> bool:
    """Whether the next trial is a rule slot (see the module docstring)."""
    cap = rule_cap(budget)
    counted = [rec for _, rec in trials if rec.counts]
    position = len(counted)  # the next trial's place in the budget (baseline: 0)
    rules = sum(1 for rec in counted if rec.is_rule)
    if rules >= cap or position >= budget:
        return False
    start = 1 + startup_trials(budget)
    if position < start:
        return False
    if handoff:
        return True
    # Spread the cap evenly over positions start .. budget-1: rules/cap ≤ elapsed/span.
    span = max(1, budget - start)
    return rules * span <= (position - start) * cap


def candidates_of(rec: TrialRecord) -> list[Candidate]:
    """The rule candidates of a trial; none from a proxy that did not learn."""
    if rec.learned is not True:
        return []
    return list(rec.candidates)


def next_candidate(
    trials: Sequence[Numbered],
    *,
    names: Iterable[str],
    budget: int,
    objectives: Sequence[str] = ("accuracy", "macs"),
) -> Move | None:
    """The rule move the next trial should run, or None (the sampler's turn, or none left).

    Only configurations no counted trial ran qualify (``names``: the searched knobs).
    """
    names = list(names)
    known = known_keys_of(trials, names)
    by_number = dict(trials)
    ranks = front_ranks(trials, objectives)
    pool = []
    for number, rec in trials:
        handoff = handed_off(rec)
        rank = -1 if handoff else ranks.get(number)
        if rank is None or rank > 0:
            continue
        parent_macs = by_number[number].macs or (rec.prior.macs if rec.prior else None)
        for cand in candidates_of(rec):
            key = searched_key(cand.params, names)
            if key in known:
                continue
            ratio = _macs_ratio(cand.macs, parent_macs)
            pool.append(((rank, ratio >= 1.0, ratio, number, key), Move(cand, number)))
    if not pool:
        return None
    best = min(pool, key=lambda item: item[0])
    if not slot_due(trials, budget=budget, handoff=best[0][0] < 0):
        return None
    return best[1]


def known_keys_of(trials: Sequence[Numbered], names: list[str]) -> set[str]:
    return {searched_key(rec.knobs, names) for _, rec in trials if rec.counts and rec.knobs}


def _macs_ratio(macs: int | None, parent_macs: int | None) -> float:
    """Candidate MACs / parent MACs; 1.0 (no expected gain) when either is unknown."""
    if macs is None or not parent_macs:
        return 1.0
    return float(macs) / float(parent_macs)


__all__ = [
    "RULE_SHARE",
    "Move",
    "candidates_of",
    "front_ranks",
    "known_keys_of",
    "next_candidate",
    "rule_cap",
    "slot_due",
    "startup_trials",
]
