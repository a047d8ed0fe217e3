"""One search worker: runs trials of the shared study with ``study.optimize`` until the budget
is spent.

Every worker — in this process, a local subprocess (``--workers``), or the same command on
another machine — runs this loop against the same storage, with Optuna's own machinery:

- **sampler** :class:`~satadvisor.search.sampler.StudySampler` (baseline, retries, rule moves,
  base-sampler draws filtered by the training-free prior);
- **pruner** :class:`~satadvisor.search.pruner.SaturationPruner` (``guided``), asked after
  every proxy epoch from the trial's record, so it works with several objectives;
- **budget**: a callback after every trial stops the study (``study.stop()``) once the
  counted trials reach the budget. Optuna's ``MaxTrialsCallback`` counts trials by state, but a
  trial interrupted from outside is failed *and* does not count (its configuration runs
  again), so the count reads the records (:mod:`.record`); a trial drawn by a worker while
  another's draw took the last slot ends as pruned (``over_budget``) without running;
- **stale workers**: on RDB storages Optuna's heartbeat marks the trials of a worker that
  stopped beating as failed (``fail_stale_trials``, at each trial's start); on any storage a
  trial whose owner ran on this machine and is gone is failed the same way before the loop
  starts, and so is a trial whose worker died between drawing it and writing its record. The
  sampler then proposes their configurations again.

A trial whose proxy did not learn (:mod:`satadvisor.trust`) is recorded with its measurements
and status ``not_learned``, counts against the budget (it ran), supplies no rule candidates
and is told as pruned (never complete), so it stays out of the Pareto front, the validation
picks and the recommendations. A trial that raises — satadvisor's own errors and anything
else its model raises — is recorded with the reason and told as failed, and the search goes
on; only a dataset that cannot be read stops the search (every trial would fail alike).

This module holds the loop (:class:`Worker`) and a local worker process's entry point
(:func:`worker_main`); the rest lives next to it and is re-exported here: the settings and
events (:mod:`.settings`), one trial (:mod:`.objective`), stale workers and ownership
(:mod:`.ownership`), and failures of a trial or the storage (:mod:`.failures`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from satadvisor.errors import StorageError
from satadvisor.search._signals import checkpoint, deferred_interrupts
from satadvisor.search.failures import TrialFailed, failure_reason, storage_error, storage_writes
from satadvisor.search.objective import TrialObjective, make_pruner, make_sampler, suggest
from satadvisor.search.ownership import DRAW_GRACE, reap_dead, settle
from satadvisor.search.record import TrialRecord, counted, known_keys
from satadvisor.search.settings import OBJECTIVES, STRATEGIES, SearchSettings, TrialEvent


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial log lines off while the search runs (the CLI prints its own), and
    back to what they were afterwards."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


class Worker(TrialObjective):
    """Runs trials of one study in this process (see the module docstring); each trial is
    :class:`~.objective.TrialObjective`'s."""

    def __init__(
        self,
        settings: SearchSettings,
        *,
        worker_index: int = 0,
        device: str | None = None,
        on_trial: Callable[[TrialEvent], None] | None = None,
    ) -> None:
        super().__init__(settings, worker_index=worker_index, device=device)
        self.on_trial = on_trial

    # ---------------------------------------------------------------- loop
    def run(self) -> int:
        """Run trials until the budget (or timeout, or the space) is spent; returns #run."""
        with deferred_interrupts(), quiet_optuna():
            reap_dead(self.study)
            if self._spent(self.study.get_trials(deepcopy=False)):
                return 0
            before = len(self.study.get_trials(deepcopy=False))
            try:
                self.study.optimize(
                    self._objective,
                    callbacks=[self._after],
                    catch=(TrialFailed,),
                    timeout=self.settings.timeout,
                )
            except Exception as exc:
                if not storage_error(exc):
                    raise
                # The storage stopped taking writes (a full disk, a lost server): every trial
                # would fail alike. What is stored stays; the rerun resumes from it.
                raise StorageError(
                    f"the study's storage stopped taking writes ({failure_reason(exc)}); free disk "
                    "space or check the database server, then rerun the same command to resume"
                ) from exc
            checkpoint()
            return len(self.study.get_trials(deepcopy=False)) - before

    def _spent(self, trials: list[FrozenTrial]) -> bool:
        if len(counted(trials)) >= self.settings.budget:
            return True
        return len(known_keys(trials, self.space.choices)) >= self.space.size

    def _after(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """After every trial: report it, and stop when the budget or the space is spent."""
        trials = study.get_trials(deepcopy=False)
        rec = TrialRecord.of(trial)
        if self.on_trial is not None and rec.status not in ("duplicate", "over_budget"):
            self.on_trial(
                TrialEvent(
                    trial.number,
                    len(counted(trials)),
                    self.settings.budget,
                    _event_state(rec),
                    rec.knobs,
                    rec.accuracy,
                    rec.macs,
                    rec.source,
                    rec.reason if rec.status != "completed" else None,
                    rec.epochs,
                    rec.wall_time,
                    self._epoch_time.pop(trial.number, None),
                    *self._sizes(rec.knobs),
                )
            )
        if self._spent(trials):
            study.stop()
        checkpoint()

    def _sizes(self, knobs: dict[str, Any]) -> tuple[int | None, int | None]:
        """Training and validation images of the proxy data at the trial's resolution."""
        data = self._data.get(int(knobs.get("resolution") or 0))
        return (len(data.train), len(data.eval)) if data is not None else (None, None)


def _event_state(rec: TrialRecord) -> str:
    return {
        "completed": "complete",
        "pruned": "pruned",
        "not_learned": "did not learn",
    }.get(rec.status, "failed")


def worker_main(
    settings: SearchSettings, worker_index: int, device: str | None, threads: int
) -> None:
    """Entry point of a local worker process (``--workers``); Ctrl-C is recorded, then exits."""
    torch.set_num_threads(threads)
    try:
        Worker(settings, worker_index=worker_index, device=device).run()
    except KeyboardInterrupt:
        raise SystemExit(130) from None


__all__ = [
    "DRAW_GRACE",
    "OBJECTIVES",
    "STRATEGIES",
    "SearchSettings",
    "TrialEvent",
    "TrialFailed",
    "TrialObjective",
    "Worker",
    "make_pruner",
    "make_sampler",
    "quiet_optuna",
    "reap_dead",
    "settle",
    "storage_writes",
    "suggest",
    "worker_main",
]
