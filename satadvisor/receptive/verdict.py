"""Per-layer verdicts (unproductive, critical), the feasible range's lower bound, and the
analysis that gathers them: the rules of :mod:`satadvisor.receptive`, applied to the receptive
fields that :mod:`._walk` propagates through a model traced by :mod:`._trace`."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

from satadvisor.receptive._result import LayerReceptiveField, ReceptiveFieldAnalysis
from satadvisor.receptive._trace import (
    CONV,
    LayerCall,
    ShapeFailure,
    TracedModel,
    Unsupported,
    record_shapes,
)
from satadvisor.receptive._walk import Walker

#: The largest resolution the feasible range's lower bound is searched up to (or ``I``).
MAX_RESOLUTION = 1024

# ---------------------------------------------------------------------------- verdicts


def _call_unproductive(call: LayerCall, resolution: int) -> bool:
    if not isinstance(call.module, CONV):
        return False
    if call.in_rf is not None and min(call.in_rf.r_min) > resolution:
        return True
    if call.module.transposed or call.in_spatial is None or call.keff is None:
        return False
    # size <= kernel only for kernel > 1: a 1×1 kernel reads everything there is.
    return any(k > 1 and n <= k for n, k in zip(call.in_spatial, call.keff, strict=True))


def _layer(name: str, calls: list[LayerCall], resolution: int) -> LayerReceptiveField:
    module = calls[0].module
    kind = type(module).__name__
    after_attention = any(c.after_attention for c in calls)
    if not isinstance(module, CONV):
        none = dict.fromkeys(("kernel_size", "stride", "r_min", "r_max", "jump"))
        return LayerReceptiveField(
            name, kind, **none, input_r_min=None, input_size=None, unproductive=False,
            critical=False, calls=len(calls), after_attention=after_attention,
        )  # fmt: skip
    outs = [c.out_rf for c in calls if c.out_rf is not None]
    ins = [c.in_rf for c in calls if c.in_rf is not None]
    sizes = [min(c.in_spatial) for c in calls if c.in_spatial]
    unproductive = all(_call_unproductive(c, resolution) for c in calls)
    # Critical when some call's own output outgrows the input (and the layer is productive).
    outgrown = any(c.out_rf is not None and min(c.out_rf.r_min) > resolution for c in calls)
    return LayerReceptiveField(
        name=name,
        module_type=kind,
        kernel_size=max(calls[0].kernel or (1,)),
        stride=max(calls[0].stride or (1,)),
        r_min=min(min(rf.r_min) for rf in outs) if outs else None,
        r_max=max(max(rf.r_max) for rf in outs) if outs else None,
        jump=max(max(rf.jump) for rf in outs) if outs else None,
        input_r_min=min(min(rf.r_min) for rf in ins) if ins else None,
        input_size=max(sizes) if sizes else None,
        unproductive=unproductive,
        critical=outgrown and not unproductive,
        effective_kernel=max(calls[0].keff or (1,)),
        calls=len(calls),
        after_attention=after_attention,
    )


def walk(traced: TracedModel, resolution: int, in_channels: int) -> Walker:
    """The receptive field of every node of ``traced`` at ``resolution`` (one shape run)."""
    walker = Walker(traced.gm, record_shapes(traced, resolution, in_channels), nd=traced.nd)
    walker.run()
    return walker


def layer_verdicts(walker: Walker, resolution: int) -> list[LayerReceptiveField]:
    """One row per reported module, in forward order: its fields over all its calls, and
    whether it is unproductive (every call is) or critical at ``resolution``."""
    grouped: dict[str, list[LayerCall]] = {}
    for call in walker.calls:  # dicts keep insertion order: forward order of first calls
        grouped.setdefault(call.name, []).append(call)
    return [_layer(name, group, resolution) for name, group in grouped.items()]


# ------------------------------------------------------------------------ lower bound


def _r_bound(layers: Sequence[LayerReceptiveField]) -> tuple[int, str | None]:
    """The r_min rule's bound: the largest input r_min of a conv layer, and that layer."""
    bounds = [(x.input_r_min, x.name) for x in layers if x.input_r_min is not None]
    if not bounds:
        return 1, None
    top = max(b for b, _ in bounds)
    return top, next(name for b, name in bounds if b == top)


def _size_guess(walker: Walker) -> int:
    """Where the size rule likely stops firing: a map of ~I/j positions must exceed k_eff."""
    guesses = [
        k * j + 1
        for c in walker.calls
        if c.keff is not None and c.in_rf is not None and isinstance(c.module, CONV)
        and not c.module.transposed
        for k, j in zip(c.keff, c.in_rf.jump, strict=True)
        if k > 1
    ]  # fmt: skip
    return max(guesses, default=1)


class ResolutionSearch:
    """The smallest productive resolution among ``values`` (sorted), by bisection on a
    predicate assumed monotone; every probe is a shape run, memoised. ``strict``: a probe that
    cannot be followed raises (otherwise it counts as not productive)."""

    def __init__(self, traced: TracedModel, in_channels: int, *, strict: bool) -> None:
        self.traced = traced
        self.in_channels = in_channels
        self.strict = strict
        self.flagged: dict[int, list[str] | None] = {}  # resolution -> unproductive layers

    def seed(self, walker: Walker, resolution: int) -> tuple[int, str | None, list[int]]:
        """Record a finished walk; returns the r_min bound, its layer and the probes to try."""
        layers = layer_verdicts(walker, resolution)
        self.flagged[resolution] = [x.name for x in layers if x.unproductive]
        bound, layer = _r_bound(layers)
        if bound > 1 and not walker.resolution_dependent:
            self.flagged.setdefault(bound - 1, [layer] if layer else [])
        start = max(bound, _size_guess(walker))
        doubling = [start * 2**i for i in range(12)]
        return bound, layer, [bound - 1, bound, start - 1, start, *doubling[1:]]

    def unproductive(self, resolution: int) -> list[str] | None:
        """Names of the unproductive layers at ``resolution``; None where the model cannot run."""
        if resolution not in self.flagged:
            try:
                walker = walk(self.traced, resolution, self.in_channels)
                self.flagged[resolution] = [
                    x.name for x in layer_verdicts(walker, resolution) if x.unproductive
                ]
            except ShapeFailure:
                self.flagged[resolution] = None
            except Unsupported:
                if self.strict:
                    raise
                self.flagged[resolution] = None
        return self.flagged[resolution]

    def productive(self, resolution: int) -> bool:
        return self.unproductive(resolution) == []

    def smallest(self, values: Sequence[int], probes: Iterable[int]) -> int | None:
        lo, hi = 0, len(values)  # the answer's index is in [lo, hi]; hi == len: none known
        for value in probes:
            i = bisect.bisect_left(values, value)
            if i < len(values) and values[i] == value and lo <= i < hi:
                if self.productive(value):
                    hi = i
                else:
                    lo = i + 1
        if hi == len(values):
            if lo >= len(values) or not self.productive(values[-1]):
                return None
            hi = len(values) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.productive(values[mid]):
                hi = mid
            else:
                lo = mid + 1
        return values[lo]


def lower_bound(
    traced: TracedModel, walker: Walker, resolution: int, in_channels: int
) -> tuple[int | None, dict[str, Any]]:
    """The feasible range's lower bound (= smallest_productive_resolution) and its extra keys."""
    search = ResolutionSearch(traced, in_channels, strict=False)
    bound, bound_layer, probes = search.seed(walker, resolution)
    values = range(1, max(MAX_RESOLUTION, resolution) + 1)
    lower = search.smallest(values, [resolution, *probes])
    info: dict[str, Any] = {"lower_bound_layer": None, "lower_bound_rule": None}
    if lower is None or lower == 1:
        return lower, info
    if lower == bound and not walker.resolution_dependent:
        return lower, {"lower_bound_layer": bound_layer, "lower_bound_rule": "r_min"}
    below = search.unproductive(lower - 1)
    info["lower_bound_layer"] = below[0] if below else None
    info["lower_bound_rule"] = "r_min" if lower == bound else "size"
    return lower, info


# ---------------------------------------------------------------------------- summary


def attention_reason(layers: Sequence[LayerReceptiveField], attention: Sequence[str]) -> str:
    """The one-line reason a model with attention gets (which layers the analysis covers)."""
    after = [x for x in layers if x.after_attention]
    covered = [x.name for x in layers if not x.after_attention and isinstance(x.r_min, int)]
    more = f" (and {len(attention) - 1} more attention ops)" if len(attention) > 1 else ""
    if not covered:
        covers = "it covers no layer"
    elif len(covered) == 1:
        covers = f"it covers only {covered[0]}"
    else:
        covers = f"it covers only the {len(covered)} conv layers before it ({covered[0]}…)"
    return (
        f"receptive-field advice does not apply to attention: {attention[0]}{more} mixes every "
        f"position with every other, so the receptive field does not describe the {len(after)} "
        f"layers after it; {covers}"
    )


def analyze_traced(
    traced: TracedModel,
    resolution: int,
    in_channels: int,
    include: list[str] | None,
    feasible_range: bool = True,
) -> ReceptiveFieldAnalysis:
    """:func:`satadvisor.receptive.analyze` of an already traced model (arguments checked)."""
    walker = walk(traced, resolution, in_channels)
    layers = layer_verdicts(walker, resolution)
    extra: dict[str, Any] = {"opaque_modules": list(traced.opaque)}
    feasible: tuple[int, int] | None = None
    reason = None
    if walker.attention:
        reason = attention_reason(layers, walker.attention)
        extra.update(lower_bound_layer=None, lower_bound_rule=None)
    elif feasible_range:
        tops = [
            max(c.out_rf.r_max) for c in walker.calls if c.out_rf and isinstance(c.module, CONV)
        ]
        lower, info = lower_bound(traced, walker, resolution, in_channels) if tops else (None, {})
        extra.update({"lower_bound_layer": None, "lower_bound_rule": None, **info})
        feasible = (lower, max(tops)) if lower is not None and tops else None
    if include is not None:
        wanted = set(include)
        names = {x.name for x in layers}
        extra["not_reported"] = [n for n in include if n not in names]
        layers = [x for x in layers if x.name in wanted]
    return ReceptiveFieldAnalysis(
        resolution=resolution,
        supported=not walker.attention,
        layers=tuple(layers),
        feasible_range=feasible,
        reason=reason,
        extra=extra,
        attention=tuple(walker.attention),
    )
