"""Early stopping from the saturation profile and the front, for one or several objectives.

Optuna's pruners read ``trial.report`` values, which multi-objective studies cannot have.
:class:`SaturationPruner` is an Optuna pruner (``BasePruner.prune(study, trial)``) that reads
the trial's record instead (:mod:`.record`: the worker writes one :class:`EpochPoint` per
epoch — validation accuracy, whether the proxy has learned, whether the profile settled, its
tail), so it works with any number of objectives. After an epoch (not the last) it stops a
trial when

1. **its profile settled with a tail** (at least :attr:`min_epochs` epochs; see
   :func:`satadvisor.trust.settling`): the layers that will carry no information are known
   and will not change; the rest of the proxy would only measure a configuration the rules
   already want to shorten. The trial ends as pruned and hands its tail-removed configuration
   to the sampler (:mod:`.policy` runs hand-offs first);
2. **it cannot reach the front**: a completed trial that costs no more (every cost objective)
   already ended more accurate than this one can end, even if it gained the most that any
   completed trial gained over its remaining epochs. Needs :attr:`startup` completed trials
   with a recorded curve.

A proxy that has not learned (yet) is never stopped early: it ends and is judged as such.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.pruners import BasePruner
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from satadvisor.search.policy import TAIL_HANDOFF
from satadvisor.search.record import TrialRecord


class SaturationPruner(BasePruner):
    """See the module docstring."""

    def __init__(
        self,
        *,
        objectives: Sequence[str] = ("accuracy", "macs"),
        min_epochs: int = 2,
        startup: int = 3,
        tail: bool = True,
        dominated: bool = True,
    ) -> None:
        self.costs = [o for o in objectives if o != "accuracy"]
        self.min_epochs = min_epochs
        self.startup = startup
        self.tail = tail
        self.dominated = dominated

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        return self.reason(study, trial) is not None

    def reason(self, study: Study, trial: FrozenTrial) -> str | None:
        """Why ``trial`` should stop now (None: go on)."""
        return self.decide(study, trial.number, TrialRecord.of(trial))

    def decide(self, study: Study, number: int, rec: TrialRecord) -> str | None:
        """Why trial ``number``, whose record so far is ``rec``, should stop now (None: go on).
        The worker calls this with the record it just wrote, without reading it back."""
        if not rec.progress:
            return None
        last = rec.progress[-1]
        if not last.learned:
            return None
        if self.tail and last.settled and last.tail and last.epoch >= self.min_epochs:
            return (
                f"{TAIL_HANDOFF} of {len(last.tail)} layer(s) after epoch {last.epoch}; "
                "its tail-removed configuration runs next"
            )
        if self.dominated:
            return self._dominated(study, number, rec)
        return None

    def _dominated(self, study: Study, number: int, rec: TrialRecord) -> str | None:
        epoch = rec.progress[-1].epoch
        accuracy = rec.progress[-1].accuracy
        done = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            other = TrialRecord.of(t)
            if t.number == number or other.status != "completed" or other.accuracy is None:
                continue
            curve = {p.epoch: p.accuracy for p in other.progress}
            if epoch in curve and other.epochs > epoch:
                done.append((t.number, other, other.accuracy - curve[epoch]))
        if len(done) < self.startup:
            return None
        gain = max(0.0, max(g for _, _, g in done))
        best = accuracy + gain
        for n, other, _ in done:
            cheaper = all(
                getattr(other, c) is not None
                and getattr(rec, c) is not None
                and getattr(other, c) <= getattr(rec, c)
                for c in self.costs
            )
            assert other.accuracy is not None
            if cheaper and other.accuracy > best:
                return (
                    f"dominated after epoch {epoch}: trial {n} costs no more and ended at "
                    f"{other.accuracy:.3f}, above this one's {accuracy:.3f} plus the largest "
                    f"gain seen over the remaining epochs ({gain:.3f})"
                )
        return None
