"""Plots of a report, in two steps: extract a plain data object, then render a plotly figure dict.

The ``*_data`` functions read the analysis dict (or the study summary) and return small frozen dataclasses (or None
when there is nothing to plot); the ``*_figure`` functions turn those into plotly figure dicts
(``{"data": [...], "layout": {...}}``) that the page hands to ``Plotly.newPlot``. Tests check
the data and the figure dicts, not pixels.

Plotly renders trace and axis text as a small subset of HTML, so every user-supplied string
(layer names) goes through :func:`label` (HTML-escaped; plotly shows the characters as typed).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from satadvisor.report._page import fmt_value

Figure = dict[str, Any]

# Palette (Tableau 10 shades): calm blue for ordinary layers, coral for the tail.
COLOR_LAYER = "#4C78A8"
COLOR_TAIL = "#E45756"
COLOR_EVAL = "#F58518"
COLOR_BORDER = "#6B7280"
COLOR_INPUT = "#54A24B"
HATCH_UNPRODUCTIVE = "/"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


def label(text: str) -> str:
    """A user-supplied string made safe for plotly's HTML-like text rendering."""
    return html.escape(str(text), quote=False)


def base_layout(**overrides: Any) -> dict[str, Any]:
    """The layout every chart starts from: system font, light grid, tight margins."""
    axis = {"gridcolor": "#E5E7EB", "zeroline": False, "linecolor": "#D1D5DB", "automargin": True}
    layout: dict[str, Any] = {
        "font": {"family": FONT, "size": 12, "color": "#1F2937"},
        "paper_bgcolor": "#FFFFFF",
        "plot_bgcolor": "#FFFFFF",
        "margin": {"l": 56, "r": 16, "t": 36, "b": 48},
        "hoverlabel": {"font": {"family": "ui-monospace, SFMono-Regular, Menlo, monospace"}},
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        "xaxis": dict(axis),
        "yaxis": dict(axis),
    }
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(layout.get(key), Mapping):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def _border_marker(index: int, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A dashed vertical line before category ``index`` and its label (paper-relative y)."""
    x = index - 0.5
    shape = {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": x,
        "x1": x,
        "y0": 0,
        "y1": 1,
        "line": {"color": COLOR_BORDER, "width": 1.5, "dash": "dash"},
    }
    annotation = {
        "xref": "x",
        "yref": "paper",
        "x": x,
        "y": 1,
        "text": text,
        "showarrow": False,
        "xanchor": "left",
        "yanchor": "bottom",
        "xshift": 4,
        "font": {"size": 11, "color": COLOR_BORDER},
    }
    return shape, annotation


def log_ticks(lo: float, hi: float) -> list[int]:
    """Tick values 1, 2, 5, 10, 20, 50, … covering [lo, hi] (plotly's log ticks label 2 and 5
    of every decade as bare digits, which reads as nonsense)."""
    ticks: list[int] = []
    decade = 1
    while decade <= 10 * hi:
        ticks.extend(m * decade for m in (1, 2, 5) if lo / 2 <= m * decade <= hi * 2)
        decade *= 10
    return ticks


# ---------------------------------------------------------------------------------------------
# Saturation profile: one bar per layer, forward order.


def _position(layers: tuple[str, ...], name: str | None) -> int | None:
    """Index of ``name`` in ``layers``, or None when absent."""
    return layers.index(name) if name is not None and name in layers else None


@dataclass(frozen=True)
class ProfileData:
    """Final saturation per layer (fraction in [0, 1], None = not measured), forward order."""

    layers: tuple[str, ...]
    saturation: tuple[float | None, ...]
    tail: tuple[bool, ...]
    unproductive: tuple[bool, ...]
    critical: tuple[bool, ...]
    width: tuple[int | None, ...]
    intrinsic_dimension: tuple[int | None, ...]
    r_min: tuple[int | None, ...]
    border_layer: str | None
    resolution: int

    @property
    def border_index(self) -> int | None:
        """Position of the receptive-field border layer in :attr:`layers`, or None."""
        return _position(self.layers, self.border_layer)


def profile_data(analysis: Mapping[str, Any]) -> ProfileData | None:
    """The saturation profile of an analysis, or None when no layer has a measured saturation."""
    layers = analysis["layers"]
    if not any(layer.get("saturation") is not None for layer in layers):
        return None
    return ProfileData(
        layers=tuple(str(layer["name"]) for layer in layers),
        saturation=tuple(layer.get("saturation") for layer in layers),
        tail=tuple(bool(layer.get("tail")) for layer in layers),
        unproductive=tuple(bool(layer.get("unproductive")) for layer in layers),
        critical=tuple(bool(layer.get("critical")) for layer in layers),
        width=tuple(layer.get("width") for layer in layers),
        intrinsic_dimension=tuple(layer.get("intrinsic_dimension") for layer in layers),
        r_min=tuple(layer.get("r_min") for layer in layers),
        border_layer=(analysis.get("receptive_field") or {}).get("border_layer"),
        resolution=int(analysis["resolution"]),
    )


_PROFILE_GROUPS = (
    # (tail, unproductive) → legend name, colour, hatch
    ((False, False), "layer", COLOR_LAYER, ""),
    ((True, False), "tail (saturation drop)", COLOR_TAIL, ""),
    ((False, True), "unproductive (receptive field)", COLOR_LAYER, HATCH_UNPRODUCTIVE),
    ((True, True), "tail + unproductive", COLOR_TAIL, HATCH_UNPRODUCTIVE),
)


def profile_figure(data: ProfileData) -> Figure:
    """Bars of saturation per layer: tail bars coral, unproductive bars hatched, border dashed."""
    labels = [label(name) for name in data.layers]
    traces = []
    for key, name, color, hatch in _PROFILE_GROUPS:
        idx = [i for i in range(len(labels)) if (data.tail[i], data.unproductive[i]) == key]
        if not idx:
            continue
        traces.append(
            {
                "type": "bar",
                "name": name,
                "x": [labels[i] for i in idx],
                "y": [data.saturation[i] for i in idx],
                "marker": {
                    "color": color,
                    "line": {"color": color, "width": 1},
                    # overlay: the bar keeps its colour, the hatch is drawn over it in white
                    "pattern": {
                        "shape": hatch,
                        "fillmode": "overlay",
                        "fgcolor": "#FFFFFF",
                        "size": 7,
                        "solidity": 0.25,
                    },
                },
                "customdata": [
                    [
                        data.width[i],
                        data.intrinsic_dimension[i],
                        data.r_min[i],
                        "critical" if data.critical[i] else "",
                    ]
                    for i in idx
                ],
                "hovertemplate": (
                    "<b>%{x}</b><br>saturation %{y:.3f}<br>k %{customdata[1]} of "
                    "%{customdata[0]}<br>r_min %{customdata[2]} px %{customdata[3]}<extra></extra>"
                ),
            }
        )
    top = max((s for s in data.saturation if s is not None), default=1.0)
    layout = base_layout(
        barmode="relative",
        bargap=0.25,
        xaxis={"type": "category", "categoryorder": "array", "categoryarray": labels},
        yaxis={"title": {"text": "saturation"}, "range": [0, min(1.0, top * 1.15) or 1.0]},
        height=340,
    )
    if data.border_index is not None:
        shape, annotation = _border_marker(
            data.border_index, f"receptive-field border (r_min > {data.resolution} px)"
        )
        layout["shapes"] = [shape]
        layout["annotations"] = [annotation]
    return {"data": traces, "layout": layout}


# ---------------------------------------------------------------------------------------------
# Saturation evolution: heatmap layer × epoch.


@dataclass(frozen=True)
class EvolutionData:
    """``saturation[i][j]``: layer i (forward order) at ``epochs[j]``; None = not measured."""

    layers: tuple[str, ...]
    epochs: tuple[int, ...]
    saturation: tuple[tuple[float | None, ...], ...]
    tail: tuple[bool, ...]


def evolution_data(analysis: Mapping[str, Any]) -> EvolutionData | None:
    """Per-epoch saturation of every layer, or None without a saturation history."""
    training = analysis.get("training") or {}
    history = training.get("saturation_history") or []
    if not history:
        return None
    tail = {str(layer["name"]): bool(layer.get("tail")) for layer in analysis["layers"]}
    names = [name for name in tail if any(name in h.get("layers", {}) for h in history)]
    for entry in history:  # layers measured but missing from the layer table go last
        names.extend(n for n in entry.get("layers", {}) if n not in names)
    return EvolutionData(
        layers=tuple(names),
        epochs=tuple(int(entry["epoch"]) for entry in history),
        saturation=tuple(
            tuple(entry.get("layers", {}).get(name) for entry in history) for name in names
        ),
        tail=tuple(tail.get(name, False) for name in names),
    )


def evolution_figure(data: EvolutionData) -> Figure:
    """Heatmap of saturation (colour) per layer (rows, first layer on top) and epoch (columns)."""
    labels = [label(name) for name in data.layers]
    # Tail rows get their name in the tail colour, so the pattern reads without a legend.
    ticks = [
        f'<span style="color:{COLOR_TAIL}">{text}</span>' if tail else text
        for text, tail in zip(labels, data.tail, strict=True)
    ]
    values = [v for row in data.saturation for v in row if v is not None]
    trace = {
        "type": "heatmap",
        "x": list(data.epochs),
        "y": labels,
        "z": [list(row) for row in data.saturation],
        "zmin": 0.0,
        "zmax": max(values, default=1.0) or 1.0,
        "colorscale": "Viridis",
        "colorbar": {"title": {"text": "saturation"}, "thickness": 12},
        "hovertemplate": "<b>%{y}</b><br>epoch %{x}: saturation %{z:.3f}<extra></extra>",
        "xgap": 1,
        "ygap": 1,
    }
    layout = base_layout(
        xaxis={"title": {"text": "epoch"}, "dtick": 1, "showgrid": False},
        yaxis={
            "type": "category",
            "autorange": "reversed",
            "tickvals": labels,
            "ticktext": ticks,
            "showgrid": False,
        },
        height=max(240, 70 + 20 * len(labels)),
        margin={"t": 30},
    )
    return {"data": [trace], "layout": layout}


# ---------------------------------------------------------------------------------------------
# Training curves: loss and accuracy per epoch, train vs eval.


@dataclass(frozen=True)
class CurvesData:
    """Per-epoch mean cross-entropy and accuracy (fractions in [0, 1]) of train and eval passes."""

    epochs: tuple[int, ...]
    train_loss: tuple[float | None, ...]
    eval_loss: tuple[float | None, ...]
    train_accuracy: tuple[float | None, ...]
    eval_accuracy: tuple[float | None, ...]
    eval_name: str


def curves_data(analysis: Mapping[str, Any]) -> CurvesData | None:
    """Training history of an analysis, or None when it was not trained."""
    training = analysis.get("training") or {}
    history: Sequence[Mapping[str, Any]] = training.get("history") or []
    if not history:
        return None
    return CurvesData(
        epochs=tuple(int(h["epoch"]) for h in history),
        train_loss=tuple(h.get("train_loss") for h in history),
        eval_loss=tuple(h.get("eval_loss") for h in history),
        train_accuracy=tuple(h.get("train_accuracy") for h in history),
        eval_accuracy=tuple(h.get("eval_accuracy") for h in history),
        eval_name=str(training.get("eval_name") or "val"),
    )


def _curve(
    name: str, x: Sequence[int | str], y: Sequence[float | None], color: str
) -> dict[str, Any]:
    return {
        "type": "scatter",
        "mode": "lines+markers",
        "name": name,
        "x": list(x),
        "y": list(y),
        "line": {"color": color, "width": 2},
        "marker": {"size": 6},
    }


def loss_figure(data: CurvesData) -> Figure:
    """Train and eval loss (mean cross-entropy) per epoch."""
    traces = [
        _curve("train", data.epochs, data.train_loss, COLOR_LAYER),
        _curve(label(data.eval_name), data.epochs, data.eval_loss, COLOR_EVAL),
    ]
    layout = base_layout(
        xaxis={"title": {"text": "epoch"}, "dtick": 1},
        yaxis={"title": {"text": "loss"}, "rangemode": "tozero"},
        hovermode="x unified",
        height=300,
    )
    return {"data": traces, "layout": layout}


def accuracy_figure(data: CurvesData) -> Figure:
    """Train and eval accuracy per epoch, axis in percent."""
    traces = [
        _curve("train", data.epochs, data.train_accuracy, COLOR_LAYER),
        _curve(label(data.eval_name), data.epochs, data.eval_accuracy, COLOR_EVAL),
    ]
    layout = base_layout(
        xaxis={"title": {"text": "epoch"}, "dtick": 1},
        yaxis={"title": {"text": "accuracy"}, "tickformat": ".0%", "hoverformat": ".1%"},
        hovermode="x unified",
        height=300,
    )
    return {"data": traces, "layout": layout}


# ---------------------------------------------------------------------------------------------
# Receptive-field growth: r_min / r_max per layer against the input resolution.


@dataclass(frozen=True)
class ReceptiveFieldData:
    """Receptive-field sizes in pixels per layer (None for layers without one, e.g. Linear)."""

    layers: tuple[str, ...]
    r_min: tuple[int | None, ...]
    r_max: tuple[int | None, ...]
    unproductive: tuple[bool, ...]
    border_layer: str | None
    resolution: int

    @property
    def border_index(self) -> int | None:
        return _position(self.layers, self.border_layer)


def receptive_field_data(analysis: Mapping[str, Any]) -> ReceptiveFieldData | None:
    """Receptive-field growth over the layers, or None when the analysis could not trace it."""
    rf = analysis.get("receptive_field") or {}
    layers = analysis["layers"]
    if not rf.get("supported") or not any(layer.get("r_min") is not None for layer in layers):
        return None
    return ReceptiveFieldData(
        layers=tuple(str(layer["name"]) for layer in layers),
        r_min=tuple(layer.get("r_min") for layer in layers),
        r_max=tuple(layer.get("r_max") for layer in layers),
        unproductive=tuple(bool(layer.get("unproductive")) for layer in layers),
        border_layer=rf.get("border_layer"),
        resolution=int(analysis["resolution"]),
    )


def receptive_field_figure(data: ReceptiveFieldData) -> Figure:
    """r_min (and r_max where it differs) per layer on a log axis, with the input size as a line."""
    labels = [label(name) for name in data.layers]
    colors = [COLOR_TAIL if u else COLOR_LAYER for u in data.unproductive]
    traces: list[dict[str, Any]] = []
    if data.r_max != data.r_min:
        traces.append(
            {
                **_curve("r_max", labels, data.r_max, "#9CA3AF"),
                "line": {"color": "#9CA3AF", "width": 1.5, "dash": "dot"},
                "hovertemplate": "%{x}: r_max %{y} px<extra></extra>",
            }
        )
    traces.append(
        {
            **_curve("r_min", labels, data.r_min, COLOR_LAYER),
            "marker": {"size": 8, "color": colors},
            "hovertemplate": "%{x}: r_min %{y} px<extra></extra>",
        }
    )
    # A trace, not a shape: shapes on log axes would need log10 coordinates.
    traces.append(
        {
            "type": "scatter",
            "mode": "lines",
            "name": f"input ({data.resolution} px)",
            "x": [labels[0], labels[-1]],
            "y": [data.resolution, data.resolution],
            "line": {"color": COLOR_INPUT, "width": 2, "dash": "dash"},
            "hoverinfo": "skip",
        }
    )
    sizes = [v for v in (*data.r_min, *data.r_max, data.resolution) if v is not None]
    layout = base_layout(
        xaxis={"type": "category", "categoryorder": "array", "categoryarray": labels},
        yaxis={
            "title": {"text": "receptive field (px)"},
            "type": "log",
            "tickvals": log_ticks(min(sizes), max(sizes)),
        },
        height=300,
    )
    if data.border_index is not None:
        shape, annotation = _border_marker(data.border_index, "receptive-field border")
        layout["shapes"] = [shape]
        layout["annotations"] = [annotation]
    return {"data": traces, "layout": layout}


# =============================================================================================
# Study page (``satadvisor.study/1`` summaries): trials, Pareto front, history, importances,
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


def _complete_points(summary: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Complete trials that have both a proxy accuracy and MACs, by trial number."""
    rows = [
        t
        for t in summary.get("trials") or []
        if t.get("state") == "complete" and t.get("accuracy") is not None and t.get("macs")
    ]
    return sorted(rows, key=lambda t: int(t["number"]))


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


def pareto_data(summary: Mapping[str, Any]) -> ParetoData | None:
    """The trials of the Pareto plot, or None without a complete trial.

    The front is the study's (``summary["pareto"]``, which may span more objectives than the
    two axes); a summary without it gets the accuracy–MACs front computed here.
    """
    rows = _complete_points(summary)
    if not rows:
        return None
    numbers = tuple(int(t["number"]) for t in rows)
    accuracy = tuple(float(t["accuracy"]) for t in rows)
    macs = tuple(float(t["macs"]) for t in rows)
    stored = {int(n) for n in summary.get("pareto") or []} & set(numbers)
    front = tuple(n in stored for n in numbers) if stored else tuple(pareto_front(accuracy, macs))
    baseline = next((int(t["number"]) for t in rows if t.get("source") == "baseline"), None)
    return ParetoData(
        number=numbers,
        accuracy=accuracy,
        macs=macs,
        source=tuple(str(t.get("source") or "sampler") for t in rows),
        knobs=tuple(knobs_text(t.get("knobs")) for t in rows),
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


def pareto_figure(data: ParetoData) -> Figure:
    """Scatter of accuracy vs MACs (log axis), coloured by source; the front ringed and joined."""
    custom = [
        [
            data.number[i],
            label(data.source[i]),
            label(data.knobs[i]),
            data.accuracy[i],
            data.macs[i],
        ]
        for i in range(len(data.number))
    ]
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


def history_data(summary: Mapping[str, Any]) -> HistoryData | None:
    """The optimisation history, or None without a complete trial."""
    rows = _complete_points(summary)
    if not rows:
        return None
    best: list[float] = []
    for t in rows:
        best.append(max(float(t["accuracy"]), best[-1]) if best else float(t["accuracy"]))
    pruned = sorted(
        (
            t
            for t in summary.get("trials") or []
            if t.get("state") == "pruned" and t.get("accuracy") is not None
        ),
        key=lambda t: int(t["number"]),
    )
    return HistoryData(
        number=tuple(int(t["number"]) for t in rows),
        accuracy=tuple(float(t["accuracy"]) for t in rows),
        source=tuple(str(t.get("source") or "sampler") for t in rows),
        knobs=tuple(knobs_text(t.get("knobs")) for t in rows),
        macs=tuple(float(t["macs"]) for t in rows),
        best=tuple(best),
        pruned_number=tuple(int(t["number"]) for t in pruned),
        pruned_accuracy=tuple(float(t["accuracy"]) for t in pruned),
    )


def history_figure(data: HistoryData) -> Figure:
    """Accuracy per trial number, coloured by source, with the best-so-far as a step line."""
    custom = [
        [
            data.number[i],
            label(data.source[i]),
            label(data.knobs[i]),
            data.accuracy[i],
            data.macs[i],
        ]
        for i in range(len(data.number))
    ]
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


def importance_data(summary: Mapping[str, Any]) -> ImportanceData | None:
    """Importances from the complete trials' knobs and proxy accuracy, or None (see above)."""
    rows = _complete_points(summary)
    scores = param_importances(
        [t.get("knobs") or {} for t in rows], [float(t["accuracy"]) for t in rows]
    )
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


def run_profile_data(record: Mapping[str, Any] | None) -> RunProfileData | None:
    """The profile of a validation record (``saturation`` dict, ``tail`` names), or None."""
    saturation = (record or {}).get("saturation") or {}
    if not saturation or not any(v is not None for v in saturation.values()):
        return None
    tail = set((record or {}).get("tail") or [])
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
