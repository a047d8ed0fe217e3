"""Plots of the analysis page: saturation profile, its evolution, training curves, receptive field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from satadvisor.analysis_record import AnalysisRecord
from satadvisor.report._plots import (
    COLOR_EVAL,
    COLOR_INPUT,
    COLOR_LAYER,
    COLOR_TAIL,
    HATCH_UNPRODUCTIVE,
    Figure,
    base_layout,
    border_marker,
    label,
    log_ticks,
)

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
    #: What the page calls each layer (``label`` of the rows); empty: the names.
    labels: tuple[str, ...] = ()
    #: Standard error of each saturation (None: not measured); drawn as ±2 SE whiskers.
    errors: tuple[float | None, ...] = ()

    @property
    def border_index(self) -> int | None:
        """Position of the receptive-field border layer in :attr:`layers`, or None."""
        return _position(self.layers, self.border_layer)


def profile_data(analysis: AnalysisRecord) -> ProfileData | None:
    """The saturation profile of an analysis, or None when no layer has a measured saturation."""
    layers = analysis.layers
    if not any(layer.saturation is not None for layer in layers):
        return None
    return ProfileData(
        layers=tuple(layer.name for layer in layers),
        saturation=tuple(layer.saturation for layer in layers),
        tail=tuple(layer.tail for layer in layers),
        unproductive=tuple(layer.unproductive for layer in layers),
        critical=tuple(layer.critical for layer in layers),
        width=tuple(layer.width for layer in layers),
        intrinsic_dimension=tuple(layer.intrinsic_dimension for layer in layers),
        r_min=tuple(layer.r_min for layer in layers),
        border_layer=analysis.receptive_field.border_layer,
        resolution=analysis.resolution,
        labels=tuple(layer.label for layer in layers),
        errors=tuple(layer.saturation_se for layer in layers),
    )


_PROFILE_GROUPS = (
    # (tail, unproductive) → legend name, colour, hatch
    ((False, False), "layer", COLOR_LAYER, ""),
    ((True, False), "tail (saturation drop)", COLOR_TAIL, ""),
    ((False, True), "unproductive (receptive field)", COLOR_LAYER, HATCH_UNPRODUCTIVE),
    ((True, True), "tail + unproductive", COLOR_TAIL, HATCH_UNPRODUCTIVE),
)


def _whiskers(data: ProfileData, idx: list[int]) -> dict[str, Any]:
    """±2 standard errors on the bars that have one (the rules call no smaller difference)."""
    if not data.errors or all(data.errors[i] is None for i in idx):
        return {}
    twice = [None if data.errors[i] is None else 2 * float(data.errors[i] or 0.0) for i in idx]
    return {"error_y": {"type": "data", "array": twice, "visible": True, "color": "#444"}}


def profile_figure(data: ProfileData) -> Figure:
    """Bars of saturation per layer: tail bars coral, unproductive bars hatched, border dashed."""
    labels = [label(name) for name in data.labels or data.layers]
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
                **_whiskers(data, idx),
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
        shape, annotation = border_marker(
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
    #: What the page calls each layer; empty: the names.
    labels: tuple[str, ...] = ()


def evolution_data(analysis: AnalysisRecord) -> EvolutionData | None:
    """Per-epoch saturation of every layer, or None without a saturation history."""
    history = analysis.training.saturation_history if analysis.training is not None else ()
    if not history:
        return None
    rows = {layer.name: layer for layer in analysis.layers}
    names = [name for name in rows if any(name in h.layers for h in history)]
    for entry in history:  # layers measured but missing from the layer table go last
        names.extend(n for n in entry.layers if n not in names)
    return EvolutionData(
        layers=tuple(names),
        epochs=tuple(entry.epoch for entry in history),
        saturation=tuple(tuple(entry.layers.get(name) for entry in history) for name in names),
        tail=tuple(rows[name].tail if name in rows else False for name in names),
        labels=tuple(rows[name].label if name in rows else name for name in names),
    )


def evolution_figure(data: EvolutionData) -> Figure:
    """Heatmap of saturation (colour) per layer (rows, first layer on top) and epoch (columns)."""
    labels = [label(name) for name in data.labels or data.layers]
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


def curves_data(analysis: AnalysisRecord) -> CurvesData | None:
    """Training history of an analysis, or None when it was not trained."""
    training = analysis.training
    if training is None or not training.history:
        return None
    history = training.history
    return CurvesData(
        epochs=tuple(h.epoch for h in history),
        train_loss=tuple(h.train_loss for h in history),
        eval_loss=tuple(h.eval_loss for h in history),
        train_accuracy=tuple(h.train_accuracy for h in history),
        eval_accuracy=tuple(h.eval_accuracy for h in history),
        eval_name=training.eval_name or "val",
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
    #: What the page calls each layer; empty: the names.
    labels: tuple[str, ...] = ()

    @property
    def border_index(self) -> int | None:
        return _position(self.layers, self.border_layer)


def receptive_field_data(analysis: AnalysisRecord) -> ReceptiveFieldData | None:
    """Receptive-field growth over the layers, or None when the analysis could not trace it."""
    rf = analysis.receptive_field
    layers = analysis.layers
    if not rf.supported or not any(layer.r_min is not None for layer in layers):
        return None
    return ReceptiveFieldData(
        layers=tuple(layer.name for layer in layers),
        r_min=tuple(layer.r_min for layer in layers),
        r_max=tuple(layer.r_max for layer in layers),
        unproductive=tuple(layer.unproductive for layer in layers),
        border_layer=rf.border_layer,
        resolution=analysis.resolution,
        labels=tuple(layer.label for layer in layers),
    )


def receptive_field_figure(data: ReceptiveFieldData) -> Figure:
    """r_min (and r_max where it differs) per layer on a log axis, with the input size as a line."""
    labels = [label(name) for name in data.labels or data.layers]
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
        shape, annotation = border_marker(data.border_index, "receptive-field border")
        layout["shapes"] = [shape]
        layout["annotations"] = [annotation]
    return {"data": traces, "layout": layout}
