"""One proxy trial of the search, as Optuna's objective: draw a configuration, build and train
it with :func:`satadvisor.analyze` (recording every epoch and asking the pruner), and record
what it measured.

:class:`TrialObjective` holds what a worker's trials share (the model spec, the study with its
sampler and pruner, the loaded proxy data per resolution); :class:`~.worker.Worker` adds the
loop around it. A trial whose proxy did not learn is recorded and told as pruned; one that
raises is recorded with the reason and raises :class:`~.failures.TrialFailed`; a dataset that
cannot be read stops the study; out of GPU memory is retried once with half the batch size.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from dataclasses import replace
from typing import Any

import optuna
import torch
from optuna.distributions import BaseDistribution, IntDistribution

from satadvisor import spec as spec_mod
from satadvisor._flags import flag
from satadvisor.config import TrainConfig
from satadvisor.errors import DatasetError, SatAdvisorError
from satadvisor.search._signals import checkpoint
from satadvisor.search.failures import TrialFailed, failure_reason, storage_error
from satadvisor.search.ownership import settle
from satadvisor.search.prior import Priors
from satadvisor.search.pruner import SaturationPruner
from satadvisor.search.record import (
    KEY,
    Candidate,
    EpochPoint,
    Owner,
    TrialRecord,
    counted,
    searched_key,
)
from satadvisor.search.sampler import StudySampler
from satadvisor.search.settings import SearchSettings
from satadvisor.search.storage import open_storage
from satadvisor.search.strategies import get_strategy


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """The trial's value of one knob of the space, asked through Optuna's public API."""
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step)
    assert isinstance(dist, optuna.distributions.CategoricalDistribution)
    return trial.suggest_categorical(name, dist.choices)


def make_sampler(settings: SearchSettings, worker_index: int, prior: Any) -> StudySampler:
    """The study sampler of one worker: its strategy's base sampler, seeded per worker."""
    seed = settings.train.seed * 1000 + worker_index
    strategy = get_strategy(settings.strategy)
    return StudySampler(
        strategy.base(seed, settings.budget),
        space=settings.space,
        baseline=settings.baseline,
        budget=settings.budget,
        objectives=settings.objectives,
        guided=strategy.guided,
        prior=prior,
        seed=seed,
    )


def make_pruner(settings: SearchSettings) -> optuna.pruners.BasePruner:
    """The pruner of the settings' strategy."""
    return get_strategy(settings.strategy).pruner(settings.objectives)


class TrialObjective:
    """Runs one proxy trial of the study per call of :meth:`_objective` (see the module
    docstring); the state its trials share is set up here."""

    def __init__(
        self, settings: SearchSettings, *, worker_index: int = 0, device: str | None = None
    ) -> None:
        from satadvisor import data as data_mod

        self.settings = settings
        self.space = settings.space
        self.spec = spec_mod.load(settings.model)
        self.config = settings.train if device is None else replace(settings.train, device=device)
        info = data_mod.dataset_info(settings.dataset, data_dir=settings.data_dir)
        self.priors = Priors(
            self.spec, self.space, num_classes=info.num_classes, in_channels=info.in_channels
        )
        self.sampler = make_sampler(settings, worker_index, self.priors)
        self.pruner = make_pruner(settings)
        self.study = optuna.load_study(
            study_name=settings.study_name,
            storage=open_storage(settings.storage_url, heartbeat=True),
            sampler=self.sampler,
            pruner=self.pruner,
        )
        self._data: dict[int, Any] = {}
        self._epoch_time: dict[int, float] = {}  # trial number -> mean seconds of its epochs
        self._live = TrialRecord(knobs={})  # the running trial's record, epoch by epoch
        self._host = socket.gethostname()
        self._pid = os.getpid()

    # ---------------------------------------------------------------- one trial
    def _objective(self, trial: optuna.Trial) -> list[float]:
        checkpoint()
        params = {n: suggest(trial, n, d) for n, d in self.space.distributions().items()}
        proposal = self.sampler.proposal(trial.number)
        knobs = self.space.configuration(params)
        prior = self.priors(params, feasible=True)  # the screened one, with its feasible range
        rec = TrialRecord(
            knobs=knobs,
            source=proposal.source if proposal is not None else "sampler",
            parent=proposal.parent if proposal is not None else None,
            retry_of=proposal.retry_of if proposal is not None else None,
            prior=prior,
            macs=prior.macs if prior is not None else None,
            params=prior.params if prior is not None else None,
            owner=Owner(self._host, self._pid),
        )
        _write(trial, rec)
        self._check_slot(trial, rec)
        started = time.time()
        self._live = rec
        try:
            analysis = self._analyze_with_retry(trial, knobs, rec)
            rec = self._live  # with the epochs recorded meanwhile
            # for the ETA only: never a reason for a trial to fail
            epochs = analysis.run.epochs if analysis.run is not None else []
            seconds = [s for e in epochs if isinstance(s := getattr(e, "seconds", None), float)]
            if seconds:
                self._epoch_time[trial.number] = sum(seconds) / len(seconds)
        except KeyboardInterrupt:
            _write(trial, self._live.with_(status="interrupted", reason="Ctrl-C", owner=None))
            raise
        except DatasetError as exc:
            # Not this configuration's fault: every trial would fail alike. Stop the study
            # (the trial does not count and runs again) and let the user fix the data.
            _write(trial, self._live.with_(status="interrupted", reason=str(exc), owner=None))
            raise
        except Exception as exc:  # the model's own error, or anything it raised
            if storage_error(exc):
                raise  # not this trial's fault (see run): recording a failure would fail too
            reason = failure_reason(exc)
            _write(trial, _finished(self._live, "failed", reason, started))  # epochs kept
            raise TrialFailed(reason) from exc
        return self._finish(trial, rec, analysis, started)

    def _check_slot(self, trial: optuna.Trial, rec: TrialRecord) -> None:
        """A draw another worker made at the same moment: over budget or the same
        configuration. Ends the trial as pruned (not counted) instead of running it."""
        trials = settle(self.study, trial.number)
        below = [t for t in counted(trials) if t.number < trial.number]
        names = list(self.space.choices)
        mine = searched_key(rec.knobs, names)
        if len(below) >= self.settings.budget:
            _write(
                trial, rec.with_(status="over_budget", reason="the budget was spent", owner=None)
            )
            self.study.stop()
            raise optuna.TrialPruned("over budget")
        if any(searched_key(TrialRecord.of(t).knobs, names) == mine for t in below):
            _write(trial, rec.with_(status="duplicate", reason="drawn twice at once", owner=None))
            raise optuna.TrialPruned("duplicate")

    def _finish(
        self, trial: optuna.Trial, rec: TrialRecord, analysis: Any, started: float
    ) -> list[float]:
        from satadvisor.search.summary import evenness

        run = analysis.run
        rec = rec.with_(
            accuracy=run.accuracy,
            macs=analysis.macs,
            params=analysis.params,
            epochs=len(run.epochs),
            saturation={s.name: round(s.saturation, 4) for s in analysis.profile},
            tail=tuple(analysis.tail),
            unproductive=tuple(analysis.receptive_field.unproductive),
            evenness=evenness(analysis.profile),
            findings=tuple(str(f.kind) for f in analysis.findings),
            learned=run.learned,
            learning=run.learning.to_dict() if run.learning is not None else None,
            device=run.device,
        )
        if run.status == "diverged":
            _write(trial, _finished(rec, "diverged", run.reason, started))
            raise TrialFailed(run.reason or "diverged")
        if run.status == "not_learned":
            # Measured, but nothing rests on it: no rule candidates, no objective values.
            reason = run.reason or "the proxy did not learn"
            _write(trial, _finished(rec, "not_learned", reason, started))
            raise optuna.TrialPruned(reason)
        if get_strategy(self.settings.strategy).guided and run.learned:
            # (a run the pruner stopped below the learned margin proposes nothing either)
            rec = rec.with_(candidates=tuple(self._rule_candidates(rec.knobs, analysis)))
        if run.status == "pruned":
            _write(trial, _finished(rec, "pruned", run.reason, started))
            raise optuna.TrialPruned(run.reason)
        _write(trial, _finished(rec, "completed", None, started))
        return [float(getattr(rec, name)) for name in self.settings.objectives]

    # ---------------------------------------------------------------- training
    def _data_for(self, resolution: int) -> Any:
        from satadvisor import data as data_mod
        from satadvisor._env import resolve_device

        if resolution not in self._data:
            self._data[resolution] = data_mod.load(
                self.settings.dataset,
                resolution=resolution,
                data_dir=self.settings.data_dir,
                download=self.settings.download,
                full=False,
                val_fraction=self.config.val_fraction,
                seed=self.config.seed,
                device=resolve_device(self.config.device),
                subset=self.settings.subset,
            )
        return self._data[resolution]

    def _analyze(
        self, trial: optuna.Trial, knobs: dict[str, Any], config: TrainConfig, rec: TrialRecord
    ) -> Any:
        from satadvisor import rules, trust
        from satadvisor.advisor import analyze

        self._live = rec

        def watch(result: Any) -> str | None:
            """After every epoch: record the epoch, then ask the pruner (not after the last)."""
            checkpoint()
            history = [ep.get("train", []) for ep in result.saturation]
            settling = trust.settling(history, pattern=rules.pattern) if history else None
            point = EpochPoint(
                epoch=len(result.epochs),
                accuracy=float(result.epochs[-1].eval_accuracy),
                learned=bool(result.learned),
                settled=bool(settling is not None and settling.settled),
                tail=tuple(rules.pattern(history[-1])[0]) if history else (),
            )
            current = self._live.with_(progress=(*self._live.progress, point), epochs=point.epoch)
            self._live = current
            _write(trial, current)
            if point.epoch >= config.epochs or not isinstance(self.pruner, SaturationPruner):
                return None
            return self.pruner.decide(self.study, trial.number, current)

        return analyze(
            self.spec,
            knobs=knobs,
            data=self._data_for(int(knobs["resolution"])),
            config=config,
            name=f"{self.settings.study_name}-trial{trial.number}",
            stop=watch,
            progress=_step_checkpoint,
        )

    def _analyze_with_retry(
        self, trial: optuna.Trial, knobs: dict[str, Any], rec: TrialRecord
    ) -> Any:
        """Out of GPU memory: retry once with half the batch size, then fail with the reason."""
        try:
            return self._analyze(trial, knobs, self.config, rec)
        except torch.cuda.OutOfMemoryError:
            pass  # retried below: inside this block the traceback still holds the run's tensors
        _release_memory()
        half = max(1, self.config.batch_size // 2)
        try:
            return self._analyze(trial, knobs, replace(self.config, batch_size=half), rec)
        except torch.cuda.OutOfMemoryError:
            pass
        _release_memory()
        raise SatAdvisorError(
            f"out of GPU memory twice (batch size {self.config.batch_size}, then {half}); "
            f"pass a smaller {flag('batch_size')} or {flag('resolution')}"
        )

    def _rule_candidates(self, knobs: dict[str, Any], analysis: Any) -> list[Candidate]:
        """The analysis's recommendations snapped into the space, with their MACs (the
        sampler picks among them later, see :mod:`.policy`)."""
        out: list[Candidate] = []
        names = list(self.space.choices)
        seen = {searched_key(self.space.snap(knobs), names)}
        for rec in analysis.recommendations:
            if not rec.changes or getattr(rec, "model", None) is not None:  # another model's knobs
                continue
            params = self.space.snap({**knobs, **rec.changes})
            key = searched_key(params, names)
            if key in seen:
                continue
            seen.add(key)
            prior = self.priors(params)
            if not prior.buildable:
                continue
            out.append(Candidate(params, str(rec.kind), prior.macs))
        return out


def _write(trial: optuna.Trial, rec: TrialRecord) -> None:
    trial.set_user_attr(KEY, rec.to_dict())


def _finished(rec: TrialRecord, status: Any, reason: str | None, started: float) -> TrialRecord:
    return rec.with_(status=status, reason=reason, wall_time=time.time() - started, owner=None)


def _step_checkpoint(progress: Any) -> None:
    """Called after every training step: where a deferred Ctrl-C stops the run."""
    checkpoint()


def _release_memory() -> None:
    """Free what a failed run left on the GPU (frames kept alive by reference cycles first)."""
    gc.collect()
    torch.cuda.empty_cache()


__all__ = ["TrialObjective", "make_pruner", "make_sampler", "suggest"]
