"""A study as plain data (``study.json``, schema ``satadvisor.study/1``) and the numbers in it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from satadvisor.search import trials as tr

SCHEMA = "satadvisor.study/1"
VALIDATION_PREFIX = "validation:"


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
    """The full-run validation records stored with the study, baseline first."""
    records = [v for k, v in study.user_attrs.items() if k.startswith(VALIDATION_PREFIX)]
    return sorted(records, key=lambda r: (not r.get("baseline", False), r.get("trial", 0)))


def _trial_row(t: FrozenTrial) -> dict[str, Any]:
    a = t.user_attrs
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "source": a.get(tr.SOURCE, "sampler"),
        "knobs": a.get("knobs", tr.trial_params(t)),
        "params_searched": tr.trial_params(t),
        "accuracy": a.get("accuracy"),
        "macs": a.get("macs"),
        "params": a.get("params"),
        "tail_length": a.get("tail_length"),
        "evenness": a.get("evenness"),
        "saturation": a.get("saturation", {}),
        "findings": a.get("findings", []),
        "reason": a.get(tr.REASON),
        "skipped": a.get(tr.SKIPPED),
        "interrupted": a.get(tr.INTERRUPTED),
        "parent": a.get("parent"),
        "wall_time": a.get("wall_time"),
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
    """Validated configurations worth adopting, best first.

    A configuration is recommended when its full-run test accuracy is at least the baseline's
    minus ``tolerance`` (a fraction, 0.005 = half a point) and it costs fewer MACs, or when it
    is more accurate than the baseline. Sorted by MACs (cheapest first) among equals.
    """
    base = next((r for r in records if r.get("baseline")), None)
    if base is None or base.get("test_accuracy") is None:
        return []
    out = []
    for r in records:
        if r.get("baseline") or r.get("test_accuracy") is None:
            continue
        cheaper = (
            r["macs"] < base["macs"] and r["test_accuracy"] >= base["test_accuracy"] - tolerance
        )
        better = r["test_accuracy"] > base["test_accuracy"]
        if cheaper or better:
            out.append(
                {
                    **r,
                    "confirmed": True,
                    "accuracy_delta": r["test_accuracy"] - base["test_accuracy"],
                    "macs_ratio": r["macs"] / base["macs"] if base["macs"] else None,
                    "params_ratio": r["params"] / base["params"] if base["params"] else None,
                }
            )
    return sorted(out, key=lambda r: (r["macs"], -r["test_accuracy"]))


def study_summary(
    study: optuna.Study, *, tolerance: float = 0.005, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Everything the study report shows, as JSON-ready data."""
    trials = study.get_trials(deepcopy=False)
    records = validations(study)
    paired = [
        r
        for r in records
        if r.get("proxy_accuracy") is not None and r.get("test_accuracy") is not None
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
        "rank_agreement": spearman(
            [r["proxy_accuracy"] for r in paired], [r["test_accuracy"] for r in paired]
        ),
        **dict(extra or {}),
    }
