"""The study's sampler: the baseline first, retries, rule moves, then a base sampler's draws
filtered by what is known before training.

:class:`StudySampler` is an ordinary Optuna sampler (``BaseSampler``'s public interface: it
proposes every searched knob jointly in ``sample_relative``) wrapped around a base sampler —
multivariate TPE for ``guided`` and ``tpe``, Optuna's ``RandomSampler`` for ``random``. For
each new trial it proposes, in this order:

1. **a retry**: the configuration of a trial stopped from outside (Ctrl-C, a killed or stale
   worker) that was not run again yet, so a rerun resumes to the same set of trials;
2. **the baseline**, when no trial ran it yet (every strategy starts from the user's model);
3. ``guided`` only — **a rule move** (:mod:`.policy`): a tail-removed configuration handed
   over by the pruner, or a recommendation of a trial on the proxy front;
4. **a draw of the base sampler**, redrawn (up to :data:`MAX_DRAWS` times) while it repeats a
   configuration already run, cannot be built, or — ``guided`` — has layers the receptive-field
   analysis calls unproductive at its resolution (:mod:`.prior`; such a configuration is
   dominated by the same one without those layers, which costs less and sees as much). The
   first draw that passes is taken; if none does, the best of them (unseen, buildable, fewest
   unproductive layers) — and when every draw repeated a configuration that ran, uniform draws
   among those not run yet (:data:`RANDOM_DRAWS`).

Why each trial was proposed is kept in :meth:`proposal` for the worker to record. Nothing is
enqueued — not the baseline, not a retry — so no waiting trial can be popped by two workers at
once: SQLite cannot prevent that (its ``SELECT … FOR UPDATE`` is a plain read, so two workers
both see the trial waiting and both run it). That is also why a stale trial is retried here
rather than by Optuna's ``RetryFailedTrialCallback``, which enqueues a copy; Optuna's heartbeat
still decides which trials are stale. A trial is never told as failed for being a duplicate.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from satadvisor.search import policy
from satadvisor.search.record import Prior, TrialRecord, searched_key
from satadvisor.search.space import SearchSpace

#: Draws of the base sampler per trial before the best of them is taken.
MAX_DRAWS = 12
#: Uniform draws among the configurations not run yet, when the base sampler's all ran.
RANDOM_DRAWS = 200


@dataclass(frozen=True)
class Proposal:
    """Why the sampler proposed a trial's configuration."""

    params: dict[str, Any]
    source: str
    parent: int | None = None
    retry_of: int | None = None
    prior: Prior | None = None


class StudySampler(BaseSampler):
    """See the module docstring. ``guided`` switches on rule moves and the receptive-field
    filter; ``prior`` maps searched params to their :class:`Prior` (None: not computed)."""

    def __init__(
        self,
        base: BaseSampler,
        *,
        space: SearchSpace,
        baseline: dict[str, Any],
        budget: int,
        objectives: Sequence[str],
        guided: bool,
        prior: Callable[[dict[str, Any]], Prior] | None = None,
        seed: int | None = None,
    ) -> None:
        self.base = base
        self.space = space
        self.baseline = space.params_of(baseline)
        self.budget = budget
        self.objectives = tuple(objectives)
        self.guided = guided
        self.prior = prior
        self._rng = random.Random(seed)
        self._proposals: dict[int, Proposal] = {}

    # ---------------------------------------------------------------- Optuna's interface
    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.space.distributions()

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        proposal = self._propose(study, trial)
        self._proposals[trial.number] = proposal
        return {k: v for k, v in proposal.params.items() if k in search_space}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng.seed()

    # ---------------------------------------------------------------- proposals
    def proposal(self, number: int) -> Proposal | None:
        """Why trial ``number`` (drawn by this sampler) got its configuration."""
        return self._proposals.get(number)

    def _propose(self, study: Study, trial: FrozenTrial) -> Proposal:
        trials = [
            (t.number, TrialRecord.of(t))
            for t in study.get_trials(deepcopy=False)
            if t.number != trial.number and t.state != TrialState.WAITING
        ]
        names = list(self.space.choices)
        known = policy.known_keys_of(trials, names)
        retry = self._retry(trials, known, names)
        if retry is not None:
            return retry
        if searched_key(self.baseline, names) not in known and not any(
            rec.source == "baseline" and rec.counts for _, rec in trials
        ):
            return Proposal(dict(self.baseline), "baseline", prior=self._prior(self.baseline))
        if self.guided:
            move = policy.next_candidate(
                trials, names=names, budget=self.budget, objectives=self.objectives
            )
            if move is not None:
                params = self.space.params_of(move.candidate.params)
                return Proposal(
                    params, move.candidate.source, parent=move.parent, prior=self._prior(params)
                )
        return self._draw(study, trial, known, names)

    def _retry(
        self, trials: Sequence[tuple[int, TrialRecord]], known: set[str], names: list[str]
    ) -> Proposal | None:
        for number, rec in trials:
            if rec.status != "interrupted" or not rec.knobs:
                continue
            params = self.space.params_of(rec.knobs)
            if len(params) != len(names) or searched_key(params, names) in known:
                continue
            return Proposal(
                params, rec.source, parent=rec.parent, retry_of=number, prior=self._prior(params)
            )
        return None

    def _draw(
        self, study: Study, trial: FrozenTrial, known: set[str], names: list[str]
    ) -> Proposal:
        space = self.base.infer_relative_search_space(study, trial)
        tried: list[tuple[tuple[int, int, int], dict[str, Any], Prior | None]] = []
        dists = self.space.distributions()
        for _ in range(MAX_DRAWS):
            params = dict(self.base.sample_relative(study, trial, space)) if space else {}
            for name in names:  # what the base draws one by one (TPE's startup, RandomSampler)
                if name not in params:
                    params[name] = self.base.sample_independent(study, trial, name, dists[name])
            params = {n: params[n] for n in names}
            prior = self._prior(params)
            seen = searched_key(params, names) in known
            unbuildable = prior is not None and not prior.buildable
            wasteful = len(prior.unproductive) if (self.guided and prior is not None) else 0
            score = (int(seen), int(unbuildable), wasteful)
            if score == (0, 0, 0):
                return Proposal(params, "sampler", prior=prior)
            tried.append((score, params, prior))
            if len(known) >= self.space.size:
                break  # every configuration ran: nothing unseen to find
        # The base sampler keeps proposing what ran (TPE concentrates on a small space): a
        # uniform draw among the rest instead. (Only then: when its draws are new but carry
        # unproductive layers, the fewest of them is TPE's proposal to take.)
        repeats = all(score[0] for score, _, _ in tried)
        for _ in range(RANDOM_DRAWS if repeats and len(known) < self.space.size else 0):
            params = self.space.random_params(self._rng)
            if searched_key(params, names) in known:
                continue
            prior = self._prior(params)
            unbuildable = prior is not None and not prior.buildable
            wasteful = len(prior.unproductive) if (self.guided and prior is not None) else 0
            tried.append(((0, int(unbuildable), wasteful), params, prior))
            if not unbuildable and not wasteful:
                break
        _, params, prior = min(tried, key=lambda item: item[0])
        return Proposal(params, "sampler", prior=prior)

    def _prior(self, params: dict[str, Any]) -> Prior | None:
        return None if self.prior is None else self.prior(params)
