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

from collections.abc import Iterable, Sequence

from torch import nn

from satadvisor.errors import UnsupportedModelError, UsageError
from satadvisor.models import input_dims
from satadvisor.receptive._result import LayerReceptiveField, ReceptiveFieldAnalysis
from satadvisor.receptive._trace import ShapeFailure, Unsupported, trace_model
from satadvisor.receptive._walk import graph_attention
from satadvisor.receptive.verdict import (
    ResolutionSearch,
    analyze_traced,
    attention_reason,
    layer_verdicts,
    walk,
)

__all__ = [
    "LayerReceptiveField",
    "ReceptiveFieldAnalysis",
    "analyze",
    "smallest_productive_resolution",
    "spatial_dims",
]


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
        traced = trace_model(model, _dims(model, spatial_dims))
        return analyze_traced(traced, resolution, in_channels, wanted, feasible_range)
    except (Unsupported, ShapeFailure) as exc:
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
        traced = trace_model(model, _dims(model, spatial_dims))
        if attention := graph_attention(traced.gm):
            raise UnsupportedModelError(
                f"{type(model).__name__}: receptive-field advice does not apply to attention: "
                f"{attention[0]} mixes every position with every other"
            )
        if not values:
            return None
        search = ResolutionSearch(traced, in_channels, strict=True)
        top = values[-1]
        try:
            walker = walk(traced, top, in_channels)
        except ShapeFailure:
            return None  # maps only shrink with the input: no smaller candidate runs either
        if walker.attention:
            reason = attention_reason(layer_verdicts(walker, top), walker.attention)
            raise UnsupportedModelError(f"{type(model).__name__}: {reason}")
        _, _, probes = search.seed(walker, top)
        return search.smallest(values, [top, *probes])
    except Unsupported as exc:
        raise UnsupportedModelError(f"{exc}: {_FIX}") from exc


_FIX = "keep forward traceable by torch.fx (no data-dependent control flow, standard torch ops)"
