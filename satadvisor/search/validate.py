"""Full-run validation: retrain the baseline and the Pareto-optimal picks, test-set accuracy.

Each result is stored in the study as soon as it exists (one user attribute per configuration),
so an interrupted validation resumes where it stopped and ``satadvisor report`` can re-render.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from satadvisor import spec as spec_mod
from satadvisor.search import trials as tr
from satadvisor.search._signals import checkpoint
from satadvisor.search.summary import VALIDATION_PREFIX, evenness
from satadvisor.search.worker import SearchSettings


def select(
    study: optuna.Study, *, k: int, tolerance: float = 0.005
) -> tuple[FrozenTrial | None, list[FrozenTrial]]:
    """The baseline trial and up to ``k`` Pareto-optimal picks to validate.

    Picks: the most accurate trial of the front, the cheapest one within ``tolerance`` (a
    fraction) of the baseline's proxy accuracy, then the rest of the front by accuracy.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    baseline = next((t for t in complete if t.user_attrs.get(tr.SOURCE) == "baseline"), None)
    if not complete or k <= 0:
        return baseline, []
    front = study.best_trials if len(study.directions) > 1 else complete
    by_acc = sorted(front, key=lambda t: (-t.user_attrs["accuracy"], t.user_attrs["macs"]))
    picks: list[FrozenTrial] = [by_acc[0]]
    if baseline is not None:
        floor = baseline.user_attrs["accuracy"] - tolerance
        cheap = [t for t in front if t.user_attrs["accuracy"] >= floor]
        if cheap:
            picks.append(
                min(cheap, key=lambda t: (t.user_attrs["macs"], -t.user_attrs["accuracy"]))
            )
    picks += by_acc
    seen = {tr.config_key(baseline.params)} if baseline is not None else set()
    out = []
    for t in picks:
        key = tr.config_key(t.params)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return baseline, out[:k]


def validation_key(knobs: dict[str, Any]) -> str:
    digest = hashlib.sha1(tr.config_key(knobs).encode()).hexdigest()[:12]
    return f"{VALIDATION_PREFIX}{digest}"


def validate(
    study: optuna.Study,
    settings: SearchSettings,
    *,
    trials: Sequence[FrozenTrial],
    baseline: FrozenTrial | None,
    full_epochs: int,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train each configuration in full (same seed), evaluate on the test set, store the result."""
    from satadvisor import data as data_mod
    from satadvisor._env import resolve_device
    from satadvisor.advisor import analyze

    spec = spec_mod.load(settings.model)
    config = replace(settings.train, epochs=full_epochs, full=True)
    device = resolve_device(config.device)
    todo = ([baseline] if baseline is not None else []) + list(trials)
    records = []
    cache: dict[int, Any] = {}
    for t in todo:
        checkpoint()
        knobs = settings.space.configuration(t.params)
        name = validation_key(knobs)
        if name in study.user_attrs:  # validated before this run was interrupted
            records.append(study.user_attrs[name])
            continue
        resolution = int(knobs["resolution"])
        if resolution not in cache:
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
        analysis = analyze(
            spec,
            knobs=knobs,
            data=cache[resolution],
            config=config,
            progress=lambda _: checkpoint(),  # where a deferred Ctrl-C stops a full run
        )
        run = analysis.run
        assert run is not None
        record = {
            "trial": t.number,
            "baseline": t is baseline,
            "source": t.user_attrs.get(tr.SOURCE, "sampler"),
            "knobs": knobs,
            "proxy_accuracy": t.user_attrs.get("accuracy"),
            "test_accuracy": run.test_accuracy,
            "status": run.status,
            "macs": analysis.macs,
            "params": analysis.params,
            "epochs": len(run.epochs),
            "train_images": len(cache[resolution].train),
            "test_images": len(cache[resolution].eval),
            "wall_time": run.wall_time,
            "saturation": {s.name: round(s.saturation, 4) for s in analysis.profile},
            "tail": list(analysis.tail),
            "evenness": evenness(analysis.profile),
            "history": [e.__dict__ for e in run.epochs],
        }
        study.set_user_attr(name, record)
        records.append(record)
        if on_run is not None:
            on_run(record)
    return records
