"""Findings (:func:`evaluate`) from a measured saturation profile and/or a receptive-field
analysis."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

from satadvisor.receptive import ReceptiveFieldAnalysis
from satadvisor.rules.border import predicted_tail, rf_clause, rf_convs, usable_rf
from satadvisor.rules.labels import is_conv, names_label, short_names, span_label
from satadvisor.rules.profile import early_end, feature_layers, margin, standard_errors, tail_start
from satadvisor.rules.records import Finding, FindingKind
from satadvisor.rules.thresholds import DEFAULT_THRESHOLDS, RuleThresholds, Z
from satadvisor.saturation._result import LayerSaturation


def _values_range(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}–{high:.2f}"


def _capacity_finding(
    kind: FindingKind,
    hit: Sequence[LayerSaturation],
    order: Sequence[str],
    labels: dict[str, str],
    limit: float,
) -> Finding:
    names = [layer.name for layer in hit]
    values = [layer.saturation for layer in hit]
    one = len(hit) == 1
    narrow = kind == "too_narrow"
    level = (
        f"saturated near 1 ({_values_range(values)} ≥ {limit:.2f})"
        if narrow
        else f"nearly empty ({_values_range(values)} ≤ {limit:.2f})"
    )
    message = (
        f"{names_label(names, order, labels)} {'is' if one else 'are'} {level}: "
        f"{'it uses' if one else 'they use'} almost {'all' if narrow else 'none'} of "
        f"{'its' if one else 'their'} channels and may be too {'narrow' if narrow else 'wide'}."
    )
    evidence = {
        "values": dict(zip(names, values, strict=True)),
        "standard_errors": dict(zip(names, [x.saturation_se for x in hit], strict=True)),
        "z": Z,
        "threshold": limit,
    }
    return Finding(kind, tuple(names), message, evidence)


def _capacity(
    layers: Sequence[LayerSaturation],
    excluded: set[str],
    order: Sequence[str],
    labels: dict[str, str],
    th: RuleThresholds,
) -> list[Finding]:
    """Layers outside tail and early run saturated near 1 (too narrow) or near 0 (too wide)."""
    free = [layer for layer in layers if layer.name not in excluded]
    narrow = [x for x in free if x.saturation - margin(x.saturation_se or 0.0) >= th.narrow]
    wide = [x for x in free if x.saturation + margin(x.saturation_se or 0.0) <= th.wide]
    findings = []
    if narrow:
        findings.append(_capacity_finding("too_narrow", narrow, order, labels, th.narrow))
    if wide:
        findings.append(_capacity_finding("too_wide", wide, order, labels, th.wide))
    return findings


def _measured(
    profile: Sequence[LayerSaturation],
    rf: ReceptiveFieldAnalysis | None,
    th: RuleThresholds,
    capacity: bool = True,
) -> list[Finding]:
    layers = feature_layers(profile, rf)
    if not layers:
        return []
    # Labels unique over every layer that either measurement names.
    names = [layer.name for layer in profile] + ([x.name for x in rf.layers] if rf else [])
    types = {x.name: x.module_type for x in (rf.layers if rf else ())}
    types.update({layer.name: layer.module_type for layer in profile})
    labels = short_names(list(dict.fromkeys(names)), types)
    order = [layer.name for layer in layers]
    values, errors = [layer.saturation for layer in layers], standard_errors(layers)
    noun = "conv " if all(is_conv(layer.module_type) for layer in layers) else ""
    findings: list[Finding] = []

    start = tail_start(values, th, errors)
    stop = len(values) if start is None else start
    if start is not None:
        tail = order[start:]
        reference = statistics.median(values[:start])
        clause, rf_evidence = rf_clause(rf, tail, order, labels, th)
        verb = "forms" if len(tail) == 1 else "form"
        trend = f"{values[start]:.2f}" + (f" → {values[-1]:.2f}" if len(tail) > 1 else "")
        message = (
            f"{span_label(tail, labels)} ({len(tail)} of {len(order)} {noun}layers) {verb} a "
            f"tail: saturation {trend} against a median of {reference:.2f} before them{clause}"
        )
        evidence = {
            "length": len(tail),
            "layers_total": len(order),
            "values": values[start:],
            "standard_errors": errors[start:],
            "z": Z,
            "reference_median": reference,
            "tail_ratio": th.tail_ratio,
            "resolution": rf.resolution if rf is not None else None,
            **rf_evidence,
        }
        findings.append(Finding("tail", tuple(tail), message, evidence))
    elif (usable := usable_rf(rf)) is not None:
        predicted = predicted_tail(usable, measured=True, labels=labels)
        findings += [predicted] if predicted is not None else []

    end = early_end(values, stop, th, errors)
    if end:
        early = order[:end]
        reference = statistics.median(values[end:stop])
        cause = f"the {rf.resolution} px input" if rf is not None else "the input"
        message = (
            f"{span_label(early, labels)} (the first {end} of {len(order)} {noun}layers) "
            f"{'is' if end == 1 else 'are'} nearly unused: saturation "
            f"{_values_range(values[:end])} against a median of {reference:.2f} after them, so "
            f"{cause} is larger than the network can use."
        )
        evidence = {
            "length": end,
            "values": values[:end],
            "reference_median": reference,
            "early_ratio": th.early_ratio,
            "resolution": rf.resolution if rf is not None else None,
        }
        findings.append(Finding("early_underuse", tuple(early), message, evidence))

    excluded = {name for f in findings for name in f.layers}
    if capacity:
        findings += _capacity(layers, excluded, order, labels, th)
    if not findings:
        uncertain = tail_start(values, th) if start is None else None
        within = (
            f" ({span_label(order[uncertain:], labels)} sit lower, but by less than {Z:g} "
            "standard errors: not called a tail)"
            if uncertain is not None
            else ""
        )
        findings.append(_even(order, values, noun, rf, within))
    return findings


def _even(
    order: Sequence[str],
    values: Sequence[float],
    noun: str,
    rf: ReceptiveFieldAnalysis | None,
    within: str = "",
) -> Finding:
    usable = usable_rf(rf)
    at = f", and no layer is unproductive at {usable.resolution} px" if usable is not None else ""
    if rf is not None and rf.attention:
        after = sum(layer.after_attention for layer in rf.layers)
        covered = [x.name for x in rf.layers if not x.after_attention and x.r_min is not None]
        covers = (
            f"only {covered[0]}"
            if len(covered) == 1
            else f"only the {len(covered)} conv layers before attention"
            if covered
            else "no layer"
        )
        at = (
            f"; receptive-field advice does not apply to the {after} layers after attention "
            f"(it covers {covers})"
        )
    message = (
        f"Saturation is even over the {len(order)} {noun}layers ({_values_range(values)}, "
        f"median {statistics.median(values):.2f}) with no tail{within}, no under-used early layer "
        f"and no layer near 0 or 1{at}: no change needed."
    )
    evidence = {
        "values": list(values),
        "median": statistics.median(values),
        "resolution": usable.resolution if usable is not None else None,
    }
    return Finding("even", tuple(order), message, evidence)


def evaluate(
    profile: Sequence[LayerSaturation] | None,
    rf: ReceptiveFieldAnalysis | None,
    *,
    thresholds: RuleThresholds = DEFAULT_THRESHOLDS,
    unsettled: str | None = None,
) -> list[Finding]:
    """Findings from a measured saturation profile and/or a receptive-field analysis.

    ``profile`` is one epoch's per-layer saturation in forward order (None or empty: no
    training, or a proxy that did not learn — its profile carries no advice); ``rf`` the
    receptive-field analysis of the same model at the trained resolution (None: not
    available). Without a profile the tail is predicted from the unproductive layers
    (``predicted=True``). ``unsettled`` is the reason the profile has not settled (None: it
    did): the measured findings are then marked provisional with that reason, and the absolute
    capacity rules (too narrow / too wide) do not run, because short proxies depress saturation
    everywhere. Returns the findings in order tail, early_underuse, too_narrow, too_wide — or
    one ``even`` finding; [] when there is nothing to read.
    """
    if profile:
        found = _measured(profile, rf, thresholds, capacity=unsettled is None)
        if unsettled is None:
            return found
        return [f if f.predicted else dataclasses.replace(f, provisional=unsettled) for f in found]
    usable = usable_rf(rf)
    if usable is None or not usable.layers:
        return []
    labels = short_names(
        [layer.name for layer in usable.layers], [layer.module_type for layer in usable.layers]
    )
    predicted = predicted_tail(usable, measured=False, labels=labels)
    if predicted is not None:
        return [predicted]
    feasible = usable.feasible_range
    span = (
        ""
        if not feasible
        else f" (feasible input range {feasible[0]}–{feasible[1]} px)"
        if feasible[0] <= feasible[1]
        else f" (no input size is both fully used and fully seen: the last layers see at most "
        f"{feasible[1]} px, the first productive size is {feasible[0]} px)"
    )
    message = (
        f"No layer is unproductive at {usable.resolution} px{span}: the receptive field "
        "predicts no tail, no change needed."
    )
    names = tuple(layer.name for layer in rf_convs(usable))
    evidence = {"resolution": usable.resolution}
    return [Finding("even", names, message, evidence, predicted=True)]
