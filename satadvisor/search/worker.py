"""One search worker: draws trials from the shared study and runs them until the budget is spent.

Every worker — in this process, a local subprocess (``--workers``), or the same command on
another machine — runs this loop against the same storage. Budget, deduplication and the share
of rule trials are decided from the storage alone (trial numbers order the workers), so no
worker needs to talk to another. Which rule candidate runs when is :mod:`.policy`'s decision.

A trial whose proxy did not learn (:mod:`satadvisor.trust`: validation accuracy not significantly
above the majority-class rate, or a training loss that did not fall) is recorded with its
measurements and ``status`` ``"not_learned"``, counts against the budget (it ran), supplies no
rule candidates and is told to Optuna as :func:`not_learned_state` (never complete), so it stays
out of the Pareto front, the validation picks and the recommendations.
"""

from __future__ import annotations

import gc
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from satadvisor import spec as spec_mod
from satadvisor.config import TrainConfig
from satadvisor.errors import DatasetError, SatAdvisorError, StudyError
from satadvisor.search import policy
from satadvisor.search import trials as tr
from satadvisor.search._signals import checkpoint, deferred_interrupts
from satadvisor.search.space import SearchSpace
from satadvisor.search.storage import open_storage

OBJECTIVES = {"accuracy": "maximize", "macs": "minimize", "params": "minimize"}
STRATEGIES = ("hybrid", "rules", "tpe")
#: Consecutive duplicate draws after which a worker enqueues an unseen configuration instead.
MAX_DUPLICATE_DRAWS = 1


@dataclass(frozen=True)
class SearchSettings:
    """Everything a worker needs; plain data so it crosses process boundaries."""

    model: str | None
    study_name: str
    storage_url: str
    budget: int
    space: SearchSpace
    strategy: str = "hybrid"
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
    ``reason`` says which, and ``accuracy`` / ``macs`` are what it measured).
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


def make_sampler(settings: SearchSettings, worker_index: int) -> optuna.samplers.BaseSampler:
    seed = settings.train.seed * 1000 + worker_index
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        constant_liar=True,
        n_startup_trials=policy.startup_trials(settings.budget),
    )


def not_learned_state(n_objectives: int) -> TrialState:
    """The state a trial whose proxy did not learn is told with: never ``COMPLETE``.

    ``COMPLETE`` would need objective values, and a chance-level proxy at few MACs would sit on
    the Pareto front (``study.best_trials``) and among the validation picks. ``PRUNED`` is
    Optuna's state for a trial that ran but has no final values, and it keeps what TPE learns
    right: :class:`~optuna.samplers.TPESampler` fills its "good" (below) set with complete
    trials first and takes pruned ones only for the slots left (``_split_trials``), ranked by
    their last intermediate value. Without intermediate values (multi-objective studies cannot
    report them) a pruned trial ranks after every complete one (``_get_pruned_trial_score``
    gives ``(1, 0.0)``), so once ⌈10 % of the trials⌉ learned the not-learned configurations
    model the "bad" set and TPE steers away from them.

    - Single objective: ``PRUNED``; the worker has reported the proxy accuracy every epoch
      (``trial.report``), so TPE ranks them by it after the complete trials.
    - Several objectives, Optuna ≥ 5: ``PRUNED``. (When fewer complete trials than the
      below set exist, TPE 5 fills it with pruned ones, with uniform weights: a weak pull
      in a study that barely learns anything, where the report says so anyway.)
    - Several objectives, Optuna < 5 (3.5 – 4.x): ``FAIL``. Their multi-objective TPE weighs
      the below set by hypervolume from ``trial.values`` and raises on a pruned trial there
      (``TypeError``/``ValueError`` on ``None`` values, optuna/optuna#5260; Optuna says its
      pruning does not support multi-objective studies) — reproduced with 4.5.0 once
      fewer than ⌈10 % of the trials are complete. TPE ignores failed trials; the
      ``status`` attribute still tells them apart from real failures, and they still count
      (:func:`satadvisor.search.trials.counts`).
    """
    if n_objectives == 1 or _OPTUNA_MAJOR >= 5:
        return TrialState.PRUNED
    return TrialState.FAIL


_OPTUNA_MAJOR = int(optuna.__version__.split(".")[0])


def make_pruner(settings: SearchSettings) -> optuna.pruners.BasePruner:
    if len(settings.objectives) == 1:
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


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
        self.settings = settings
        self.space = settings.space
        self.spec = spec_mod.load(settings.model)
        self.config = settings.train if device is None else replace(settings.train, device=device)
        self.study = optuna.load_study(
            study_name=settings.study_name,
            storage=open_storage(settings.storage_url),
            sampler=make_sampler(settings, worker_index),
            pruner=make_pruner(settings),
        )
        self.on_trial = on_trial
        self._rng = random.Random(settings.train.seed * 7919 + worker_index)
        self._data: dict[int, Any] = {}

    # ---------------------------------------------------------------- loop
    def run(self) -> int:
        """Run trials until the budget (or timeout, or the rule queue) is spent; returns #run."""
        with deferred_interrupts():
            return self._run()

    def _run(self) -> int:
        deadline = time.time() + self.settings.timeout if self.settings.timeout else None
        ran = 0
        duplicates = 0
        while True:
            checkpoint()
            tr.reap_stale(self.study)
            trials = self.study.get_trials(deepcopy=False)
            if len(tr.counted(trials)) >= self.settings.budget:
                break
            if deadline is not None and time.time() >= deadline:
                break
            waiting = [t for t in trials if t.state == TrialState.WAITING]
            if not waiting and self._enqueue_rule_candidate(trials):
                continue  # drawn by the next ask (this worker's or another's)
            if self.settings.strategy == "rules" and not waiting:
                if any(t.state == TrialState.RUNNING for t in trials):
                    time.sleep(1.0)  # a running trial may still bring new candidates
                    continue
                break
            if len(tr.known_keys(trials)) >= self.space.size and not waiting:
                break  # every configuration of the space has been tried
            trial = self.study.ask(self.space.distributions())
            if not tr.claim(self.study, trial, pid=os.getpid()):
                continue  # another worker drew the same waiting trial first and runs it
            # Another worker's earlier draw may still be writing its parameters: read until
            # every earlier trial shows them, so a duplicate is caught by the later trial.
            trials = tr.settle(self.study, trial.number, len(self.space.choices))
            me = next(t for t in trials if t.number == trial.number)
            below = [t for t in tr.counted(trials) if t.number < trial.number]
            if len(below) >= self.settings.budget:
                self._skip(trial, "budget")
                break
            if tr.is_live_duplicate(me, trials):
                self._skip(trial, "duplicate")
                duplicates += 1
                if duplicates >= MAX_DUPLICATE_DRAWS and self.settings.strategy != "rules":
                    self._enqueue_unseen(trials)
                    duplicates = 0
                continue
            if self.settings.strategy == "rules" and "fixed_params" not in me.system_attrs:
                self._skip(trial, "not_queued")
                continue
            cap = policy.rule_cap(self.settings.strategy, self.settings.budget)
            if policy.is_rule(me) and policy.rule_trials_before(me.number, trials) >= cap:
                self._skip(trial, "rule_cap")  # another worker's rule trial took the last slot
                continue
            duplicates = 0
            self._execute(trial)
            ran += 1
        return ran

    def _skip(self, trial: optuna.Trial, why: str) -> None:
        trial.set_user_attr(tr.SKIPPED, why)
        self.study.tell(trial, state=TrialState.FAIL)

    def _enqueue_unseen(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        known = tr.known_keys(trials)
        names = list(self.space.choices)
        for _ in range(1000):
            cand = {k: self._rng.choice(self.space.choices[k]) for k in names}
            if tr.config_key(cand) not in known:
                self.study.enqueue_trial(cand, user_attrs={tr.SOURCE: "random"})
                return

    # ---------------------------------------------------------------- one trial
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

    def _analyze(self, trial: optuna.Trial, knobs: dict[str, Any], config: TrainConfig) -> Any:
        from satadvisor.advisor import analyze

        single = len(self.settings.objectives) == 1

        def on_epoch(record: Any) -> bool:
            checkpoint()
            if not single:
                return False
            trial.report(record.eval_accuracy, record.epoch)
            return trial.should_prune()

        return analyze(
            self.spec,
            knobs=knobs,
            data=self._data_for(int(knobs["resolution"])),
            config=config,
            name=f"{self.settings.study_name}-trial{trial.number}",
            on_epoch=on_epoch,
            progress=_step_checkpoint,
        )

    def _execute(self, trial: optuna.Trial) -> None:
        knobs = self.space.configuration(trial.params)
        attrs = self.study.get_trials(deepcopy=False)[trial.number].user_attrs
        source = attrs.get(tr.SOURCE, "sampler")
        trial.set_user_attr(tr.SOURCE, source)
        trial.set_user_attr("knobs", knobs)
        started = time.time()
        analysis = None
        reason = None
        with tr.Heartbeat(self.study, trial):
            try:
                analysis = self._analyze_with_retry(trial, knobs)
            except KeyboardInterrupt:
                self._interrupt(trial, "sigint")
                raise
            except DatasetError:
                # Not this configuration's fault: every trial would fail alike. Stop the study
                # (the trial does not count and is queued again) and let the user fix the data.
                self._interrupt(trial, "dataset")
                raise
            except SatAdvisorError as exc:
                reason = str(exc)
        trial.set_user_attr("wall_time", time.time() - started)
        run = analysis.run if analysis is not None else None
        if run is not None and run.status == "diverged":
            reason = run.reason
        if reason is not None or analysis is None or run is None:
            trial.set_user_attr(tr.REASON, reason or "no result")
            self.study.tell(trial, state=TrialState.FAIL)
            self._report(trial.number, "failed", knobs, None, None, source, reason)
            return
        self._record(trial, analysis)
        if run.status == "not_learned":
            # Measured, but nothing rests on it: no rule candidates, no objective values.
            trial.set_user_attr(tr.REASON, run.reason or "the proxy did not learn")
            self.study.tell(trial, state=not_learned_state(len(self.settings.objectives)))
            acc, macs = run.accuracy, analysis.macs
            self._report(trial.number, "did not learn", knobs, acc, macs, source, run.reason)
            return
        if self.settings.strategy != "tpe" and run.learned:
            # (a run the pruner stopped below the learned margin proposes nothing either)
            cands = self._rule_candidates(trial.number, knobs, analysis)
            trial.set_user_attr(policy.CANDIDATES, [c.to_dict() for c in cands])
        if run.status == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
            self._report(trial.number, "pruned", knobs, run.accuracy, analysis.macs, source)
            return
        values = [self._objective(name, analysis) for name in self.settings.objectives]
        self.study.tell(trial, values)
        self._report(trial.number, "complete", knobs, run.accuracy, analysis.macs, source)

    def _interrupt(self, trial: optuna.Trial, why: str) -> None:
        """Record a trial stopped from outside (it does not count) and queue it again."""
        trial.set_user_attr(tr.INTERRUPTED, why)
        self.study.tell(trial, state=TrialState.FAIL)
        tr.requeue(self.study, self.study.get_trials(deepcopy=False)[trial.number])

    def _analyze_with_retry(self, trial: optuna.Trial, knobs: dict[str, Any]) -> Any:
        """Out of GPU memory: retry once with half the batch size, then fail with the reason."""
        try:
            return self._analyze(trial, knobs, self.config)
        except torch.cuda.OutOfMemoryError:
            pass  # retried below: inside this block the traceback still holds the run's tensors
        _release_memory()
        half = max(1, self.config.batch_size // 2)
        trial.set_user_attr("oom_retry_batch_size", half)
        try:
            return self._analyze(trial, knobs, replace(self.config, batch_size=half))
        except torch.cuda.OutOfMemoryError:
            pass
        _release_memory()
        raise StudyError(
            f"out of GPU memory twice (batch size {self.config.batch_size}, then {half}); "
            "pass a smaller --batch-size or --resolution"
        )

    @staticmethod
    def _objective(name: str, analysis: Any) -> float:
        if name == "accuracy":
            return float(analysis.run.accuracy)
        if name == "macs":
            return float(analysis.macs)
        return float(analysis.params)

    def _record(self, trial: optuna.Trial, analysis: Any) -> None:
        from satadvisor.search.summary import evenness

        run = analysis.run
        profile = {s.name: round(s.saturation, 4) for s in analysis.profile}
        trial.set_user_attr("accuracy", run.accuracy)
        trial.set_user_attr("macs", analysis.macs)
        trial.set_user_attr("params", analysis.params)
        trial.set_user_attr(tr.STATUS, run.status)
        trial.set_user_attr(tr.LEARNED, run.learned)
        if run.learning is not None:
            trial.set_user_attr("learning", run.learning.to_dict())
        trial.set_user_attr("epochs", len(run.epochs))
        trial.set_user_attr("saturation", profile)
        trial.set_user_attr("tail", list(analysis.tail))
        trial.set_user_attr("tail_length", len(analysis.tail))
        trial.set_user_attr("unproductive", analysis.receptive_field.unproductive)
        trial.set_user_attr("evenness", evenness(analysis.profile))
        trial.set_user_attr("findings", [f.kind for f in analysis.findings])
        trial.set_user_attr("device", run.device)

    def _rule_candidates(
        self, number: int, knobs: dict[str, Any], analysis: Any
    ) -> list[policy.Candidate]:
        """The analysis's recommendations snapped into the space, with their MACs (stored with
        the trial; :func:`policy.next_candidate` picks among them later)."""
        out: list[policy.Candidate] = []
        seen = {tr.config_key(self.space.snap(knobs))}
        for rec in analysis.recommendations:
            if not rec.changes:
                continue
            cand = self.space.snap({**knobs, **rec.changes})
            key = tr.config_key(cand)
            if key in seen:
                continue
            seen.add(key)
            # The recommender counted the changed model already; only a snapped one is new.
            macs = self._macs_of(cand) if _snapped(rec, cand) else rec.cost.macs
            out.append(policy.Candidate(cand, str(rec.kind), number, macs))
        return out

    def _macs_of(self, params: dict[str, Any]) -> int | None:
        """MACs per image of a configuration, built as ``analyze`` builds it (None: no build)."""
        from satadvisor import data as data_mod
        from satadvisor.advisor import build_model
        from satadvisor.cost import count_macs

        knobs = self.space.configuration(params)
        resolution = int(knobs.pop("resolution"))
        resolved = {k: v for k, v in self.spec.resolve(knobs).items() if k != "resolution"}
        info = data_mod.dataset_info(self.settings.dataset, data_dir=self.settings.data_dir)
        try:
            with torch.random.fork_rng(devices=[]):  # building draws weights: keep the stream
                net = build_model(
                    self.spec, resolved, num_classes=info.num_classes, in_channels=info.in_channels
                )
            return count_macs(net, in_channels=info.in_channels, resolution=resolution)
        except (SatAdvisorError, RuntimeError, ValueError):
            return None

    def _enqueue_rule_candidate(self, trials: list[optuna.trial.FrozenTrial]) -> bool:
        """Enqueue the rule candidate the policy picks for the next trial; False if none."""
        cand = policy.next_candidate(
            trials,
            strategy=self.settings.strategy,
            budget=self.settings.budget,
            objectives=self.settings.objectives,
        )
        if cand is None:
            return False
        self.study.enqueue_trial(
            cand.params, user_attrs={tr.SOURCE: cand.source, "parent": cand.parent}
        )
        return True

    def _report(
        self,
        number: int,
        state: str,
        knobs: dict[str, Any],
        accuracy: float | None,
        macs: int | None,
        source: str,
        reason: str | None = None,
    ) -> None:
        if self.on_trial is None:
            return
        done = len(tr.counted(self.study.get_trials(deepcopy=False)))
        self.on_trial(
            TrialEvent(
                number, done, self.settings.budget, state, knobs, accuracy, macs, source, reason
            )
        )


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


def _snapped(rec: Any, cand: Mapping[str, Any]) -> bool:
    """Whether ``cand`` differs from the configuration ``rec`` was costed for (or it has no cost)."""
    if rec.cost is None:
        return True
    wanted = {**rec.knobs, "resolution": rec.resolution}
    return any(wanted.get(k) != v for k, v in cand.items())
