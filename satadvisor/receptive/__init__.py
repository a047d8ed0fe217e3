"""Training-free receptive-field analysis (Richter et al., "Should You Go Deeper?", ICMLA 2021).

The model is traced with :mod:`torch.fx`; every graph node gets a receptive field per spatial
dimension, in pixels of the input image: ``r_min`` (the shortest path; skip connections take the
identity path), ``r_max`` (the longest path) and the jump ``j`` (input pixels between two
neighbouring positions of the feature map). A window of (dilation-folded) size
``k_eff = d·(k − 1) + 1`` and stride ``s`` maps ``r ↦ r + (k_eff − 1)·j`` and ``j ↦ j·s``.
Feature-map sizes come from running the traced graph on a ``(1, in_channels, I, I)`` zero input.

With ``I`` the input resolution, a Conv layer is *unproductive* when

* the r_min rule holds: every input it reads already has ``r_min > I`` (strictly), or
* the size rule holds: its input map is no larger than its kernel along some spatial dimension
  (``size ≤ k_eff`` where ``k_eff > 1``; a 1×1 kernel is never flagged by this rule, it reads
  everything there is even on a 1×1 map).

A 1×1 conv that reads a 1×1 map (the squeeze-and-excitation pattern after global pooling) is a
Linear layer on a pooled descriptor: like Linear layers it is never flagged. A layer is
*critical* when its own output ``r_min > I`` but it is not unproductive (an input with r_min
exactly ``I`` counts as critical). The *lower bound* of a layer is the smallest ``I`` at which
the r_min rule does not flag it, i.e. its input r_min; the feasible input range runs from the
largest lower bound to the largest r_max over the conv layers.

Approximations (documented, not hidden): non-square windows are tracked per dimension and
reported as ``r_min`` = min over dimensions, ``r_max``/``jump`` = max over dimensions. Adaptive
pools use their widest window (``o = 1`` reads the whole map: ``r + (n − 1)·j``, jump ×n). A
transposed conv maps ``r ↦ r + (⌈k_eff/s⌉ − 1)·j`` and ``j ↦ j/s`` (unsupported where ``j/s`` is
not a whole pixel) and is exempt from the size rule. Flatten/view/reshape, Linear and reductions
that drop dimensions make a tensor *global* (no receptive field); layers reading it get ``None``
fields and only the size rule applies. Modules fx cannot trace into become opaque leaves: a
shape-preserving one passes the receptive field through unchanged (growth inside it is not
counted; they are listed in ``extra["opaque_modules"]``), any other makes the analysis
unsupported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from satadvisor.errors import UnsupportedModelError, UsageError
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
from satadvisor.receptive._walk import _Walker

__all__ = [
    "LayerReceptiveField",
    "ReceptiveFieldAnalysis",
    "analyze",
    "smallest_productive_resolution",
]

# ---------------------------------------------------------------------------- verdicts


def _exempt(call: _Call) -> bool:
    """A 1×1 conv on a 1×1 map: a Linear layer on a pooled descriptor (SE gates), never flagged."""
    return (
        call.keff is not None
        and all(k == 1 for k in call.keff)
        and call.in_spatial is not None
        and all(n == 1 for n in call.in_spatial)
    )


def _r_rule_applies(call: _Call) -> bool:
    return isinstance(call.module, _CONV) and call.in_rf is not None and not _exempt(call)


def _call_unproductive(call: _Call, resolution: int) -> bool:
    if not isinstance(call.module, _CONV) or _exempt(call):
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
    if not isinstance(module, _CONV):
        none = dict.fromkeys(("kernel_size", "stride", "r_min", "r_max", "jump"))
        return LayerReceptiveField(
            name, kind, **none, input_r_min=None, input_size=None, unproductive=False,
            critical=False, calls=len(calls),
        )  # fmt: skip
    outs = [c.out_rf for c in calls if c.out_rf is not None]
    ins = [c.in_rf for c in calls if c.in_rf is not None]
    sizes = [min(c.in_spatial) for c in calls if c.in_spatial]
    unproductive = all(_call_unproductive(c, resolution) for c in calls)
    # Critical when some call's own output outgrows the input (and the layer is productive).
    outgrown = any(
        c.out_rf is not None and min(c.out_rf.r_min) > resolution and not _exempt(c) for c in calls
    )
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
    )


def _summarise(
    traced: _Traced, calls: list[_Call], resolution: int, include: list[str] | None
) -> ReceptiveFieldAnalysis:
    grouped: dict[str, list[_Call]] = {}
    for call in calls:  # dicts keep insertion order: forward order of first calls
        grouped.setdefault(call.name, []).append(call)
    layers = [_layer(name, group, resolution) for name, group in grouped.items()]
    bounds = [(min(c.in_rf.r_min), c.name) for c in calls if c.in_rf and _r_rule_applies(c)]
    tops = [max(c.out_rf.r_max) for c in calls if c.out_rf and isinstance(c.module, _CONV)]
    lower, lower_layer = max(bounds, key=lambda b: b[0]) if bounds else (1, None)
    extra: dict[str, Any] = {
        "lower_bound_layer": lower_layer,
        "opaque_modules": list(traced.opaque),
    }
    if include is not None:
        wanted = set(include)
        extra["not_reported"] = [n for n in include if n not in grouped]
        layers = [layer for layer in layers if layer.name in wanted]
    return ReceptiveFieldAnalysis(
        resolution=resolution,
        supported=True,
        layers=tuple(layers),
        feasible_range=(lower, max(tops)) if tops else None,
        extra=extra,
    )


def _analyze_traced(
    traced: _Traced, resolution: int, in_channels: int, include: list[str] | None
) -> ReceptiveFieldAnalysis:
    shapes = _record_shapes(traced, resolution, in_channels)
    walker = _Walker(traced.gm, shapes, nd=2)
    walker.run()
    return _summarise(traced, walker.calls, resolution, include)


# ------------------------------------------------------------------------------ public


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}: pass 1 or more")


def analyze(
    model: nn.Module,
    resolution: int,
    *,
    in_channels: int = 3,
    include: Sequence[str] | None = None,
) -> ReceptiveFieldAnalysis:
    """Receptive fields of every Conv*/Linear module of ``model`` at ``resolution`` px.

    ``resolution`` is the side ``I`` of a square input in pixels; ``in_channels`` its channels.
    Layers are named by their qualified module names (``model.named_modules()``) and listed in
    forward order, one entry per module; modules never called in ``forward`` are absent.
    ``include`` restricts the reported layers to those names (the feasible range still covers
    every conv); names that are not modules of ``model`` raise :class:`UsageError`, names of
    modules that are not reported are listed in ``extra["not_reported"]``.

    Never raises for a model it cannot follow: the result then has ``supported=False`` and a
    one-line ``reason`` (``"cannot trace <Class>: <error>"`` when torch.fx cannot trace it).
    Shapes come from a hook-free copy (on the meta device when possible): the model, its
    training flags and its forward hooks (a saturation tracker) are left alone. Raises
    :class:`UsageError` for a resolution or channel count below 1.
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
        return _analyze_traced(_trace(model), resolution, in_channels, wanted)
    except (_Unsupported, _ShapeFailure) as exc:
        return ReceptiveFieldAnalysis(resolution=resolution, supported=False, reason=str(exc))


def smallest_productive_resolution(
    model: nn.Module,
    *,
    in_channels: int = 3,
    candidates: Iterable[int] | None = None,
    max_resolution: int = 1024,
) -> int | None:
    """The smallest input resolution (px) at which no layer of ``model`` is unproductive.

    Both rules count: the r_min rule (fixed by the architecture) and the size rule (feature
    maps grow with the resolution). ``candidates`` (default ``1..max_resolution``) are the
    resolutions considered; those above ``max_resolution`` are ignored. A resolution at which
    the model does not run (maps shrink to nothing, a fixed-size Linear) does not count.
    Returns None when no candidate is productive.

    The search is a bisection: it assumes a layer productive at ``I`` stays productive at
    every larger ``I``, which holds whenever feature maps grow with the input and receptive
    fields do not depend on it (true for conv/pool/residual/concatenation networks; adaptive
    pools feeding further convs can break it).
    Raises :class:`UnsupportedModelError` when the model cannot be analysed at all.
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
        traced = _trace(model)
    except _Unsupported as exc:
        raise UnsupportedModelError(f"{exc}: {_FIX}") from exc

    def productive(resolution: int) -> bool:
        try:
            analysis = _analyze_traced(traced, resolution, in_channels, None)
        except _ShapeFailure:
            return False
        except _Unsupported as exc:
            raise UnsupportedModelError(f"{exc}: {_FIX}") from exc
        return not analysis.unproductive

    if not values or not productive(values[-1]):
        return None
    lo, hi = 0, len(values) - 1  # invariant: values[hi] is productive
    while lo < hi:
        mid = (lo + hi) // 2
        if productive(values[mid]):
            hi = mid
        else:
            lo = mid + 1
    return values[lo]


_FIX = "keep forward traceable by torch.fx (no data-dependent control flow, standard torch ops)"
