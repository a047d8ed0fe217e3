"""Plots of the study page: trials and Pareto front, history, importances, run profiles."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from satadvisor.report._page import fmt_value
from satadvisor.report._plots import (
    COLOR_EVAL,
    COLOR_LAYER,
    COLOR_TAIL,
    Figure,
    base_layout,
    label,
    log_ticks,
)
from satadvisor.search.study_record import StudySummary, TrialRow, ValidatedConfig

# =============================================================================================
# Study page (``satadvisor.study/2`` summaries): trials, Pareto front, history, importances,
# before/after saturation profiles of validated configurations.

COLOR_FRONT = "#1F2937"
COLOR_BEST = "#54A24B"
COLOR_PRUNED = "#BAB0AC"

#: Trial source category → (legend name, colour, marker symbol). ``rule:*`` sources share one.
SOURCE_STYLES: dict[str, tuple[str, str, str]] = {
    "baseline": ("baseline", "#1F2937", "star"),
    "rule": ("rule candidate", COLOR_EVAL, "diamond"),
    "sampler": ("sampler", COLOR_LAYER, "circle"),
    "random": ("random", "#72B7B2", "square"),
    "other": ("other", "#9CA3AF", "circle"),
}


def source_category(source: str | None) -> str:
    """``"rule:efficiency"`` → ``"rule"``; baseline, sampler and random as they are; else other."""
    text = str(source or "sampler")
    if text.startswith("rule:") or text == "rule":
        return "rule"
    return text if text in SOURCE_STYLES else "other"


def knobs_text(knobs: Mapping[str, Any] | None) -> str:
    """``depth=6 kernel_size=3 resolution=16`` (plain text; escape it before plotly sees it)."""
    return " ".join(f"{k}={fmt_value(v)}" for k, v in (knobs or {}).items())


def _complete_points(summary: StudySummary) -> list[TrialRow]:
    """Complete trials that have both a proxy accuracy and MACs, by trial number."""
    rows = [
        t for t in summary.trials if t.state == "complete" and t.accuracy is not None and t.macs
    ]
    return sorted(rows, key=lambda t: t.number)


def _accuracy(t: TrialRow) -> float:
    assert t.accuracy is not None  # the rows of _complete_points have one
    return t.accuracy


def pareto_front(accuracy: Sequence[float], macs: Sequence[float]) -> list[bool]:
    """Which points no other point dominates (accuracy ≥ and MACs ≤, one of them strictly)."""
    points = list(zip(accuracy, macs, strict=True))
    return [
        not any(
            (a2 >= a and m2 <= m) and (a2 > a or m2 < m)
            for j, (a2, m2) in enumerate(points)
            if j != i
        )
        for i, (a, m) in enumerate(points)
    ]


# ---------------------------------------------------------------------------------------------
# Pareto front: proxy accuracy vs MACs of every complete trial.


@dataclass(frozen=True)
class ParetoData:
    """Complete trials: proxy accuracy (fraction in [0, 1]) against MACs per image."""

    number: tuple[int, ...]
    accuracy: tuple[float, ...]
    macs: tuple[float, ...]
    source: tuple[str, ...]
    knobs: tuple[str, ...]
    front: tuple[bool, ...]
    baseline: int | None

    @property
    def front_numbers(self) -> tuple[int, ...]:
        """Trial numbers on the front, cheapest first."""
        idx = sorted((i for i, f in enumerate(self.front) if f), key=lambda i: self.macs[i])
        return tuple(self.number[i] for i in idx)


def pareto_data(summary: StudySummary) -> ParetoData | None:
    """The trials of the Pareto plot, or None without a complete trial.

    The front is the study's (``summary.pareto``, which may span more objectives than the
    two axes); a summary without it gets the accuracy–MACs front computed here.
    """
    rows = _complete_points(summary)
    if not rows:
        return None
    numbers = tuple(t.number for t in rows)
    accuracy = tuple(_accuracy(t) for t in rows)
    macs = tuple(float(t.macs or 0) for t in rows)
    stored = set(summary.pareto) & set(numbers)
    front = tuple(n in stored for n in numbers) if stored else tuple(pareto_front(accuracy, macs))
    baseline = next((t.number for t in rows if t.source == "baseline"), None)
    return ParetoData(
        number=numbers,
        accuracy=accuracy,
        macs=macs,
        source=tuple(t.source for t in rows),
        knobs=tuple(knobs_text(t.knobs) for t in rows),
        front=front,
        baseline=baseline,
    )


def _source_traces(
    idx_by_category: Mapping[str, list[int]],
    x: Sequence[float],
    y: Sequence[float],
    customdata: Sequence[list[Any]],
    hovertemplate: str,
    emphasis: Sequence[bool] | None = None,
) -> list[dict[str, Any]]:
    """One marker trace per source category; emphasised points bigger with a dark ring."""
    traces = []
    for category, (name, color, symbol) in SOURCE_STYLES.items():
        idx = idx_by_category.get(category) or []
        if not idx:
            continue
        big = [bool(emphasis[i]) if emphasis is not None else False for i in idx]
        base = 15 if category == "baseline" else 9
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": name,
                "x": [x[i] for i in idx],
                "y": [y[i] for i in idx],
                "marker": {
                    "color": color,
                    "symbol": symbol,
                    "size": [base + 4 if b else base for b in big],
                    "opacity": 0.9,
                    "line": {
                        "color": [COLOR_FRONT if b else "#FFFFFF" for b in big],
                        "width": [2 if b else 1 for b in big],
                    },
                },
                "customdata": [customdata[i] for i in idx],
                "hovertemplate": hovertemplate,
            }
        )
    return traces


def _by_category(sources: Sequence[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        out.setdefault(source_category(source), []).append(i)
    return out


_TRIAL_HOVER = (
    "<b>trial #%{customdata[0]}</b> · %{customdata[1]}<br>%{customdata[2]}<br>"
    "proxy accuracy %{customdata[3]:.2%}<br>%{customdata[4]:.4s} MACs<extra></extra>"
)


def _hover_rows(data: ParetoData | HistoryData) -> list[list[Any]]:
    """Per trial the values :data:`_TRIAL_HOVER` shows (user strings escaped)."""
    return [
        [n, label(src), label(kn), acc, macs]
        for n, src, kn, acc, macs in zip(
            data.number, data.source, data.knobs, data.accuracy, data.macs, strict=True
        )
    ]


def pareto_figure(data: ParetoData) -> Figure:
    """Scatter of accuracy vs MACs (log axis), coloured by source; the front ringed and joined."""
    custom = _hover_rows(data)
    order = [data.number.index(n) for n in data.front_numbers]
    line = {
        "type": "scatter",
        "mode": "lines",
        "name": "Pareto front",
        "x": [data.macs[i] for i in order],
        "y": [data.accuracy[i] for i in order],
        "line": {"color": COLOR_FRONT, "width": 1.5, "dash": "dot"},
        "hoverinfo": "skip",
    }
    markers = _source_traces(
        _by_category(data.source), data.macs, data.accuracy, custom, _TRIAL_HOVER, data.front
    )
    traces = [line, *markers]
    layout = base_layout(
        xaxis={
            "title": {"text": "MACs per image (log)"},
            "type": "log",
            "tickvals": log_ticks(min(data.macs), max(data.macs)),
            "tickformat": "~s",
        },
        yaxis={"title": {"text": "proxy accuracy"}, "tickformat": ".0%", "hoverformat": ".1%"},
        height=400,
    )
    if data.baseline is not None:
        i = data.number.index(data.baseline)
        layout["annotations"] = [
            {
                "x": _log10(data.macs[i]),
                "y": data.accuracy[i],
                "text": "baseline",
                "showarrow": True,
                "arrowhead": 0,
                "ax": 0,
                "ay": 30,
                "font": {"size": 11, "color": COLOR_FRONT},
            }
        ]
    return {"data": traces, "layout": layout}


def _log10(value: float) -> float:
    # Annotations on a log axis take log10 coordinates.
    return math.log10(value) if value > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Optimisation history: proxy accuracy per trial number and the best so far.


@dataclass(frozen=True)
class HistoryData:
    """Complete trials by number with their proxy accuracy and the running best (fractions)."""

    number: tuple[int, ...]
    accuracy: tuple[float, ...]
    source: tuple[str, ...]
    knobs: tuple[str, ...]
    macs: tuple[float, ...]
    best: tuple[float, ...]
    pruned_number: tuple[int, ...]
    pruned_accuracy: tuple[float, ...]


def history_data(summary: StudySummary) -> HistoryData | None:
    """The optimisation history, or None without a complete trial."""
    rows = _complete_points(summary)
    if not rows:
        return None
    best: list[float] = []
    for t in rows:
        best.append(max(_accuracy(t), best[-1]) if best else _accuracy(t))
    pruned = sorted(
        (t for t in summary.trials if t.state == "pruned" and t.accuracy is not None),
        key=lambda t: t.number,
    )
    return HistoryData(
        number=tuple(t.number for t in rows),
        accuracy=tuple(_accuracy(t) for t in rows),
        source=tuple(t.source for t in rows),
        knobs=tuple(knobs_text(t.knobs) for t in rows),
        macs=tuple(float(t.macs or 0) for t in rows),
        best=tuple(best),
        pruned_number=tuple(t.number for t in pruned),
        pruned_accuracy=tuple(_accuracy(t) for t in pruned),
    )


def history_figure(data: HistoryData) -> Figure:
    """Accuracy per trial number, coloured by source, with the best-so-far as a step line."""
    custom = _hover_rows(data)
    traces: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "best so far",
            "x": list(data.number),
            "y": list(data.best),
            "line": {"color": COLOR_BEST, "width": 2, "shape": "hv"},
            "hovertemplate": "best after trial #%{x}: %{y:.2%}<extra></extra>",
        }
    ]
    traces += _source_traces(
        _by_category(data.source), data.number, data.accuracy, custom, _TRIAL_HOVER
    )
    if data.pruned_number:
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "pruned",
                "x": list(data.pruned_number),
                "y": list(data.pruned_accuracy),
                "marker": {"color": COLOR_PRUNED, "symbol": "x", "size": 8},
                "hovertemplate": "trial #%{x} pruned at %{y:.2%}<extra></extra>",
            }
        )
    layout = base_layout(
        # half a trial of room on both sides, so the first and last markers are not clipped
        xaxis={
            "title": {"text": "trial number"},
            "range": [min(data.number) - 0.5, max(data.number) + 0.5],
        },
        yaxis={"title": {"text": "proxy accuracy"}, "tickformat": ".0%", "hoverformat": ".1%"},
        height=340,
    )
    return {"data": traces, "layout": layout}


# ---------------------------------------------------------------------------------------------
# Parameter importances: one-way ANOVA η² per knob.


def param_importances(
    knobs: Sequence[Mapping[str, Any]], accuracy: Sequence[float]
) -> dict[str, float]:
    """Share of the accuracy variance each knob explains on its own, normalised to sum 1.

    For every knob that takes at least two values, the trials are grouped by its value and
    η² = SS_between / SS_total (one-way ANOVA: the variance of the per-value mean accuracy,
    weighted by group size, over the total variance). The η² are then divided by their sum.
    A cheap, marginal estimate — not fANOVA: knobs that were varied together (a rule changing
    depth and resolution at once) share credit, and interactions are not separated. A knob
    missing from some of the trials is left out. Returns {}
    with fewer than 3 trials, constant accuracy or no varying knob. Knobs in descending order.
    """
    if len(knobs) != len(accuracy):
        raise ValueError("knobs and accuracy must have the same length")
    y = [float(a) for a in accuracy]
    if len(y) < 3:
        return {}
    mean = sum(y) / len(y)
    total = sum((v - mean) ** 2 for v in y)
    if total <= 0.0:
        return {}
    names: list[str] = []
    for row in knobs:
        names.extend(k for k in row if k not in names)
    eta: dict[str, float] = {}
    for name in names:
        groups: dict[str, list[float]] = {}
        for row, value in zip(knobs, y, strict=True):
            if name in row:
                # json text as the group key: knob values may be lists (unhashable).
                key = json.dumps(row[name], sort_keys=True, default=str)
                groups.setdefault(key, []).append(value)
        if len(groups) < 2 or sum(len(g) for g in groups.values()) != len(y):
            continue
        between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups.values())
        eta[name] = between / total
    norm = sum(eta.values())
    if norm <= 0.0:
        return {}
    return dict(sorted(((k, v / norm) for k, v in eta.items()), key=lambda kv: -kv[1]))


@dataclass(frozen=True)
class ImportanceData:
    """Knobs (most important first) and their importance (fractions summing to 1)."""

    knobs: tuple[str, ...]
    importance: tuple[float, ...]
    n_trials: int


def importance_data(summary: StudySummary) -> ImportanceData | None:
    """Importances from the complete trials' knobs and proxy accuracy, or None (see above)."""
    rows = _complete_points(summary)
    scores = param_importances([t.knobs for t in rows], [_accuracy(t) for t in rows])
    if not scores:
        return None
    return ImportanceData(
        knobs=tuple(scores), importance=tuple(scores.values()), n_trials=len(rows)
    )


def importance_figure(data: ImportanceData) -> Figure:
    """Horizontal bars, the most important knob on top."""
    labels = [label(k) for k in data.knobs]
    trace = {
        "type": "bar",
        "orientation": "h",
        "x": list(data.importance),
        "y": labels,
        "marker": {"color": COLOR_LAYER},
        "text": [f"{100 * v:.0f} %" for v in data.importance],
        "textposition": "outside",
        "cliponaxis": False,
        "hovertemplate": "%{y}: %{x:.1%} of the explained variance<extra></extra>",
    }
    layout = base_layout(
        xaxis={
            "title": {"text": "importance (share of explained accuracy variance)"},
            "tickformat": ".0%",
            "range": [0, min(1.0, max(data.importance) * 1.2) or 1.0],
        },
        yaxis={"type": "category", "autorange": "reversed", "showgrid": False},
        showlegend=False,
        height=max(180, 80 + 34 * len(labels)),
    )
    return {"data": [trace], "layout": layout}


# ---------------------------------------------------------------------------------------------
# Saturation profile of one validated configuration (before/after charts).


@dataclass(frozen=True)
class RunProfileData:
    """Saturation per layer of one full run (fractions in [0, 1]), forward order, tail flags."""

    layers: tuple[str, ...]
    saturation: tuple[float | None, ...]
    tail: tuple[bool, ...]


def run_profile_data(record: ValidatedConfig | None) -> RunProfileData | None:
    """The profile of a validated configuration (its first run's saturation and tail), or None."""
    saturation = record.saturation if record is not None else {}
    if not saturation or not any(v is not None for v in saturation.values()):
        return None
    tail = set(record.tail if record is not None else ())
    return RunProfileData(
        layers=tuple(str(k) for k in saturation),
        saturation=tuple(saturation.values()),
        tail=tuple(str(k) in tail for k in saturation),
    )


def run_profile_figure(data: RunProfileData, *, y_max: float | None = None) -> Figure:
    """Bars per layer, tail bars coral; ``y_max`` shares the scale between before and after."""
    labels = [label(n) for n in data.layers]
    traces = []
    for is_tail, name, color in ((False, "layer", COLOR_LAYER), (True, "tail", COLOR_TAIL)):
        idx = [i for i, t in enumerate(data.tail) if t == is_tail]
        if not idx:
            continue
        traces.append(
            {
                "type": "bar",
                "name": name,
                "x": [labels[i] for i in idx],
                "y": [data.saturation[i] for i in idx],
                "marker": {"color": color},
                "hovertemplate": "<b>%{x}</b><br>saturation %{y:.3f}<extra></extra>",
            }
        )
    top = y_max if y_max is not None else max((s for s in data.saturation if s), default=1.0)
    layout = base_layout(
        barmode="relative",
        bargap=0.25,
        xaxis={"type": "category", "categoryorder": "array", "categoryarray": labels},
        yaxis={"title": {"text": "saturation"}, "range": [0, min(1.0, top * 1.15) or 1.0]},
        height=280,
        margin={"t": 30},
    )
    return {"data": traces, "layout": layout}
