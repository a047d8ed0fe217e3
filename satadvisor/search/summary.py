"""A study as plain data (``study.json``, schema ``satadvisor.study/2``) and the numbers in it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from satadvisor.search import record as tr
from satadvisor.search.record import TrialRecord

SCHEMA = "satadvisor.study/2"
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


def validations(study: optuna.Study) -> list[dict[str, Any]]:
    """The full-run validation of the study, one record per configuration, baseline first.

    The study stores one record per (configuration, seed) run (see
    :mod:`satadvisor.search.validate`); :func:`aggregate` joins them. Records of versions that
    chose on the test set (no ``seed``) are left out: rerunning the study validates again.
    """
    runs = [
        v
        for k, v in study.user_attrs.items()
        if k.startswith(VALIDATION_PREFIX) and isinstance(v, Mapping) and "seed" in v
    ]
    return aggregate(runs)


def aggregate(runs: Sequence[Mapping[str, Any]], *, level: float = LEVEL) -> list[dict[str, Any]]:
    """One record per configuration from its per-seed runs, baseline first, then by trial.

    The record keeps the first seed's run (profile, epochs, sizes) and adds ``seeds``, ``runs``
    (seed, status, ``val_accuracy``, ``test_accuracy``, epochs, wall time per seed),
    ``val_accuracy`` / ``test_accuracy`` (means over the seeds that finished; validation
    accuracy is what selection reads, test accuracy is reported only), their sample standard
    deviations ``val_std`` / ``test_std`` (None with fewer than two seeds), the sum of wall
    times, the most epochs of a run, and, for every configuration but the baseline, ``comparison``: the paired difference
    of validation accuracy to the baseline over the seeds both have (:func:`paired`).
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault(tr.config_key(r.get("knobs") or {}), []).append(r)
    records = []
    for group in groups.values():
        group = sorted(group, key=lambda r: int(r.get("seed") or 0))
        first = group[0]
        vals = [r["val_accuracy"] for r in group if r.get("val_accuracy") is not None]
        tests = [r["test_accuracy"] for r in group if r.get("test_accuracy") is not None]
        record = {k: v for k, v in first.items() if k not in _RUN_KEYS}
        record.update(
            seeds=[r.get("seed") for r in group],
            runs=[{k: r.get(k) for k in _RUN_KEYS} for r in group],
            status=_worst_status([str(r.get("status") or "completed") for r in group]),
            val_accuracy=_mean(vals),
            val_std=_std(vals),
            test_accuracy=_mean(tests),
            test_std=_std(tests),
            wall_time=sum(float(r.get("wall_time") or 0.0) for r in group),
            epochs=max((int(r.get("epochs") or 0) for r in group), default=0),
        )
        records.append(record)
    records.sort(key=lambda r: (not r.get("baseline", False), r.get("trial", 0)))
    base = next((r for r in records if r.get("baseline")), None)
    for r in records:
        if base is not None and r is not base:
            r["comparison"] = paired(base, r, level=level)
    return records


#: Fields of one seed's run, kept per seed in an aggregated record's ``runs``.
_RUN_KEYS = ("seed", "status", "val_accuracy", "test_accuracy", "epochs", "wall_time")
#: Statuses of a full run that ended without a usable score (left out of the pairs).
UNFINISHED = ("diverged", "failed", "pruned")


def _worst_status(statuses: Sequence[str]) -> str:
    for status in (*UNFINISHED, "not_learned"):
        if status in statuses:
            return status
    return statuses[0] if statuses else "completed"


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _std(values: Sequence[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def _val_by_seed(record: Mapping[str, Any]) -> dict[Any, float]:
    """Validation accuracy per seed of an aggregated record (a bare record: its one value)."""
    runs = record.get("runs")
    if runs is None:
        value = record.get("val_accuracy")
        return {} if value is None else {record.get("seed"): float(value)}
    return {
        r.get("seed"): float(r["val_accuracy"]) for r in runs if r.get("val_accuracy") is not None
    }


def t_interval(deltas: Sequence[float], *, level: float = LEVEL) -> tuple[float, float] | None:
    """The ``level`` Student-t confidence interval of the mean of ``deltas`` (None below 2)."""
    d = np.asarray(deltas, dtype=np.float64)
    if d.size < 2:
        return None
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    mean = float(d.mean())
    return mean - half, mean + half


def paired(
    base: Mapping[str, Any], record: Mapping[str, Any], *, level: float = LEVEL
) -> dict[str, Any]:
    """Validation accuracy of ``record`` minus the baseline's, paired by seed.

        ``seeds`` both finished, their ``deltas``, ``n``, the ``mean`` difference and its ``level``
        t-interval (``low``, ``high``; None with fewer than two pairs), and ``accuracy``: "more
        accurate" (interval above 0), "less accurate" (below 0), "tie" (it contains 0) or None (no
        interval). ``missing``: seeds run by either side that the other lacks or that have no score
    (diverged, failed, or not run yet).
    """
    b, r = _val_by_seed(base), _val_by_seed(record)
    seeds = sorted((s for s in b if s in r), key=lambda s: (s is None, s))
    deltas = [r[s] - b[s] for s in seeds]
    interval = t_interval(deltas, level=level)
    low, high = interval if interval is not None else (None, None)
    accuracy = None
    if low is not None and high is not None:
        accuracy = "more accurate" if low > 0 else "less accurate" if high < 0 else "tie"
    every = {x.get("seed") for x in (*(base.get("runs") or []), *(record.get("runs") or []))}
    return {
        "seeds": seeds,
        "deltas": deltas,
        "n": len(seeds),
        "mean": _mean(deltas),
        "low": low,
        "high": high,
        "level": level,
        "accuracy": accuracy,
        "missing": len(every - set(seeds)) if every else 0,
    }


def judge(comparison: Mapping[str, Any], *, cheaper: bool, tolerance: float) -> dict[str, Any]:
    """Whether the paired comparison carries a recommendation's claim.

    ``claim``: "cheaper" (fewer MACs, at most ``tolerance`` less accurate) or "more accurate".
    ``verdict``: "confirmed" when the interval's lower bound lies above −``tolerance`` (cheaper)
    or above 0 (more accurate); "tie" when a more-accurate claim's interval contains 0;
    otherwise "not confirmed". ``basis``: "interval", "one seed" (no interval: nothing is
    confirmed) or "missing runs" (a seed of either side has no score: not confirmed).
    """
    claim = "cheaper" if cheaper else "more accurate"
    low = comparison.get("low")
    if comparison.get("missing"):
        return {"claim": claim, "verdict": "not confirmed", "basis": "missing runs"}
    if low is None:
        return {"claim": claim, "verdict": "not confirmed", "basis": "one seed"}
    floor = -tolerance if cheaper else 0.0
    if low > floor:
        verdict = "confirmed"
    elif not cheaper and comparison.get("accuracy") == "tie":
        verdict = "tie"
    else:
        verdict = "not confirmed"
    return {"claim": claim, "verdict": verdict, "basis": "interval"}


def _trial_row(t: FrozenTrial) -> dict[str, Any]:
    rec = TrialRecord.of(t)
    prior = rec.prior
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "source": rec.source,
        "knobs": rec.knobs,
        "params_searched": dict(t.params),
        "accuracy": rec.accuracy,
        "macs": rec.macs,
        "params": rec.params,
        "epochs": rec.epochs,
        "tail_length": len(rec.tail),
        "evenness": rec.evenness,
        "saturation": rec.saturation,
        "findings": list(rec.findings),
        "status": rec.status,
        "counted": rec.counts and t.state != TrialState.WAITING,
        "reason": rec.reason,
        "parent": rec.parent,
        "retry_of": rec.retry_of,
        "unproductive_before_training": None if prior is None else len(prior.unproductive),
        "wall_time": rec.wall_time,
        "progress": [p.accuracy for p in rec.progress],
        "values": list(t.values) if t.values is not None else None,
    }


def pareto_numbers(study: optuna.Study) -> list[int]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    if len(study.directions) > 1:
        return sorted(t.number for t in study.best_trials)
    return [study.best_trial.number]


def recommended(records: Sequence[Mapping[str, Any]], *, tolerance: float) -> list[dict[str, Any]]:
    """Validated configurations worth adopting, confirmed ones first, each cheapest first.

    Only validation accuracy chooses and orders (``records`` as :func:`aggregate` makes them;
    test accuracy is carried along for the report and never read here). A configuration
    qualifies when its mean paired difference to the baseline is at least −``tolerance`` (a
    fraction, 0.005 = half a point) and it costs fewer MACs, or when the difference is above
    0. Each entry adds ``comparison`` (:func:`paired`), ``claim``/``verdict``/``basis``
    (:func:`judge`), ``confirmed``, ``accuracy_delta`` (the mean paired validation
    difference), ``test_delta`` (reported only) and the MACs and parameter ratios.
    """
    base = next((r for r in records if r.get("baseline")), None)
    if base is None or base.get("val_accuracy") is None:
        return []
    out = []
    for r in records:
        if r.get("baseline") or r.get("val_accuracy") is None:
            continue
        comparison = paired(base, r)
        delta = comparison["mean"]
        if delta is None:
            continue
        cheaper = r["macs"] < base["macs"] and delta >= -tolerance
        if not (cheaper or delta > 0):
            continue
        verdict = judge(comparison, cheaper=cheaper, tolerance=tolerance)
        test, base_test = r.get("test_accuracy"), base.get("test_accuracy")
        out.append(
            {
                **r,
                "comparison": comparison,
                **verdict,
                "confirmed": verdict["verdict"] == "confirmed",
                "accuracy_delta": delta,
                "test_delta": None if test is None or base_test is None else test - base_test,
                "macs_ratio": r["macs"] / base["macs"] if base["macs"] else None,
                "params_ratio": r["params"] / base["params"] if base["params"] else None,
            }
        )
    return sorted(out, key=lambda r: (not r["confirmed"], r["macs"], -r["val_accuracy"]))


def not_learned(trials: Sequence[FrozenTrial]) -> int:
    """How many trials ended with a proxy that did not learn."""
    return sum(1 for t in trials if TrialRecord.of(t).status == "not_learned")


def study_summary(
    study: optuna.Study, *, tolerance: float = 0.005, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Everything the study report shows, as JSON-ready data."""
    trials = study.get_trials(deepcopy=False)
    records = validations(study)
    ranked = [
        r
        for r in records
        if r.get("proxy_accuracy") is not None and r.get("val_accuracy") is not None
    ]
    rows = [_trial_row(t) for t in trials]
    return {
        "schema": SCHEMA,
        "study_name": study.study_name,
        "settings": study.user_attrs.get("settings", {}),
        "space": study.user_attrs.get("space", {}),
        "fixed": study.user_attrs.get("fixed", {}),
        "command": study.user_attrs.get("command"),
        "objectives": study.user_attrs.get("objectives", []),
        "budget": study.user_attrs.get("budget"),
        "counted_trials": len(tr.counted(trials)),
        "trials": rows,
        "pareto": pareto_numbers(study),
        "validation": records,
        "recommended": recommended(records, tolerance=tolerance),
        "tolerance": tolerance,
        "validate_seeds": study.user_attrs.get("validate_seeds"),
        "not_learned": not_learned(trials),
        "rank_agreement": spearman(
            [r["proxy_accuracy"] for r in ranked], [r["val_accuracy"] for r in ranked]
        ),
        **dict(extra or {}),
    }
