"""Rules: a saturation profile plus a receptive-field analysis -> Findings -> Recommendations.

:func:`evaluate` reads the per-layer saturation of one run (and/or the training-free
receptive-field analysis of the same model) and names what it sees as :class:`Finding` objects:

- ``tail`` — the longest run of layers at the end of the feature extractor whose saturation falls
  well below the median of the layers before it (Richter et al., BMVC 2021: VGG16 on CIFAR-10 at
  32 px, conv8–conv13). The decision is relative, so it does not change when the whole profile is
  scaled (ResNet18 at 224 px sits at 0.06–0.46 everywhere and has no tail). Reported with the
  receptive-field border layer and whether the two agree. Without a measured profile, the
  receptive field's unproductive layers give a *predicted* tail.
- ``early_underuse`` — a leading run of near-zero saturation: the input is larger than the
  network can use (Richter et al., ICANN 2021).
- ``too_narrow`` / ``too_wide`` — layers outside tail and early run saturated near 1 / near 0.
- ``even`` — none of the above: "no change needed" is a verdict too.

Every saturation carries a standard error (``LayerSaturation.saturation_se``, from the spread
between batch groups). A rule calls a difference only when it exceeds :data:`Z` standard errors
of the values it compares: a tail only when its layers lie below ``tail_ratio`` × the median
before them by more than that, a layer too narrow / too wide only when it lies beyond the limit
by more than that. A value without a standard error counts as exact.

:func:`recommend` (in :mod:`satadvisor._recommend`) turns findings into concrete knob changes
with their measured cost; :func:`verdict` sums both up in one or two sentences.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from satadvisor._recommend import (
    Cost,
    Recommendation,
    is_conv,
    names_label,
    recommend,
    short_names,
    span_label,
)
from satadvisor.errors import UsageError
from satadvisor.receptive import LayerReceptiveField, ReceptiveFieldAnalysis
from satadvisor.saturation._result import LayerSaturation

__all__ = [
    "Cost",
    "Finding",
    "Recommendation",
    "RuleThresholds",
    "evaluate",
    "pattern",
    "recommend",
    "tail_layers",
    "verdict",
]

FindingKind = Literal["tail", "early_underuse", "too_narrow", "too_wide", "even"]

#: A difference is called only when it exceeds this many standard errors (about 95 %).
Z = 2.0


@dataclass(frozen=True)
class RuleThresholds:
    """The thresholds of the rules; every value is a fraction of a saturation or a layer count.

    ``tail_ratio`` (0.5): a run of trailing layers is a tail when its first layer and its mean
    are below this fraction of the median saturation of the layers before it, and none of its
    layers reaches that median (the drop is not undone later). Requiring *every* layer below
    the fraction missed real tails that decay unevenly (measured VGG16-style on Fashion-MNIST:
    conv8–conv10 at 0.09–0.11 after 0.35, against a median of 0.22). Relative, so scaling the
    profile does not change the decision; 0.5 separates the published VGG16 tail (conv8 at 0.17
    against a median of 0.45) from the ordinary layer-to-layer scatter of healthy networks
    (ResNets alternate by a factor of 2–3 between neighbouring layers, never for a whole run).
    ``min_prefix`` (2): layers that must precede a tail (and follow an early run) so that the
    median it is compared with means something. ``min_tail`` (2): the shortest tail reported; a
    single low last layer is indistinguishable from that scatter. ``early_ratio`` (0.1): a
    leading layer is under-used when its saturation is below this fraction of the median of the
    body (the layers between the early run and the tail) — "near zero" relative to the network
    itself; VGG16's conv1 at 0.12 against 0.48 is ordinary, 0.02 against 0.40 is not.
    ``narrow`` (0.95): outside tail and early run, a layer at or above this saturation uses
    (almost) all its channels — likely too narrow. ``wide`` (0.05): at or below, a layer uses
    almost none — likely too wide. These two are absolute: saturation near 1 or 0 means the same
    at any width. ``agree_within`` (1): the measured tail and the receptive-field border agree
    when their first layers are at most this many layers apart.
    """

    tail_ratio: float = 0.5
    min_prefix: int = 2
    min_tail: int = 2
    early_ratio: float = 0.1
    narrow: float = 0.95
    wide: float = 0.05
    agree_within: int = 1

    def __post_init__(self) -> None:
        for name in ("tail_ratio", "early_ratio", "narrow", "wide"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise UsageError(f"rule threshold {name} must be in (0, 1], got {value}")
        if self.wide >= self.narrow:
            raise UsageError(
                f"rule threshold wide ({self.wide}) must be below narrow ({self.narrow})"
            )
        for name in ("min_prefix", "min_tail"):
            if getattr(self, name) < 1:
                raise UsageError(f"rule threshold {name} must be at least 1")
        if self.agree_within < 0:
            raise UsageError("rule threshold agree_within must be 0 or more")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Finding:
    """One observation about the model: its kind, the layers (qualified names), one sentence.

    ``evidence`` holds the numbers behind the sentence (JSON-serialisable); ``predicted`` is True
    when the finding comes from the receptive-field analysis alone (training-free), not from the
    measured profile. ``provisional`` gives the reason a measured finding may still change (its
    profile had not settled); None when it rests on a settled profile or on no profile.
    """

    kind: FindingKind
    layers: tuple[str, ...]
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    predicted: bool = False
    provisional: str | None = None

    @property
    def basis(self) -> str:
        """What the finding rests on: ``"receptive_field"`` or ``"measured"``."""
        return "receptive_field" if self.predicted else "measured"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "layers": list(self.layers),
            "message": self.message,
            "evidence": dict(self.evidence),
            "predicted": self.predicted,
            "basis": self.basis,
            "provisional": self.provisional is not None,
            "provisional_reason": self.provisional,
        }


# --------------------------------------------------------------------------- profile reading


def _feature_layers(
    profile: Sequence[LayerSaturation], rf: ReceptiveFieldAnalysis | None = None
) -> list[LayerSaturation]:
    """The feature extractor: the conv layers, or for an MLP every layer but the output layer.

    A model with attention (``rf.attention``, e.g. a ViT whose only conv is the patch
    embedding) does its work in Linear blocks: every layer but the output layer, as for an MLP.
    """
    if rf is not None and rf.attention:
        return list(profile[:-1])
    convs = [layer for layer in profile if is_conv(layer.module_type)]
    if convs:
        return convs
    # Without convs the last Linear produces the logits: its width is the number of classes,
    # not a design choice, so it is neither tail nor capacity evidence.
    return list(profile[:-1])


def _errors(layers: Sequence[LayerSaturation]) -> list[float]:
    """Each layer's standard error (0.0 where none was measured)."""
    return [layer.saturation_se or 0.0 for layer in layers]


def _margin(*errors: float) -> float:
    """:data:`Z` standard errors of a difference of independent values."""
    return Z * math.sqrt(sum(e * e for e in errors))


def _tail_start(
    values: Sequence[float], th: RuleThresholds, errors: Sequence[float] | None = None
) -> int | None:
    """Index of the first layer of the longest trailing tail (see RuleThresholds.tail_ratio).

    With ``errors`` (standard errors of ``values``), the first layer and the mean of the run
    must lie below ``tail_ratio`` × the reference median by more than :data:`Z` standard
    errors of that difference (the median's taken as its middle layer's).
    """
    err = list(errors) if errors is not None else [0.0] * len(values)
    for start in range(th.min_prefix, len(values) - th.min_tail + 1):
        reference = statistics.median(values[:start])
        ref_err = th.tail_ratio * statistics.median(err[:start])
        run, run_err = values[start:], err[start:]
        limit = th.tail_ratio * reference
        mean_err = math.sqrt(sum(e * e for e in run_err)) / len(run)
        if (
            reference > 0
            and run[0] + _margin(run_err[0], ref_err) < limit
            and statistics.fmean(run) + _margin(mean_err, ref_err) < limit
            and max(run) < reference
        ):
            return start  # the smallest start gives the longest tail
    return None


def _early_end(
    values: Sequence[float], stop: int, th: RuleThresholds, errors: Sequence[float] | None = None
) -> int:
    """Length of the longest leading run below early_ratio × the median of values[end:stop]
    (by more than :data:`Z` standard errors, given ``errors``)."""
    err = list(errors) if errors is not None else [0.0] * len(values)
    best = 0
    for end in range(1, stop - th.min_prefix + 1):
        reference = statistics.median(values[end:stop])
        ref_err = th.early_ratio * statistics.median(err[end:stop])
        top = max(range(end), key=lambda i: values[i])
        if reference > 0 and values[top] + _margin(err[top], ref_err) < th.early_ratio * reference:
            best = end
    return best


def tail_layers(
    profile: Sequence[LayerSaturation],
    *,
    thresholds: RuleThresholds = RuleThresholds(),
    rf: ReceptiveFieldAnalysis | None = None,
) -> list[str]:
    """Qualified names of the measured tail (conv layers only when the net has convs and no
    attention, see ``rf``), or []."""
    layers = _feature_layers(profile, rf)
    start = _tail_start([layer.saturation for layer in layers], thresholds, _errors(layers))
    return [] if start is None else [layer.name for layer in layers[start:]]


def pattern(
    profile: Sequence[LayerSaturation],
    *,
    thresholds: RuleThresholds = RuleThresholds(),
    rf: ReceptiveFieldAnalysis | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The shape the rules read in a profile: (tail layers, under-used early layers).

    Two epochs whose patterns are equal tell the same story; :func:`satadvisor.trust.settling`
    compares them to decide whether a profile settled. ``rf`` (optional) says whether the model
    has attention, whose Linear blocks then count as feature layers.
    """
    layers = _feature_layers(profile, rf)
    values, errors = [layer.saturation for layer in layers], _errors(layers)
    start = _tail_start(values, thresholds, errors)
    stop = len(values) if start is None else start
    end = _early_end(values, stop, thresholds, errors) if values else 0
    tail = () if start is None else tuple(layer.name for layer in layers[start:])
    return tail, tuple(layer.name for layer in layers[:end])


# --------------------------------------------------------------------------- receptive field


def _rf_usable(rf: ReceptiveFieldAnalysis | None) -> ReceptiveFieldAnalysis | None:
    return rf if rf is not None and rf.supported else None


def _rf_convs(rf: ReceptiveFieldAnalysis) -> list[LayerReceptiveField]:
    convs = [layer for layer in rf.layers if is_conv(layer.module_type)]
    return convs or list(rf.layers)


def _rf_clause(
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
    rf_order = [layer.name for layer in _rf_convs(rf)]
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


def _predicted_tail(
    rf: ReceptiveFieldAnalysis, *, measured: bool, labels: dict[str, str]
) -> Finding | None:
    """A tail predicted from the unproductive layers (no profile, or one without a tail)."""
    names = rf.unproductive
    if not names:
        return None
    border = rf.by_name()[names[0]]
    total = len(_rf_convs(rf))
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


# --------------------------------------------------------------------------- findings


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
    narrow = [x for x in free if x.saturation - _margin(x.saturation_se or 0.0) >= th.narrow]
    wide = [x for x in free if x.saturation + _margin(x.saturation_se or 0.0) <= th.wide]
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
    layers = _feature_layers(profile, rf)
    if not layers:
        return []
    # Labels unique over every layer that either measurement names.
    names = [layer.name for layer in profile] + ([x.name for x in rf.layers] if rf else [])
    types = {x.name: x.module_type for x in (rf.layers if rf else ())}
    types.update({layer.name: layer.module_type for layer in profile})
    labels = short_names(list(dict.fromkeys(names)), types)
    order = [layer.name for layer in layers]
    values, errors = [layer.saturation for layer in layers], _errors(layers)
    noun = "conv " if all(is_conv(layer.module_type) for layer in layers) else ""
    findings: list[Finding] = []

    start = _tail_start(values, th, errors)
    stop = len(values) if start is None else start
    if start is not None:
        tail = order[start:]
        reference = statistics.median(values[:start])
        clause, rf_evidence = _rf_clause(rf, tail, order, labels, th)
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
    elif (usable := _rf_usable(rf)) is not None:
        predicted = _predicted_tail(usable, measured=True, labels=labels)
        findings += [predicted] if predicted is not None else []

    end = _early_end(values, stop, th, errors)
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
        uncertain = _tail_start(values, th) if start is None else None
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
    usable = _rf_usable(rf)
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
    thresholds: RuleThresholds = RuleThresholds(),
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
    usable = _rf_usable(rf)
    if usable is None or not usable.layers:
        return []
    labels = short_names(
        [layer.name for layer in usable.layers], [layer.module_type for layer in usable.layers]
    )
    predicted = _predicted_tail(usable, measured=False, labels=labels)
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
    names = tuple(layer.name for layer in _rf_convs(usable))
    evidence = {"resolution": usable.resolution}
    return [Finding("even", names, message, evidence, predicted=True)]


# --------------------------------------------------------------------------- verdict

_ORDER = ("tail", "early_underuse", "too_narrow", "too_wide", "even")


def verdict(
    findings: Sequence[Finding],
    recommendations: Sequence[Recommendation],
    *,
    lead: Sequence[str] = (),
) -> str:
    """Plain sentences for the top of a report: ``lead`` (what the advice rests on, when that
    needs saying), the main finding and the top move. A move that rests on the receptive field
    alone, or on a provisional finding, says so."""
    head = " ".join(lead)
    if not findings:
        body = "Nothing to judge: no usable saturation profile and no receptive-field analysis."
        return f"{head} {body}".strip()
    main = min(findings, key=lambda f: _ORDER.index(f.kind))
    first = main.message
    if main.provisional is not None:
        first = f"Provisional: {first[0].lower()}{first[1:]}"
    moves = [r for r in recommendations if r.kind != "none"]
    if not moves:
        if main.kind == "even":
            return f"{head} {first}".strip()
        return (
            f"{head} {first} No change of the model's knobs could be built to address it.".strip()
        )
    top = moves[0]
    second = f"Suggested: {top.title[0].lower()}{top.title[1:]}"
    if top.cost is not None:
        second += f" ({top.cost.macs_ratio:.2f}× MACs)"
    if top.set_args:
        second += f" — {top.model + ' ' if top.model else ''}{top.set_args}"
    if len(moves) > 1:
        second += f"; {len(moves) - 1} more below"
    return f"{head} {first} {second}.".strip()
