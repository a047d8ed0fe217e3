"""Full-run validation: retrain the baseline and the Pareto-optimal picks with several seeds.

Each run is scored on the validation split held out of the training set (what chooses) and
tested once on the test split (reported only). Each result is stored in the study as soon as it
exists (one user attribute per configuration and seed), so an interrupted validation resumes
where it stopped and ``satadvisor report`` can re-render.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from satadvisor import spec as spec_mod
from satadvisor._flags import flag
from satadvisor.config import TrainConfig
from satadvisor.errors import UsageError
from satadvisor.search import record as tr
from satadvisor.search._signals import checkpoint
from satadvisor.search.record import TrialRecord
from satadvisor.search.settings import SearchSettings
from satadvisor.search.study_record import ValidationRun
from satadvisor.search.summary import UNFINISHED, VALIDATION_PREFIX, evenness

#: Seeds per validated configuration: three full runs each, the fewest that give a paired
#: interval with some power (see README, ``--validate-seeds``).
DEFAULT_SEEDS = 3


def select(
    study: optuna.Study, *, k: int, tolerance: float = 0.005
) -> tuple[FrozenTrial | None, list[FrozenTrial]]:
    """The baseline trial and up to ``k`` Pareto-optimal picks to validate.

    Picks: the most accurate trial of the front, the cheapest one within ``tolerance`` (a
    fraction) of the baseline's proxy accuracy, then the rest of the front by accuracy. Trials
    whose proxy did not learn are never picked; the baseline is validated also when its proxy
    did not learn or was pruned (it is the reference every pick is compared with, and a full
    run may learn).
    """
    trials = study.get_trials(deepcopy=False)
    recs = {t.number: TrialRecord.of(t) for t in trials}
    complete = [
        t for t in trials if t.state == TrialState.COMPLETE and recs[t.number].status == "completed"
    ]
    baseline = next(
        (
            t
            for t in trials
            if recs[t.number].source == "baseline"
            and recs[t.number].status in ("completed", "not_learned", "pruned")
            and t.params
        ),
        None,
    )
    if not complete or k <= 0:
        return baseline, []
    front = (
        [t for t in study.best_trials if recs[t.number].status == "completed"]
        if len(study.directions) > 1
        else complete
    ) or complete

    def acc(t: FrozenTrial) -> float:
        return float(recs[t.number].accuracy or 0.0)

    def macs(t: FrozenTrial) -> int:
        return int(recs[t.number].macs or 0)

    by_acc = sorted(front, key=lambda t: (-acc(t), macs(t)))
    picks: list[FrozenTrial] = [by_acc[0]]
    base_acc = recs[baseline.number].accuracy if baseline is not None else None
    if base_acc is not None:
        cheap = [t for t in front if acc(t) >= base_acc - tolerance]
        if cheap:
            picks.append(min(cheap, key=lambda t: (macs(t), -acc(t))))
    picks += by_acc
    seen = {tr.config_key(baseline.params)} if baseline is not None else set()
    out = []
    for t in picks:
        key = tr.config_key(t.params)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return baseline, out[:k]


def validation_key(knobs: dict[str, Any], seed: int) -> str:
    """The study user attribute that holds the full run of ``knobs`` with ``seed``."""
    digest = hashlib.sha1(tr.config_key(knobs).encode()).hexdigest()[:12]
    return f"{VALIDATION_PREFIX}{digest}:seed{seed}"


def seeds_for(config: TrainConfig, n: int) -> list[int]:
    """The training seeds of ``n`` validation runs: the study's seed, then +1, +2, …"""
    return [config.seed + i for i in range(n)]


def todo(baseline: FrozenTrial | None, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return ([baseline] if baseline is not None else []) + list(trials)


def validate(
    study: optuna.Study,
    settings: SearchSettings,
    *,
    trials: Sequence[FrozenTrial],
    baseline: FrozenTrial | None,
    full_epochs: int,
    seeds: int = DEFAULT_SEEDS,
    on_run: Callable[[ValidationRun], None] | None = None,
) -> list[ValidationRun]:
    """Retrain the baseline and ``trials`` in full with ``seeds`` seeds; return the runs
    (:class:`~satadvisor.search.study_record.ValidationRun` as the study stores them).

    Every run trains on the training set minus the validation split (one split, drawn with the
    study's seed, for all runs: the differences between configurations pair by seed) and is
    scored on that split (``val_accuracy``: what selection reads); the test split is evaluated
    once at the end of the run (``test_accuracy``: reported only). Seed-major order: every
    configuration with the first seed, then the next seed, so an interrupted validation
    already compares them all. A run stored before (same configuration and seed) is not run
    again.
    """
    from satadvisor import data as data_mod
    from satadvisor._env import resolve_device
    from satadvisor.advisor import analyze

    if seeds < 1:
        raise UsageError(f"{flag('validate_seeds')} must be at least 1, got {seeds}: 3 is usual")
    spec = spec_mod.load(settings.model)
    config = replace(settings.train, epochs=full_epochs, full=True, auto_epochs=False)
    device = resolve_device(config.device)
    records = []
    cache: dict[int, Any] = {}
    for seed in seeds_for(config, seeds):
        for t in todo(baseline, trials):
            checkpoint()
            knobs = settings.space.configuration(t.params)
            name = validation_key(knobs, seed)
            if name in study.user_attrs:  # validated before this run was interrupted
                records.append(ValidationRun.from_dict(study.user_attrs[name]))
                continue
            resolution = int(knobs["resolution"])
            if resolution not in cache:  # the study's seed draws the one split of all runs
                cache[resolution] = data_mod.load(
                    settings.dataset,
                    resolution=resolution,
                    data_dir=settings.data_dir,
                    download=settings.download,
                    full=True,
                    seed=config.seed,
                    device=device,
                    subset=settings.full_subset,
                )
            data = cache[resolution]
            analysis = analyze(
                spec,
                knobs=knobs,
                data=data,
                config=replace(config, seed=seed),
                progress=lambda _: checkpoint(),  # where a deferred Ctrl-C stops a full run
                track="last",  # its final profile is all a full run keeps
            )
            run = analysis.run
            assert run is not None
            scored = run.status not in UNFINISHED
            trial_rec = TrialRecord.of(t)
            record = ValidationRun(
                trial=t.number,
                baseline=t is baseline,
                source=trial_rec.source,
                knobs=dict(knobs),
                seed=seed,
                proxy_accuracy=trial_rec.accuracy,
                val_accuracy=run.accuracy if scored else None,
                test_accuracy=run.test_accuracy if scored else None,
                status=run.status,
                macs=analysis.macs,
                params=analysis.params,
                epochs=len(run.epochs),
                train_images=len(data.train),
                val_images=len(data.eval),
                test_images=len(data.test) if data.test is not None else None,
                wall_time=run.wall_time,
                saturation={s.name: round(s.saturation, 4) for s in analysis.profile},
                tail=tuple(analysis.tail),
                evenness=evenness(analysis.profile),
                history=tuple(dict(e.__dict__) for e in run.epochs),
            )
            study.set_user_attr(name, record.to_dict())
            records.append(record)
            if on_run is not None:
                on_run(record)
    return records


def validated(
    study: optuna.Study,
    settings: SearchSettings,
    *,
    trials: Sequence[FrozenTrial],
    baseline: FrozenTrial | None,
    seeds: int,
) -> bool:
    """Whether every run :func:`validate` would do is stored already."""
    return all(
        validation_key(settings.space.configuration(t.params), seed) in study.user_attrs
        for seed in seeds_for(settings.train, seeds)
        for t in todo(baseline, trials)
    )
