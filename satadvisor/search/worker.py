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
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
import sqlalchemy.exc
import torch
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from satadvisor import spec as spec_mod
from satadvisor._flags import flag
from satadvisor.config import TrainConfig
from satadvisor.errors import DatasetError, SatAdvisorError, StorageError
from satadvisor.search._signals import checkpoint, deferred_interrupts
from satadvisor.search.prior import Priors
from satadvisor.search.pruner import SaturationPruner
from satadvisor.search.record import (
    KEY,
    Candidate,
    EpochPoint,
    Owner,
    TrialRecord,
    counted,
    known_keys,
    searched_key,
)
from satadvisor.search.sampler import StudySampler
from satadvisor.search.space import SearchSpace
from satadvisor.search.storage import open_storage, pid_alive
from satadvisor.search.strategies import get_strategy, strategy_names

OBJECTIVES = {"accuracy": "maximize", "macs": "minimize", "params": "minimize"}
#: The built-in strategies (:mod:`satadvisor.search.strategies`; more can be registered there).
STRATEGIES = strategy_names()
#: Seconds a trial may run without a record before its worker is taken for dead (a record is
#: written right after the draw, but several workers starting at once on a loaded machine delay
#: it: benchmarks/RESULTS.md, "Search workers"); until then other workers wait for it.
DRAW_GRACE = 60.0


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


def _storage_error(exc: BaseException) -> bool:
    """An error of the storage itself: SQLAlchemy's (wrapped or not by Optuna), or a disk that
    is full or read-only (a journal file's append) — also as the cause or context of what
    escaped (Optuna's own "Should not reach" after a failed journal write)."""
    return _storage_cause(exc) is not None


def _storage_cause(exc: BaseException) -> BaseException | None:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(
            seen, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)
        ):
            return seen
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def storage_writes() -> Iterator[None]:
    """A storage that stops taking writes (a full disk, a lost server) ends the command with
    one StorageError: what is stored stays, and the rerun resumes from it."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        cause = _storage_cause(exc)
        if cause is None:
            raise
        raise StorageError(
            f"the study's storage stopped taking writes ({_reason(cause)}); free disk space or "
            "check the database server, then rerun the same command to resume"
        ) from exc


class TrialFailed(Exception):
    """Raised by the objective for a trial that failed for a reason of its own (recorded)."""


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


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step)
    assert isinstance(dist, optuna.distributions.CategoricalDistribution)
    return trial.suggest_categorical(name, dist.choices)


def make_sampler(settings: SearchSettings, worker_index: int, prior: Any) -> StudySampler:
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
    return get_strategy(settings.strategy).pruner(settings.objectives)


class Worker:
    """Runs trials of one study in this process (see the module docstring)."""

    def __init__(
        self,
        settings: SearchSettings,
        *,
        worker_index: int = 0,
        device: str | None = None,
        on_trial: Callable[[TrialEvent], None] | None = None,
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
        self.on_trial = on_trial
        self._data: dict[int, Any] = {}
        self._epoch_time: dict[int, float] = {}  # trial number -> mean seconds of its epochs
        self._live = TrialRecord(knobs={})  # the running trial's record, epoch by epoch
        self._host = socket.gethostname()
        self._pid = os.getpid()

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
                if not _storage_error(exc):
                    raise
                # The storage stopped taking writes (a full disk, a lost server): every trial
                # would fail alike. What is stored stays; the rerun resumes from it.
                raise StorageError(
                    f"the study's storage stopped taking writes ({_reason(exc)}); free disk "
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

    # ---------------------------------------------------------------- one trial
    def _objective(self, trial: optuna.Trial) -> list[float]:
        checkpoint()
        params = {n: suggest(trial, n, d) for n, d in self.space.distributions().items()}
        proposal = self.sampler.proposal(trial.number)
        knobs = self.space.configuration(params)
        prior = proposal.prior if proposal is not None else self.priors(params)
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
            if _storage_error(exc):
                raise  # not this trial's fault (see run): recording a failure would fail too
            reason = _reason(exc)
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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SatAdvisorError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _event_state(rec: TrialRecord) -> str:
    return {
        "completed": "complete",
        "pruned": "pruned",
        "not_learned": "did not learn",
    }.get(rec.status, "failed")


def settle(study: optuna.Study, number: int) -> list[FrozenTrial]:
    """The study's trials, read again while an earlier trial, drawn moments ago, has not
    written its record yet (it may hold the same configuration or the last budget slot)."""
    while True:
        trials = study.get_trials(deepcopy=False)
        now = time.time()
        drawing = [
            t
            for t in trials
            if t.number < number
            and t.state == TrialState.RUNNING
            and KEY not in t.user_attrs
            and t.datetime_start is not None
            and now - t.datetime_start.timestamp() < DRAW_GRACE  # alive, see reap_dead
        ]
        if not drawing:
            return trials
        time.sleep(0.05)


def reap_dead(study: optuna.Study, *, now: float | None = None) -> list[int]:
    """Fail the running trials whose worker is gone, so they stop counting and run again.

    Gone: its owner ran on this machine and its process no longer exists, or it has no record
    :data:`DRAW_GRACE` seconds after it was drawn (killed between the draw and the record).
    Trials of other machines are left to the storage's heartbeat. Returns the numbers.
    """
    now = time.time() if now is None else now
    host = socket.gethostname()
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = t.datetime_start.timestamp() if t.datetime_start is not None else now
        stored = t.user_attrs.get(KEY)
        rec = TrialRecord.of(t) if isinstance(stored, Mapping) else None
        if rec is not None and rec.owner is not None:
            dead = rec.owner.host == host and not pid_alive(rec.owner.pid)
        elif rec is not None:  # its final record written, then its worker died before the tell
            dead = now - (started + (rec.wall_time or 0.0)) > DRAW_GRACE
        else:
            dead = now - started > DRAW_GRACE
        if not dead:
            continue
        with contextlib.suppress(Exception):  # another worker reaped it first
            _tell_finished(study, t.number, rec)
            reaped.append(t.number)
    return reaped


def _tell_finished(study: optuna.Study, number: int, rec: TrialRecord | None) -> None:
    """Tell a dead worker's trial as its final record says: a completed one with its measured
    values (it stays on the front), a pruned one as pruned; anything else failed (it runs
    again)."""
    if rec is not None and rec.owner is None and rec.status == "completed":
        names = study.user_attrs.get("objectives") or ()
        values = [getattr(rec, str(name), None) for name in names]
        floats = [float(v) for v in values if isinstance(v, int | float) and v == v]
        if names and len(floats) == len(values):
            study.tell(number, floats, skip_if_finished=True)
            return
    if rec is not None and rec.owner is None and rec.status in ("pruned", "not_learned"):
        study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        return
    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def _step_checkpoint(progress: Any) -> None:
    """Called after every training step: where a deferred Ctrl-C stops the run."""
    checkpoint()


def _release_memory() -> None:
    """Free what a failed run left on the GPU (frames kept alive by reference cycles first)."""
    gc.collect()
    torch.cuda.empty_cache()


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
    "OBJECTIVES",
    "STRATEGIES",
    "SearchSettings",
    "TrialEvent",
    "Worker",
    "worker_main",
]
