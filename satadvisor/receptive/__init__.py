"""Training-free receptive-field analysis (Richter et al., "Should You Go Deeper?", ICMLA 2021).

The model is traced with :mod:`torch.fx`; every graph node gets a receptive field per spatial
dimension, in pixels of the input image: ``r_min`` (the shortest path; skip connections take the
identity path), ``r_max`` (the longest path) and the jump ``j`` (input pixels between two
neighbouring positions of the feature map). A window of (dilation-folded) size
``k_eff = d·(k − 1) + 1`` and stride ``s`` maps ``r ↦ r + (k_eff − 1)·j`` and ``j ↦ j·s``.
Feature-map sizes come from running the traced graph on a ``(1, in_channels, I, I)`` zero input.

With ``I`` the input resolution, a Conv layer is *unproductive* when

* the r_min rule holds: every input it reads already has ``r_min > I`` (strictly; an input with
  r_min exactly ``I`` makes it *critical*, not unproductive; rfa_toolbox flags it), or
* the size rule holds: its input map is no larger than its kernel along some spatial dimension
  (``size ≤ k_eff`` where ``k_eff > 1``; a 1×1 kernel is never flagged by this rule, it reads
  everything there is even on a 1×1 map). The size is the real map size at ``I`` (padding,
  valid convolutions and ceil-mode pools included), not ``I`` divided by the jump.

1×1 convs obey the r_min rule like any other layer, 1×1 maps included (ResNet-50's layer4 at
32 px). A *global pool* (an adaptive pool to one position, a keepdim mean/max over the whole
map) leaves a descriptor of the whole image with no spatial layout: like a flattened tensor it
is *global*, so the layers that read it (squeeze-and-excitation gates, a 1×1 conv head) have no
receptive field and are never flagged, and a gate multiplied back onto the map (``x * gate``,
broadcast) adds nothing to the map's r_min, r_max or jump. A layer is *critical* when its own
output ``r_min > I`` but it is not unproductive.

The *feasible input range* depends on the architecture alone. Its lower bound is the smallest
``I`` at which no layer is unproductive, by both rules: the same value as
:func:`smallest_productive_resolution` (searched up to ``max(1024, I)``); ``extra`` names the
layer that sets it (``lower_bound_layer``) and the rule (``lower_bound_rule``: ``"r_min"`` or
``"size"``). Its upper bound is the largest r_max over the conv layers. None when the model has
no conv layer with a receptive field or no productive resolution up to ``max(1024, I)``; the
range is empty (lower > upper) when no input is both fully used and fully seen.

Attention (a MultiheadAttention or transformer module, scaled-dot-product attention, a matrix
product of two tensors computed from the image) mixes every position with every other by
content: no receptive field describes it or the layers after it. A model with attention gets
``supported=False``, a ``reason`` that says which layers the analysis covers, no feasible range,
its attention ops in ``attention``, and its layers listed with ``after_attention`` set where the
receptive field does not apply; :func:`smallest_productive_resolution` refuses it.

Signals work the same way in one dimension: a model whose first convolution or pooling layer
is 1-d (Conv1d, MaxPool1d) is fed (1, C, T) inputs, ``I`` is the length T and every field is
in samples (``spatial_dims`` overrides the guess).

Approximations (documented, not hidden): non-square windows are tracked per dimension and
reported as ``r_min`` = min over dimensions, ``r_max``/``jump`` = max over dimensions. Adaptive
pools to more than one position use their widest window (these windows, and so the fields after
them, change with ``I``). A transposed conv maps ``r ↦ r + (⌈k_eff/s⌉ − 1)·j`` and ``j ↦ j/s``
(unsupported where ``j/s`` is not a whole pixel) and is exempt from the size rule.
Flatten/view/reshape, Linear and reductions that drop dimensions make a tensor *global* (no
receptive field); layers reading it get ``None`` fields and only the size rule applies. Modules
fx cannot trace into become opaque leaves: a shape-preserving one passes the receptive field
through unchanged (growth inside it is not counted; they are listed in
``extra["opaque_modules"]``), any other makes the analysis unsupported.

The bounds search assumes that a layer productive at ``I`` stays productive at every larger
``I`` (feature maps grow with the input, receptive fields do not depend on it): true for
conv/pool/residual/concatenation networks; adaptive pools to several positions feeding further
convs can break it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from satadvisor.errors import UnsupportedModelError, UsageError
from satadvisor.models import input_dims
from satadvisor.receptive._result import LayerReceptiveField, ReceptiveFieldAnalysis
from satadvisor.receptive._trace import (
    _CONV,
    _Call,
    _record_shapes,
    _ShapeFailure,
    _trace,
    _Traced,
    _Unsupported,
)
from satadvisor.receptive._walk import _Walker, graph_attention

__all__ = [
    "LayerReceptiveField",
    "ReceptiveFieldAnalysis",
    "analyze",
    "smallest_productive_resolution",
    "spatial_dims",
]

_MAX_RESOLUTION = 1024

# ---------------------------------------------------------------------------- verdicts


def _call_unproductive(call: _Call, resolution: int) -> bool:
    if not isinstance(call.module, _CONV):
        return False
    if call.in_rf is not None and min(call.in_rf.r_min) > resolution:
        return True
    if call.module.transposed or call.in_spatial is None or call.keff is None:
        return False
    # size <= kernel only for kernel > 1: a 1×1 kernel reads everything there is.
    return any(k > 1 and n <= k for n, k in zip(call.in_spatial, call.keff, strict=True))


def _layer(name: str, calls: list[_Call], resolution: int) -> LayerReceptiveField:
    module = calls[0].module
    kind = type(module).__name__
    after_attention = any(c.after_attention for c in calls)
    if not isinstance(module, _CONV):
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


def _walk(traced: _Traced, resolution: int, in_channels: int) -> _Walker:
    walker = _Walker(traced.gm, _record_shapes(traced, resolution, in_channels), nd=traced.nd)
    walker.run()
    return walker


def _layers(walker: _Walker, resolution: int) -> list[LayerReceptiveField]:
    grouped: dict[str, list[_Call]] = {}
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


def _size_guess(walker: _Walker) -> int:
    """Where the size rule likely stops firing: a map of ~I/j positions must exceed k_eff."""
    guesses = [
        k * j + 1
        for c in walker.calls
        if c.keff is not None and c.in_rf is not None and isinstance(c.module, _CONV)
        and not c.module.transposed
        for k, j in zip(c.keff, c.in_rf.jump, strict=True)
        if k > 1
    ]  # fmt: skip
    return max(guesses, default=1)


class _Search:
    """The smallest productive resolution among ``values`` (sorted), by bisection on a
    predicate assumed monotone; every probe is a shape run, memoised. ``strict``: a probe that
    cannot be followed raises (otherwise it counts as not productive)."""

    def __init__(self, traced: _Traced, in_channels: int, *, strict: bool) -> None:
        self.traced = traced
        self.in_channels = in_channels
        self.strict = strict
        self.flagged: dict[int, list[str] | None] = {}  # resolution -> unproductive layers

    def seed(self, walker: _Walker, resolution: int) -> tuple[int, str | None, list[int]]:
        """Record a finished walk; returns the r_min bound, its layer and the probes to try."""
        layers = _layers(walker, resolution)
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
                walker = _walk(self.traced, resolution, self.in_channels)
                self.flagged[resolution] = [
                    x.name for x in _layers(walker, resolution) if x.unproductive
                ]
            except _ShapeFailure:
                self.flagged[resolution] = None
            except _Unsupported:
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


def _lower_bound(
    traced: _Traced, walker: _Walker, resolution: int, in_channels: int
) -> tuple[int | None, dict[str, Any]]:
    """The feasible range's lower bound (= smallest_productive_resolution) and its extra keys."""
    search = _Search(traced, in_channels, strict=False)
    bound, bound_layer, probes = search.seed(walker, resolution)
    values = range(1, max(_MAX_RESOLUTION, resolution) + 1)
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


def _attention_reason(layers: Sequence[LayerReceptiveField], attention: Sequence[str]) -> str:
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


def _analyze_traced(
    traced: _Traced,
    resolution: int,
    in_channels: int,
    include: list[str] | None,
    feasible_range: bool = True,
) -> ReceptiveFieldAnalysis:
    walker = _walk(traced, resolution, in_channels)
    layers = _layers(walker, resolution)
    extra: dict[str, Any] = {"opaque_modules": list(traced.opaque)}
    feasible: tuple[int, int] | None = None
    reason = None
    if walker.attention:
        reason = _attention_reason(layers, walker.attention)
        extra.update(lower_bound_layer=None, lower_bound_rule=None)
    elif feasible_range:
        tops = [
            max(c.out_rf.r_max) for c in walker.calls if c.out_rf and isinstance(c.module, _CONV)
        ]
        lower, info = _lower_bound(traced, walker, resolution, in_channels) if tops else (None, {})
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


# ------------------------------------------------------------------------------ public


def _dims(model: nn.Module, spatial_dims: int | None) -> int:
    if spatial_dims is None:
        return input_dims(model)
    if spatial_dims not in (1, 2, 3):
        raise UsageError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def spatial_dims(model: nn.Module) -> int:
    """Spatial dimensions of ``model``'s input as :func:`analyze` reads them (Conv1d -> 1)."""
    return input_dims(model)


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}: pass 1 or more")


def analyze(
    model: nn.Module,
    resolution: int,
    *,
    in_channels: int = 3,
    include: Sequence[str] | None = None,
    feasible_range: bool = True,
    spatial_dims: int | None = None,
) -> ReceptiveFieldAnalysis:
    """Receptive fields of every Conv*/Linear module of ``model`` at ``resolution`` px.

    ``resolution`` is the side ``I`` of a square input in pixels; ``in_channels`` its channels.
    ``spatial_dims`` is the number of spatial dimensions of the input: 1 for signals (N, C, T),
    where ``I`` is the length T (``r_min`` etc. are then in samples), 2 for images; None reads
    it from the model's first convolution or pooling layer (Conv1d -> 1).
    Layers are named by their qualified module names (``model.named_modules()``) and listed in
    forward order, one entry per module; modules never called in ``forward`` are absent.
    ``include`` restricts the reported layers to those names (the feasible range still covers
    every conv); names that are not modules of ``model`` raise :class:`UsageError`, names of
    modules that are not reported are listed in ``extra["not_reported"]``.

    Never raises for a model it cannot follow: the result then has ``supported=False`` and a
    one-line ``reason`` (``"cannot trace <Class>: <error>"`` when torch.fx cannot trace it).
    A model with attention is ``supported=False`` too, with its layers listed (see the module
    docstring). The feasible range costs a few more shape runs (the lower bound is searched,
    guided by the layers' windows and jumps: usually two or three); ``feasible_range=False``
    skips it (``feasible_range`` is then None), for callers that need only the verdicts at
    ``resolution``. Shapes come from a hook-free copy (on the meta device when possible): the
    model, its training flags and its forward hooks (a saturation tracker) are left alone.
    Raises :class:`UsageError` for a resolution or channel count below 1.
    """
    _check_positive("resolution", resolution)
    _check_positive("in_channels", in_channels)
    wanted: list[str] | None = None
    if include is not None:
        wanted = list(include)
        known = {name for name, _ in model.named_modules()}
        for name in wanted:
            if name not in known:
                raise UsageError(
                    f"unknown layer {name!r} in include: pass names from model.named_modules()"
                )
    try:
        traced = _trace(model, _dims(model, spatial_dims))
        return _analyze_traced(traced, resolution, in_channels, wanted, feasible_range)
    except (_Unsupported, _ShapeFailure) as exc:
        return ReceptiveFieldAnalysis(resolution=resolution, supported=False, reason=str(exc))


def smallest_productive_resolution(
    model: nn.Module,
    *,
    in_channels: int = 3,
    candidates: Iterable[int] | None = None,
    max_resolution: int = 1024,
    spatial_dims: int | None = None,
) -> int | None:
    """The smallest input resolution (px) at which no layer of ``model`` is unproductive.

    Both rules count: the r_min rule (fixed by the architecture) and the size rule (feature
    maps grow with the resolution). ``candidates`` (default ``1..max_resolution``) are the
    resolutions considered; those above ``max_resolution`` are ignored. A resolution at which
    the model does not run (maps shrink to nothing, a fixed-size Linear) does not count.
    Returns None when no candidate is productive. ``spatial_dims`` as for :func:`analyze`.

    The search is a bisection: it assumes a layer productive at ``I`` stays productive at
    every larger ``I``, which holds whenever feature maps grow with the input and receptive
    fields do not depend on it (true for conv/pool/residual/concatenation networks; adaptive
    pools to several positions feeding further convs can break it). Its first probes come from
    the analysis at the largest candidate (the r_min rule's bound, and where each conv's map of
    about ``I / jump`` positions outgrows its kernel), so it usually needs few shape runs; with
    the default candidates it returns the lower bound of :func:`analyze`'s feasible range.
    Raises :class:`UnsupportedModelError` when the model cannot be analysed at all, or has
    attention (receptive-field advice does not apply to it).
    """
    _check_positive("in_channels", in_channels)
    _check_positive("max_resolution", max_resolution)
    if candidates is None:
        values = list(range(1, max_resolution + 1))
    else:
        given = list(candidates)
        for c in given:
            _check_positive("every candidate resolution", c)
        values = sorted({c for c in given if c <= max_resolution})
    try:
        traced = _trace(model, _dims(model, spatial_dims))
        if attention := graph_attention(traced.gm):
            raise UnsupportedModelError(
                f"{type(model).__name__}: receptive-field advice does not apply to attention: "
                f"{attention[0]} mixes every position with every other"
            )
        if not values:
            return None
        search = _Search(traced, in_channels, strict=True)
        top = values[-1]
        try:
            walker = _walk(traced, top, in_channels)
        except _ShapeFailure:
            return None  # maps only shrink with the input: no smaller candidate runs either
        if walker.attention:
            reason = _attention_reason(_layers(walker, top), walker.attention)
            raise UnsupportedModelError(f"{type(model).__name__}: {reason}")
        _, _, probes = search.seed(walker, top)
        return search.smallest(values, [top, *probes])
    except _Unsupported as exc:
        raise UnsupportedModelError(f"{exc}: {_FIX}") from exc


_FIX = "keep forward traceable by torch.fx (no data-dependent control flow, standard torch ops)"
