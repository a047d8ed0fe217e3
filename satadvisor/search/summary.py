"""The numbers of a study and its summary (:class:`~satadvisor.search.study_record.StudySummary`).

The per-seed runs are joined per configuration (:func:`aggregate_runs`), compared with the
baseline paired by seed (:func:`compare`), and judged (:func:`judge_claim`, :func:`recommend`),
all on the typed records of :mod:`satadvisor.search.study_record`; :func:`aggregate`,
:func:`paired` and :func:`recommended` are the same on JSON-ready data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from satadvisor.search import record as tr
from satadvisor.search.record import TrialRecord
from satadvisor.search.study_record import SCHEMA as SCHEMA
from satadvisor.search.study_record import (
    Comparison,
    Configuration,
    Recommendation,
    StudySettings,
    StudySummary,
    TrialRow,
    ValidatedConfig,
    ValidationRun,
)

VALIDATION_PREFIX = "validation:"
#: Confidence level of the paired interval that confirms a recommendation.
LEVEL = 0.95


def evenness(profile: Sequence[Any]) -> float | None:
    """1 − Gini coefficient of the layers' saturation: 1.0 perfectly even, → 0 concentrated.

    ``profile`` holds LayerSaturation objects (or plain floats). None for an empty profile.
    """
    values = np.array([getattr(p, "saturation", p) for p in profile], dtype=np.float64)
    if values.size == 0:
        return None
    if values.sum() <= 0:
        return 0.0
    v = np.sort(values)
    n = v.size
    gini = (2.0 * np.sum(np.arange(1, n + 1) * v) / (n * v.sum())) - (n + 1) / n
    return float(round(1.0 - gini, 6))


def _ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    a = np.asarray(x, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = np.arange(1, a.size + 1)
    for value in np.unique(a):
        tied = a == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation; None with fewer than 3 pairs or a constant side."""
    if len(x) != len(y) or len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def validations(study: optuna.Study) -> list[ValidatedConfig]:
    """The full-run validation of the study, one record per configuration, baseline first.

    The study stores one record per (configuration, seed) run (see
    :mod:`satadvisor.search.validate`); :func:`aggregate_runs` joins them. Records of versions
    that chose on the test set (no ``seed``) are left out: rerunning the study validates again.
    """
    runs = [
        ValidationRun.from_dict(v)
        for k, v in study.user_attrs.items()
        if k.startswith(VALIDATION_PREFIX) and isinstance(v, Mapping) and "seed" in v
    ]
    return aggregate_runs(runs)


#: Statuses of a full run that ended without a usable score (left out of the pairs).
UNFINISHED = ("diverged", "failed", "pruned")


def aggregate_runs(runs: Sequence[ValidationRun], *, level: float = LEVEL) -> list[ValidatedConfig]:
    """One record per configuration from its per-seed runs, baseline first, then by trial.

    The record keeps the first seed's run (profile, sizes) and adds the ``seeds``, each seed's
    :class:`~satadvisor.search.study_record.SeedRun`, the means of validation accuracy (what
    selection reads) and test accuracy (reported only) over the seeds that finished, their
    sample standard deviations (None with fewer than two seeds), the sum of wall times, the
    most epochs of a run, the worst status, and, for every configuration but the baseline, the
    paired comparison of validation accuracy with the baseline (:func:`compare`).
    """
    groups: dict[str, list[ValidationRun]] = {}
    for r in runs:
        groups.setdefault(tr.config_key(r.knobs), []).append(r)
    records = []
    for group in groups.values():
        group = sorted(group, key=lambda r: r.seed or 0)
        vals = [r.val_accuracy for r in group if r.val_accuracy is not None]
        tests = [r.test_accuracy for r in group if r.test_accuracy is not None]
        shared = {f.name: getattr(group[0], f.name) for f in fields(Configuration)}
        records.append(
            ValidatedConfig(
                **shared,
                seeds=tuple(r.seed for r in group),
                runs=tuple(r.seed_run for r in group),
                status=_worst_status([r.status for r in group]),
                val_accuracy=_mean(vals),
                val_std=_std(vals),
                test_accuracy=_mean(tests),
                test_std=_std(tests),
                wall_time=sum(r.wall_time or 0.0 for r in group),
                epochs=max((r.epochs or 0 for r in group), default=0),
            )
        )
    records.sort(key=lambda r: (not r.baseline, r.trial or 0))
    base = next((r for r in records if r.baseline), None)
    return [
        r if base is None or r is base else replace(r, comparison=compare(base, r, level=level))
        for r in records
    ]


def _worst_status(statuses: Sequence[str]) -> str:
    for status in (*UNFINISHED, "not_learned"):
        if status in statuses:
            return status
    return statuses[0] if statuses else "completed"


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _std(values: Sequence[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def t_interval(deltas: Sequence[float], *, level: float = LEVEL) -> tuple[float, float] | None:
    """The ``level`` Student-t confidence interval of the mean of ``deltas`` (None below 2)."""
    d = np.asarray(deltas, dtype=np.float64)
    if d.size < 2:
        return None
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    mean = float(d.mean())
    return mean - half, mean + half


def compare(base: ValidatedConfig, record: ValidatedConfig, *, level: float = LEVEL) -> Comparison:
    """Validation accuracy of ``record`` minus the baseline's, paired by seed.

    Over the seeds both finished: the differences, their mean and its ``level`` t-interval
    (None with fewer than two pairs), and ``accuracy``: "more accurate" (interval above 0),
    "less accurate" (below 0), "tie" (it contains 0) or None (no interval). ``missing``: seeds
    run by either side that the other lacks or that have no score (diverged, failed, or not
    run yet).
    """
    b = {r.seed: r.val_accuracy for r in base.runs if r.val_accuracy is not None}
    v = {r.seed: r.val_accuracy for r in record.runs if r.val_accuracy is not None}
    seeds = sorted((s for s in b if s in v), key=lambda s: (s is None, s))
    deltas = [v[s] - b[s] for s in seeds]
    interval = t_interval(deltas, level=level)
    low, high = interval if interval is not None else (None, None)
    accuracy = None
    if low is not None and high is not None:
        accuracy = "more accurate" if low > 0 else "less accurate" if high < 0 else "tie"
    every = {x.seed for x in (*base.runs, *record.runs)}
    return Comparison(
        seeds=tuple(seeds),
        deltas=tuple(deltas),
        n=len(seeds),
        mean=_mean(deltas),
        low=low,
        high=high,
        level=level,
        accuracy=accuracy,
        missing=len(every - set(seeds)) if every else 0,
    )


def judge_claim(comparison: Comparison, *, cheaper: bool, tolerance: float) -> tuple[str, str, str]:
    """Whether the paired comparison carries a recommendation's claim: (claim, verdict, basis).

    ``claim``: "cheaper" (fewer MACs, at most ``tolerance`` less accurate) or "more accurate".
    ``verdict``: "confirmed" when the interval's lower bound lies above −``tolerance`` (cheaper)
    or above 0 (more accurate); "tie" when a more-accurate claim's interval contains 0;
    otherwise "not confirmed". ``basis``: "interval", "one seed" (no interval: nothing is
    confirmed) or "missing runs" (a seed of either side has no score: not confirmed).
    """
    claim = "cheaper" if cheaper else "more accurate"
    low = comparison.low
    if comparison.missing:
        return claim, "not confirmed", "missing runs"
    if low is None:
        return claim, "not confirmed", "one seed"
    floor = -tolerance if cheaper else 0.0
    if low > floor:
        verdict = "confirmed"
    elif not cheaper and comparison.accuracy == "tie":
        verdict = "tie"
    else:
        verdict = "not confirmed"
    return claim, verdict, "interval"


def recommend(records: Sequence[ValidatedConfig], *, tolerance: float) -> list[Recommendation]:
    """Validated configurations worth adopting, confirmed ones first, each cheapest first.

    Only validation accuracy chooses and orders (test accuracy is carried along for the report
    and never read here). A configuration qualifies when its mean paired difference to the
    baseline is at least −``tolerance`` (a fraction, 0.005 = half a point) and it costs fewer
    MACs, or when the difference is above 0; its claim is judged by :func:`judge_claim`.
    """
    base = next((r for r in records if r.baseline), None)
    if base is None or base.val_accuracy is None:
        return []
    out = []
    for r in records:
        if r.baseline or r.val_accuracy is None:
            continue
        comparison = compare(base, r)
        delta = comparison.mean
        if delta is None:
            continue
        fewer = r.macs is not None and base.macs is not None and r.macs < base.macs
        cheaper = fewer and delta >= -tolerance
        if not (cheaper or delta > 0):
            continue
        claim, verdict, basis = judge_claim(comparison, cheaper=cheaper, tolerance=tolerance)
        test, base_test = r.test_accuracy, base.test_accuracy
        out.append(
            Recommendation(
                **{
                    **{f.name: getattr(r, f.name) for f in fields(ValidatedConfig)},
                    "comparison": comparison,
                },
                claim=claim,
                verdict=verdict,
                basis=basis,
                confirmed=verdict == "confirmed",
                accuracy_delta=delta,
                test_delta=None if test is None or base_test is None else test - base_test,
                macs_ratio=_ratio(r.macs, base.macs),
                params_ratio=_ratio(r.params, base.params),
            )
        )
    return sorted(out, key=lambda r: (not r.confirmed, r.macs or 0, -(r.val_accuracy or 0.0)))


def _ratio(x: int | None, base: int | None) -> float | None:
    return x / base if x is not None and base else None


# JSON-ready forms of the same numbers (the data a study stores and ``study.json`` holds).


def aggregate(runs: Sequence[Mapping[str, Any]], *, level: float = LEVEL) -> list[dict[str, Any]]:
    """:func:`aggregate_runs` of stored runs (dicts), as dicts."""
    return [
        c.to_dict() for c in aggregate_runs([ValidationRun.from_dict(r) for r in runs], level=level)
    ]


def paired(
    base: Mapping[str, Any], record: Mapping[str, Any], *, level: float = LEVEL
) -> dict[str, Any]:
    """:func:`compare` of two aggregated configurations (dicts), as a dict."""
    return compare(
        ValidatedConfig.from_dict(base), ValidatedConfig.from_dict(record), level=level
    ).to_dict()


def recommended(records: Sequence[Mapping[str, Any]], *, tolerance: float) -> list[dict[str, Any]]:
    """:func:`recommend` of aggregated configurations (dicts), as dicts."""
    configs = [ValidatedConfig.from_dict(r) for r in records]
    return [r.to_dict() for r in recommend(configs, tolerance=tolerance)]


def trial_row(t: FrozenTrial) -> TrialRow:
    """The summary's row of trial ``t`` (from its :class:`TrialRecord`)."""
    rec = TrialRecord.of(t)
    prior = rec.prior
    return TrialRow(
        number=t.number,
        state=t.state.name.lower(),
        source=rec.source,
        knobs=dict(rec.knobs),
        params_searched=dict(t.params),
        accuracy=rec.accuracy,
        macs=rec.macs,
        params=rec.params,
        epochs=rec.epochs,
        tail_length=len(rec.tail),
        evenness=rec.evenness,
        saturation=dict(rec.saturation),
        findings=rec.findings,
        status=rec.status,
        counted=rec.counts and t.state != TrialState.WAITING,
        reason=rec.reason,
        parent=rec.parent,
        retry_of=rec.retry_of,
        unproductive_before_training=None if prior is None else len(prior.unproductive),
        wall_time=rec.wall_time,
        progress=tuple(p.accuracy for p in rec.progress),
        values=tuple(t.values) if t.values is not None else None,
    )


def pareto_numbers(study: optuna.Study) -> list[int]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    if len(study.directions) > 1:
        return sorted(t.number for t in study.best_trials)
    return [study.best_trial.number]


def not_learned(trials: Sequence[FrozenTrial]) -> int:
    """How many trials ended with a proxy that did not learn."""
    return sum(1 for t in trials if TrialRecord.of(t).status == "not_learned")


def study_summary(
    study: optuna.Study,
    *,
    tolerance: float = 0.005,
    storage: str | None = None,
    settings_used: Mapping[str, Any] | None = None,
) -> StudySummary:
    """Everything the study report shows, as a typed record (``to_dict()``: ``study.json``).

    ``storage``: the storage URL to show (passwords redacted by the caller); ``settings_used``:
    the run's full settings, when the summary is made by the run itself.
    """
    trials = study.get_trials(deepcopy=False)
    records = validations(study)
    ranked = [r for r in records if r.proxy_accuracy is not None and r.val_accuracy is not None]
    attrs = study.user_attrs
    budget = attrs.get("budget")
    seeds = attrs.get("validate_seeds")
    return StudySummary(
        study_name=study.study_name,
        settings=StudySettings.from_dict(attrs.get("settings") or {}),
        space={k: list(v) for k, v in (attrs.get("space") or {}).items()},
        fixed=dict(attrs.get("fixed") or {}),
        command=attrs.get("command"),
        objectives=tuple(attrs.get("objectives") or ()),
        budget=None if budget is None else int(budget),
        counted_trials=len(tr.counted(trials)),
        trials=tuple(trial_row(t) for t in trials),
        pareto=tuple(pareto_numbers(study)),
        validation=tuple(records),
        recommended=tuple(recommend(records, tolerance=tolerance)),
        tolerance=tolerance,
        validate_seeds=None if seeds is None else int(seeds),
        not_learned=not_learned(trials),
        rank_agreement=spearman(
            [r.proxy_accuracy or 0.0 for r in ranked], [r.val_accuracy or 0.0 for r in ranked]
        ),
        storage=storage,
        settings_used=None if settings_used is None else dict(settings_used),
    )
