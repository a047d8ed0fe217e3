"""The receptive-field side of the findings: where the border lies, whether it agrees with
the measured tail, and the tail it predicts without a profile."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from satadvisor.receptive import LayerReceptiveField, ReceptiveFieldAnalysis
from satadvisor.rules.labels import is_conv, span_label
from satadvisor.rules.records import Finding
from satadvisor.rules.thresholds import RuleThresholds


def usable_rf(rf: ReceptiveFieldAnalysis | None) -> ReceptiveFieldAnalysis | None:
    return rf if rf is not None and rf.supported else None


def rf_convs(rf: ReceptiveFieldAnalysis) -> list[LayerReceptiveField]:
    convs = [layer for layer in rf.layers if is_conv(layer.module_type)]
    return convs or list(rf.layers)


def rf_clause(
    rf: ReceptiveFieldAnalysis | None,
    tail: Sequence[str],
    order: Sequence[str],
    labels: dict[str, str],
    th: RuleThresholds,
) -> tuple[str, dict[str, Any]]:
    """The receptive-field half of the tail sentence, and its evidence."""
    if rf is None:
        return ".", {"rf_border": None, "rf_agrees": None}
    if rf.attention and rf.reason:
        return f"; {rf.reason}.", {"rf_border": None, "rf_agrees": None}
    if not rf.supported:
        reason = f" ({rf.reason})" if rf.reason else ""
        return (
            f"; the receptive field could not be analysed{reason}.",
            {"rf_border": None, "rf_agrees": None},
        )
    border = rf.border_layer
    at = f" at {rf.resolution} px"
    if border is None:
        clause = f"; the receptive field does not agree: no layer is unproductive{at}."
        return clause, {"rf_border": None, "rf_agrees": False, "rf_offset": None}
    rf_order = [layer.name for layer in rf_convs(rf)]
    if border not in order and border in rf_order and len(rf_order) == len(order):
        border_at = order[rf_order.index(border)]  # same layers, other names (e.g. a copy)
    else:
        border_at = border
    if border_at in order:
        position = _main_path_positions(order, rf)
        offset = position[border_at] - position[tail[0]]
    else:  # names from a different model: nothing to compare
        offset = None
    name = labels.get(border, border)
    agrees = offset is not None and abs(offset) <= th.agree_within
    if agrees and offset == 0:
        clause = f"; the receptive field agrees: {name} is the first unproductive layer{at}."
    elif agrees and offset is not None:
        within = "one layer" if abs(offset) == 1 else f"{abs(offset)} layers"
        clause = (
            f"; the receptive field agrees within {within}: {name} is the first "
            f"unproductive layer{at}."
        )
    else:
        clause = (
            f"; the receptive field does not agree: it flags {name} as the first "
            f"unproductive layer{at}."
        )
    return clause, {"rf_border": border, "rf_agrees": agrees, "rf_offset": offset}


_SHORTCUT_NAMES = ("downsample", "shortcut", "skip", "projection")


def _off_main_path(layer: LayerReceptiveField) -> bool:
    """A projection shortcut (a strided 1×1 conv, or one named like a shortcut): it runs beside
    the main path, so it must not shift the main path's layer positions."""
    one_by_one = (layer.effective_kernel or layer.kernel_size) == 1
    named = any(part in _SHORTCUT_NAMES for part in layer.name.lower().split("."))
    return one_by_one and ((layer.stride or 1) > 1 or named)


def _main_path_positions(order: Sequence[str], rf: ReceptiveFieldAnalysis) -> dict[str, int]:
    """Each layer's position along the main path: shortcut convs share the position of the
    main-path layer that follows them (the tail/border offset counts main-path layers only)."""
    layers = rf.by_name()
    off = {name for name in order if name in layers and _off_main_path(layers[name])}
    position, at = {}, 0
    for name in order:
        position[name] = at
        at += name not in off
    return position


def _unproductive_reason(layer: LayerReceptiveField, name: str, resolution: int) -> str:
    """Why the border layer is unproductive, e.g. "conv8's inputs already see 44 px (r_min)"."""
    if layer.input_r_min is not None and layer.input_r_min > resolution:
        return (
            f"{name}'s inputs already have a receptive field of {layer.input_r_min} px (r_min), "
            f"more than the {resolution} px image"
        )
    if layer.input_size is not None and layer.kernel_size is not None:
        return (
            f"{name}'s input feature map ({layer.input_size} px) is no larger than its kernel "
            f"({layer.kernel_size})"
        )
    return f"{name}'s inputs already see the whole {resolution} px image"


def predicted_tail(
    rf: ReceptiveFieldAnalysis, *, measured: bool, labels: dict[str, str]
) -> Finding | None:
    """A tail predicted from the unproductive layers (no profile, or one without a tail)."""
    names = rf.unproductive
    if not names:
        return None
    border = rf.by_name()[names[0]]
    total = len(rf_convs(rf))
    noun = "conv " if any(is_conv(layer.module_type) for layer in rf.layers) else ""
    span = span_label(names, labels)
    verb = "is" if len(names) == 1 else "are"
    message = (
        f"The receptive field predicts a tail: {span} ({len(names)} of {total} {noun}layers) "
        f"{verb} unproductive at {rf.resolution} px: "
        f"{_unproductive_reason(border, labels.get(names[0], names[0]), rf.resolution)}"
    )
    message += "; the measured saturation shows no tail." if measured else "."
    evidence = {
        "length": len(names),
        "layers_total": total,
        "rf_border": names[0],
        "border_input_r_min": border.input_r_min,
        "resolution": rf.resolution,
        "feasible_range": list(rf.feasible_range) if rf.feasible_range else None,
        "measured_tail": False if measured else None,
    }
    return Finding("tail", tuple(names), message, evidence, predicted=True)
