"""``optimize(model, budget=…)``: baseline → rule-guided + Optuna trials → full-run validation.

The study lives in an Optuna storage (SQLite ``studies/<name>.db`` by default), so rerunning the
same command resumes it, several workers or machines share it, and ``satadvisor report`` can
re-render its report at any time.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import optuna
import torch

from satadvisor import spec as spec_mod
from satadvisor._flags import flag
from satadvisor.advisor import command_line
from satadvisor.config import TrainConfig
from satadvisor.errors import StorageError, StudyError, UsageError
from satadvisor.search import record as tr
from satadvisor.search._signals import checkpoint, deferred_interrupts
from satadvisor.search.failures import storage_writes
from satadvisor.search.ownership import reap_dead
from satadvisor.search.progress import SearchClock, SearchProgress
from satadvisor.search.settings import OBJECTIVES, SearchSettings, TrialEvent
from satadvisor.search.space import SearchSpace, derive_space
from satadvisor.search.storage import (
    default_url,
    open_storage,
    redact,
    redact_command,
    storage_file,
)
from satadvisor.search.strategies import get_strategy
from satadvisor.search.study_record import StudySummary, ValidationRun
from satadvisor.search.summary import study_summary
from satadvisor.search.validate import (
    DEFAULT_SEEDS,
    seeds_for,
    select,
    todo,
    validate,
    validated,
    validation_key,
)
from satadvisor.search.worker import Worker, quiet_optuna, worker_main

#: Study user attribute: the version of the search that made the study (its trials' records).
SEARCH_VERSION = 2
#: Settings that must match for a rerun to join a study: one Pareto front must rank trials
#: trained on the same data in the same way.
_SAME = ("model", "dataset", "strategy", "subset")
_SAME_TRAIN = (
    "epochs",
    "auto_epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "optimizer",
    "seed",
    "val_fraction",
    "augment",
    "threshold",
    "amp",
    "positions",
)


def parse_objectives(text: str | tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",")) if isinstance(text, str) else tuple(text)
    bad = [n for n in names if n not in OBJECTIVES]
    if not names or bad or len(set(names)) != len(names) or "accuracy" not in names:
        raise UsageError(
            f"{flag('objectives')} {','.join(names)!s}: use accuracy, optionally with macs "
            "and/or params (e.g. accuracy,macs)"
        )
    return names


def _settings_record(settings: SearchSettings) -> dict[str, Any]:
    return {
        "model": settings.model,
        "dataset": settings.dataset,
        "strategy": settings.strategy,
        "subset": settings.subset,
        "train": settings.train.to_dict(),
    }


def _mismatch(stored: Mapping[str, Any], now: Mapping[str, Any]) -> str | None:
    """The first setting that differs between a stored study and this run (None: none)."""
    for key in _SAME:
        if key in stored and stored.get(key) != now.get(key):
            return f"{key} {stored.get(key)!r} (now {now.get(key)!r})"
    old, new = stored.get("train") or {}, now.get("train") or {}
    for key in _SAME_TRAIN:
        if key in old and key in new and old[key] != new[key]:
            return f"{key} {old[key]!r} (now {new[key]!r})"
    return None


def create_or_load(settings: SearchSettings) -> optuna.Study:
    """Create the study (or load it to resume) and check it was made with this search."""
    storage = open_storage(settings.storage_url)
    directions = [optuna.study.StudyDirection[OBJECTIVES[o].upper()] for o in settings.objectives]
    try:
        with quiet_optuna():  # no "A new study created" line
            study = optuna.create_study(
                study_name=settings.study_name,
                storage=storage,
                directions=directions,
                load_if_exists=True,
            )
    except Exception as exc:
        raise StorageError(
            f"cannot create study {settings.study_name!r} in {redact(settings.storage_url)}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    attrs = study.user_attrs
    name = settings.study_name
    if "space" in attrs and attrs.get("search_version") != SEARCH_VERSION:
        raise StudyError(
            f"study {name!r} was made by an older satadvisor whose trials this version cannot "
            f"read; pass another {flag('study_name')} (or {flag('storage')}) to start a new study"
        )
    space = {k: list(v) for k, v in settings.space.choices.items()}
    stored = attrs.get("space")
    if stored is not None and stored != space:
        raise StudyError(
            f"study {name!r} was created with another search space ({stored}); "
            f"pass another {flag('study_name')}, or the same SEARCH_SPACE and {flag('set')}"
        )
    if stored is not None and dict(attrs.get("fixed") or {}) != dict(settings.space.fixed):
        raise StudyError(
            f"study {name!r} was created with other pinned knobs ({attrs.get('fixed')}); "
            f"pass the same {flag('set')} (and {flag('resolution')}) or another "
            f"{flag('study_name')}"
        )
    stored_obj = attrs.get("objectives")
    if stored_obj is not None and list(stored_obj) != list(settings.objectives):
        raise StudyError(
            f"study {name!r} optimises {','.join(stored_obj)}; pass {flag('objectives')} "
            f"{','.join(stored_obj)} or another {flag('study_name')}"
        )
    now = _settings_record(settings)
    differs = _mismatch(attrs.get("settings") or {}, now)
    if differs is not None:
        raise StudyError(
            f"study {name!r} was run with another {differs}: its trials would not compare with "
            f"this run's; pass the same settings to resume it, or another {flag('study_name')}"
        )
    if stored is None:
        study.set_user_attr("search_version", SEARCH_VERSION)
        study.set_user_attr("space", space)
        study.set_user_attr("fixed", dict(settings.space.fixed))
        study.set_user_attr("objectives", list(settings.objectives))
        study.set_user_attr("settings", now)
        with quiet_optuna():
            study.set_metric_names(list(settings.objectives))  # optuna-dashboard's labels
        # Workers that start a fresh study at the same moment all find no settings and all
        # write theirs; the last write stands. Read back once the others' writes are in: a
        # worker whose settings are not the ones that stood stops here instead of mixing.
        _settle()
        differs = _mismatch(study.user_attrs.get("settings") or {}, now)
        if differs is not None or study.user_attrs.get("space") != space:
            raise StudyError(
                f"study {name!r} was created at the same moment by another worker with another "
                f"{differs or 'search space'}: its trials would not compare with this run's; "
                f"pass the same settings to join it, or another {flag('study_name')}"
            )
    return study


#: How long a worker that created a study's settings waits before reading them back (the
#: moment in which concurrent first writers' writes land).
_SETTLE_SECONDS = 0.5


def _settle() -> None:
    time.sleep(_SETTLE_SECONDS)


def _devices(workers: int, device: str) -> list[str | None]:
    """One GPU per worker when several are visible and the device was left to us."""
    n = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    if n > 1:
        return [f"cuda:{i % n}" for i in range(workers)]
    return [None] * workers


def run_workers(
    settings: SearchSettings,
    *,
    workers: int,
    on_trial: Callable[[TrialEvent], None] | None = None,
) -> None:
    """Run the search loop in this process (one worker) or in ``workers`` local processes."""
    devices = _devices(workers, settings.train.device)
    if workers == 1:
        Worker(settings, device=devices[0], on_trial=on_trial).run()
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=worker_main, args=(settings, i, devices[i], threads), daemon=False)
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=60)
        raise
    checkpoint()  # Ctrl-C reached the workers too: they recorded their trials and exited
    failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise StudyError(
            f"{len(failed)} of {workers} workers exited with an error (codes {failed}); "
            f"rerun the same command to resume, with {flag('workers')} 1 {flag('debug')} to see "
            "why"
        )


def optimize(
    model: str | None = None,
    *,
    budget: int,
    strategy: str = "guided",
    objectives: str | tuple[str, ...] = ("accuracy", "macs"),
    study_name: str | None = None,
    storage: str | None = None,
    workers: int = 1,
    validate_top: int = 3,
    validate_seeds: int = DEFAULT_SEEDS,
    full_epochs: int | None = None,
    config: TrainConfig | None = None,
    dataset: str | None = None,
    resolution: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    pinned: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    subset: int | None = None,
    full_subset: int | None = None,
    tolerance: float = 0.005,
    on_trial: Callable[[TrialEvent], None] | None = None,
    on_validation: Callable[[ValidationRun], None] | None = None,
    on_progress: Callable[[SearchProgress], None] | None = None,
) -> StudySummary:
    """Search, validate, and return the study summary (``to_dict()``: ``study.json``).

    ``budget`` counts proxy trials in the study in total: a rerun resumes and stops there.
    ``strategy``: ``guided`` (saturation-guided: rule moves, the receptive-field prior and
    the saturation pruner on multi-objective TPE), ``tpe`` or ``random`` (Optuna's samplers
    alone, without pruning).
    ``validate_top`` Pareto-optimal configurations and the baseline are retrained for
    ``full_epochs`` (default 4× the proxy epochs) with ``validate_seeds`` seeds (the study's
    seed, +1, …), on the training set minus the validation split; validation accuracy alone
    chooses and orders the recommendations, paired by seed with the baseline's (a 95 %
    t-interval confirms a claim; one seed confirms nothing), and the test split is evaluated
    once per run, for the report only. Raising ``validate_seeds`` on a validated study runs
    only the new seeds.
    ``subset`` caps each split of the proxy trials, ``full_subset`` each split of the
    validation runs (images, stratified; None: all).

    ``on_trial`` gets each finished trial, ``on_validation`` each finished full run;
    ``on_progress`` gets a :class:`~satadvisor.search.progress.SearchProgress` after each
    trial, when the validation starts and after each full run, with one ETA over the search
    and the validation runs (see :mod:`satadvisor.search.progress`). With ``workers`` > 1 the
    trials run in other processes and report nothing here; the validation still does.

    See :mod:`satadvisor.search.sampler`, :mod:`~satadvisor.search.pruner` and
    :mod:`~satadvisor.search.policy` for what ``guided`` does.
    """
    from satadvisor import data as data_mod

    if budget < 1:
        raise UsageError(f"{flag('budget')} must be at least 1, got {budget}")
    get_strategy(strategy)  # a one-line error for an unknown name
    if workers < 1:
        raise UsageError(f"{flag('workers')} must be at least 1, got {workers}")
    if validate_seeds < 1:
        raise UsageError(
            f"{flag('validate_seeds')} must be at least 1, got {validate_seeds}: 3 is usual "
            "(one seed gives no interval, so nothing is confirmed)"
        )
    names = parse_objectives(objectives)
    config = config or TrainConfig()
    spec = spec_mod.load(model)
    pinned = dict(pinned or {})
    dataset = dataset or spec.dataset or "digits"
    info = data_mod.dataset_info(dataset, data_dir=data_dir)
    resolution = int(
        pinned.get("resolution") or resolution or spec.resolution or info.native_resolution
    )
    space = derive_space(spec, resolution=resolution, pinned=pinned)
    baseline_knobs = {
        **spec.resolve({k: v for k, v in pinned.items() if k != "resolution"}),
        "resolution": resolution,
    }
    space = _with_baseline(space, baseline_knobs)
    # Bad input fails here, before the study exists: every trial would fail the same way.
    data_mod.check_available(dataset, resolution=resolution, data_dir=data_dir, download=download)
    _check_baseline(spec, baseline_knobs, info=info, resolution=resolution)
    study_name = study_name or f"{spec.name}-{dataset}"
    url = storage or default_url(study_name)
    settings = SearchSettings(
        model=None if model is None else str(model),
        study_name=study_name,
        storage_url=url,
        budget=budget,
        space=space,
        baseline={k: baseline_knobs[k] for k in space.choices},
        strategy=strategy,
        objectives=names,
        dataset=dataset,
        data_dir=None if data_dir is None else str(data_dir),
        download=download,
        train=config,
        timeout=timeout,
        subset=subset,
        full_subset=full_subset,
    )
    # Ctrl-C stops at the next training step (see _signals); a full disk ends in one line
    with deferred_interrupts(), storage_writes():
        study = create_or_load(settings)
        reap_dead(study)  # a killed run's trials count no more, before the budget is judged
        counted = len(tr.counted(study.get_trials(deepcopy=False)))
        baseline, picks = select(study, k=validate_top, tolerance=tolerance)
        done = validated(study, settings, trials=picks, baseline=baseline, seeds=validate_seeds)
        if counted >= budget and validate_top > 0 and done:
            raise StudyError(
                f"study {study_name!r} already has {counted} trials of a budget of {budget} and "
                f"is validated; raise {flag('budget')} (or {flag('validate_seeds')}) to continue, "
                "or re-render with "
                f"`satadvisor report {study_name}`"
            )
        # Recorded only now: a refused rerun leaves the study as it was.
        study.set_user_attr("budget", settings.budget)
        study.set_user_attr("command", redact_command(command_line()))
        if validate_top > 0:  # a search-only rerun leaves the validation's seeds as they were
            study.set_user_attr("validate_seeds", validate_seeds)
        full = full_epochs or 4 * config.epochs
        clock = None
        if on_progress is not None:
            clock = SearchClock(
                budget=budget,
                validate_top=validate_top,
                seeds=validate_seeds,
                full_epochs=full,
                subset=subset,
                full_subset=full_subset,
            )
            clock.known_trials(study.get_trials(deepcopy=False))
        trial_callback = _fan_out(on_trial, clock.trial if clock else None, on_progress)
        run_workers(settings, workers=workers, on_trial=trial_callback)
        baseline, picks = select(study, k=validate_top, tolerance=tolerance)
        if validate_top > 0:
            if clock is not None and on_progress is not None:
                planned = [
                    t.number
                    for seed in seeds_for(config, validate_seeds)
                    for t in todo(baseline, picks)
                    if validation_key(settings.space.configuration(t.params), seed)
                    not in study.user_attrs
                ]
                on_progress(clock.start_validation(planned))
            validate(
                study,
                settings,
                trials=picks,
                baseline=baseline,
                full_epochs=full,
                seeds=validate_seeds,
                on_run=_fan_out(on_validation, clock.run if clock else None, on_progress),
            )
    return study_summary(
        study,
        tolerance=tolerance,
        storage=redact(url),
        settings_used=_plain(settings),
    )


def _fan_out(
    callback: Callable[[Any], None] | None,
    clock: Callable[[Any], SearchProgress] | None,
    on_progress: Callable[[SearchProgress], None] | None,
) -> Callable[[Any], None] | None:
    """One callback that calls ``callback`` and hands ``on_progress`` what ``clock`` makes of
    the same event; None when there is nobody to call."""
    if callback is None and (clock is None or on_progress is None):
        return None

    def call(event: Any) -> None:
        if callback is not None:
            callback(event)
        if clock is not None and on_progress is not None:
            on_progress(clock(event))

    return call


def _check_baseline(
    spec: spec_mod.ModelSpec, knobs: Mapping[str, Any], *, info: Any, resolution: int
) -> None:
    """Build the baseline once and run a dry forward: ModelBuildError when it cannot work."""
    net = spec.create(num_classes=info.num_classes, in_channels=info.in_channels, **knobs)
    spec_mod.check_output(
        net,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        resolution=resolution,
        source=spec.source,
    )


def _with_baseline(space: SearchSpace, knobs: Mapping[str, Any]) -> SearchSpace:
    """Make sure the baseline's own values are among the choices (the first trial runs it)."""
    choices = {}
    for k, values in space.choices.items():
        v = knobs.get(k)
        choices[k] = tuple(sorted({*values, v})) if v is not None and v not in values else values
    return SearchSpace(choices=choices, fixed=space.fixed)


def _plain(settings: SearchSettings) -> dict[str, Any]:
    d = asdict(settings)
    d["storage_url"] = redact(settings.storage_url)
    return d


def load_summary(
    study_name: str, *, storage: str | None = None, tolerance: float = 0.005
) -> StudySummary:
    """The summary of an existing study (``satadvisor report STUDY``)."""
    url = storage or default_url(study_name)
    _require_file(url, study_name)
    st = open_storage(url)
    names = [s.study_name for s in st.get_all_studies()]
    if study_name not in names:
        known = ", ".join(names) or "none"
        raise StudyError(
            f"no study {study_name!r} in {redact(url)} (studies there: {known}); "
            f"pass the study name given to optimize, or {flag('storage')}"
        )
    study = optuna.load_study(study_name=study_name, storage=st)
    return study_summary(study, tolerance=tolerance, storage=redact(url))


def _require_file(url: str, study_name: str) -> None:
    """A file storage that does not exist: StudyError, instead of creating an empty one."""
    path = storage_file(url)
    if path is not None and not path.exists():
        raise StudyError(
            f"no study {study_name!r}: {path} does not exist; run `satadvisor optimize` first, "
            f"or pass the {flag('storage')} it used"
        )
