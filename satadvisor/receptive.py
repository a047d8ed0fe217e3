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

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.fx as fx
from torch import nn

from satadvisor.errors import UnsupportedModelError, UsageError

__all__ = [
    "LayerReceptiveField",
    "ReceptiveFieldAnalysis",
    "analyze",
    "smallest_productive_resolution",
]


@dataclass(frozen=True)
class LayerReceptiveField:
    """Receptive field of one tracked layer's *output* (pixels of the input image).

    ``input_r_min`` is the smallest r_min among the inputs the layer reads; ``input_size`` the
    smaller spatial side of its input feature map at the analysed resolution. Linear layers
    (which see the whole input) have ``r_min = r_max = None`` and are never flagged.
    ``kernel_size``/``stride`` are the module's own values (largest over dimensions),
    ``effective_kernel`` the dilation-folded ``d·(k − 1) + 1``. A module called ``calls`` > 1
    times gets one entry: r_min and input_r_min are the minimum over its calls, r_max, jump and
    input_size the maximum; it is unproductive only when every call is, and critical when it is
    not unproductive but some call's output r_min exceeds the resolution.
    """

    name: str
    module_type: str
    kernel_size: int | None
    stride: int | None
    r_min: int | None
    r_max: int | None
    jump: int | None
    input_r_min: int | None
    input_size: int | None
    unproductive: bool
    critical: bool
    effective_kernel: int | None = None
    calls: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerReceptiveField:
        return cls(**d)


@dataclass(frozen=True)
class ReceptiveFieldAnalysis:
    """Result of :func:`analyze` for one model at one input resolution."""

    resolution: int
    supported: bool
    layers: tuple[LayerReceptiveField, ...] = ()
    feasible_range: tuple[int, int] | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def unproductive(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.unproductive]

    @property
    def critical(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.critical]

    @property
    def border_layer(self) -> str | None:
        """The first unproductive layer in forward order, or None."""
        names = self.unproductive
        return names[0] if names else None

    def by_name(self) -> dict[str, LayerReceptiveField]:
        return {layer.name: layer for layer in self.layers}

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "supported": self.supported,
            "layers": [layer.to_dict() for layer in self.layers],
            "feasible_range": list(self.feasible_range) if self.feasible_range else None,
            "reason": self.reason,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReceptiveFieldAnalysis:
        rng = d.get("feasible_range")
        return cls(
            resolution=int(d["resolution"]),
            supported=bool(d["supported"]),
            layers=tuple(LayerReceptiveField.from_dict(x) for x in d.get("layers", ())),
            feasible_range=(int(rng[0]), int(rng[1])) if rng else None,
            reason=d.get("reason"),
            extra=dict(d.get("extra", {})),
        )


# ----------------------------------------------------------------------------- internals

Dims = tuple[int, ...]


class _Unsupported(Exception):
    """The graph holds something whose receptive field cannot be followed."""


class _ShapeFailure(Exception):
    """The model does not run on a (1, C, I, I) input."""


@dataclass(frozen=True)
class _RF:
    """Receptive field of one tensor, per spatial dimension (input pixels).

    ``axes`` are the (negative) tensor axes that hold the spatial dimensions, in the order of
    the input's (H, W): ``(-2, -1)`` for NCHW, ``(-3, -2)`` after a permute to channels-last.
    """

    r_min: Dims
    r_max: Dims
    jump: Dims
    axes: Dims

    @property
    def trailing(self) -> bool:
        return self.axes == _trailing(len(self.axes))

    def window(self, keff: Dims, stride: Dims) -> _RF:
        grow = [(k - 1) * j for k, j in zip(keff, self.jump, strict=True)]
        return _RF(
            tuple(r + g for r, g in zip(self.r_min, grow, strict=True)),
            tuple(r + g for r, g in zip(self.r_max, grow, strict=True)),
            tuple(j * s for j, s in zip(self.jump, stride, strict=True)),
            self.axes,
        )


def _trailing(nd: int) -> Dims:
    return tuple(range(-nd, 0))


@dataclass
class _Call:
    """One call of a reported (Conv*/Linear) module."""

    name: str
    module: nn.Module
    in_rf: _RF | None
    out_rf: _RF | None
    in_spatial: Dims | None
    kernel: Dims | None = None
    stride: Dims | None = None
    keff: Dims | None = None


@dataclass
class _Traced:
    model_name: str
    gm: fx.GraphModule
    opaque: tuple[str, ...]


_CONV = nn.modules.conv._ConvNd
_REPORTED = (_CONV, nn.Linear)
_POOLS = (
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._LPPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)
_ADAPTIVE = (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
# fmt: off
_RESHAPES = frozenset((
    "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "t", "movedim", "moveaxis",
    "expand", "expand_as", "view_as", "reshape_as",
))
_PERMUTES = frozenset(("permute", "transpose", "swapaxes", "swapdims"))
_REDUCTIONS = frozenset((
    "mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod",
    "nanmean", "nansum", "median",
))
_PADS = tuple(
    getattr(nn, f"{kind}Pad{n}d")
    for kind in ("Constant", "Zero", "Reflection", "Replication", "Circular")
    for n in (1, 2, 3)
    if hasattr(nn, f"{kind}Pad{n}d")
)
# fmt: on


def _first_line(exc: BaseException) -> str:
    while exc.__cause__ is not None:  # the root cause says what is wrong, wrappers say where
        exc = exc.__cause__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Tracer(fx.Tracer):
    """Keeps Conv/Linear/pool subclasses as leaves and remembers the innermost failing module."""

    def __init__(self, opaque: set[str]) -> None:
        super().__init__()
        self.opaque = opaque
        self.failed: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (*_REPORTED, *_POOLS)) or module_qualified_name in self.opaque:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed is None:  # the innermost module raises first
                self.failed = self.path_of_module(m)
            raise


def _trace(model: nn.Module) -> _Traced:
    """Symbolically trace ``model``; submodules fx cannot trace into become opaque leaves."""
    opaque: set[str] = set()
    name = type(model).__name__
    for _ in range(len(list(model.modules())) + 1):
        tracer = _Tracer(opaque)
        try:
            graph = tracer.trace(model)
        except Exception as exc:
            if tracer.failed and tracer.failed not in opaque:
                opaque.add(tracer.failed)
                continue
            raise _Unsupported(f"cannot trace {name}: {_first_line(exc)}") from exc
        return _Traced(name, fx.GraphModule(tracer.root, graph, name), tuple(sorted(opaque)))
    raise _Unsupported(f"cannot trace {name}: too many untraceable submodules")


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph and records every node's output shape(s).

    Not ShapeProp: that prints a traceback to stderr whenever a node fails, which happens on
    purpose here (too small resolutions during the search). Leaf modules are entered through
    ``forward`` so that no forward hook (a saturation tracker, say) sees the probe input.
    """

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.shapes: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.shapes[n.name] = _shape_tree(result)
        return result

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        return self.fetch_attr(str(target)).forward(*args, **kwargs)


def _shape_tree(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        parts = [_shape_tree(v) for v in value]
        # Containers without tensors (x.shape, x.size()) are plain values, not feature maps.
        return parts if any(p is not None for p in parts) else None
    return None


def _copy(gm: fx.GraphModule, *, meta: bool) -> fx.GraphModule:
    """A hook-free copy of ``gm``; with ``meta`` its tensors live on the meta device (no data)."""
    memo: dict[int, Any] = {}
    for m in gm.modules():
        for key, value in vars(m).items():
            if "hooks" in key and isinstance(value, dict):  # hooks would drag their owners along
                memo[id(value)] = type(value)()
    if meta:
        for p in gm.parameters():
            memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
        for b in gm.buffers():
            memo[id(b)] = torch.empty_like(b, device="meta")
    return cast(fx.GraphModule, copy.deepcopy(gm, memo))


def _run(gm: fx.GraphModule, x: torch.Tensor) -> dict[str, Any]:
    recorder = _ShapeRecorder(gm)
    with torch.no_grad():
        recorder.run(x)
    return recorder.shapes


def _record_shapes(traced: _Traced, resolution: int, in_channels: int) -> dict[str, Any]:
    """Node name -> output shape (tuple, nested list for tuples, None for non-tensors).

    Runs a copy on the meta device first (shapes without arithmetic, at any resolution; the
    first call in a process pays a one-time import inside torch). When an op has no meta
    kernel, a zero input runs through a real copy in eval mode without gradients; a model
    that cannot be copied runs itself, and its training flags are restored afterwards.
    """
    size = (1, in_channels, resolution, resolution)
    ref = next(iter(traced.gm.parameters()), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    try:
        return _run(
            _copy(traced.gm, meta=True).eval(), torch.zeros(size, dtype=dtype, device="meta")
        )
    except Exception:
        pass  # no meta kernel, or data-dependent code in an opaque module: compute for real
    try:
        gm = _copy(traced.gm, meta=False)
    except Exception:
        gm = traced.gm
    modes = {m: m.training for m in gm.modules()}
    device = ref.device if ref is not None else torch.device("cpu")
    try:
        return _run(gm.eval(), torch.zeros(size, dtype=dtype, device=device))
    except Exception as exc:
        shape = "x".join(str(v) for v in size)
        raise _ShapeFailure(
            f"cannot run {traced.model_name} on a {shape} input: {_first_line(exc)}"
        ) from exc
    finally:
        for m, mode in modes.items():
            m.train(mode)


# ---------------------------------------------------------------------- window arithmetic

# functional stem -> argument positions of (kernel_size, stride, dilation); None: no such argument
_WINDOW_FN: dict[str, tuple[int, int, int | None]] = {
    "max": (1, 2, 4),
    "avg": (1, 2, None),
    "lp": (2, 3, None),
}


def _ntuple(value: Any, nd: int, what: str) -> Dims:
    if isinstance(value, int):
        return (value,) * nd
    dims = tuple(int(v) for v in value)
    if len(dims) == 1:
        return dims * nd
    if len(dims) != nd:
        raise _Unsupported(f"cannot follow the receptive field through {what}: {dims} for {nd}-d")
    return dims


def _folded(kernel: Dims, dilation: Dims) -> Dims:
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))


def _adaptive_window(n: int, o: int) -> tuple[int, int]:
    """Widest window and stride of an adaptive pool from ``n`` to ``o`` positions."""
    if o == 1:
        return n, n
    widest = max(math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o))
    return widest, max(1, n // o)


def _spatial(shape: Any, axes: Dims) -> Dims | None:
    """Sizes of a tensor shape at ``axes`` (the common value for a tuple of tensors)."""
    if shape is None:
        return None
    if isinstance(shape, tuple):  # a leading batch/channel axis is required
        return tuple(shape[a] for a in axes) if len(shape) > -min(axes) else None
    parts = {_spatial(s, axes) for s in shape} - {None}
    return parts.pop() if len(parts) == 1 else None


def _broadcasts(sp: Dims, out: Dims) -> bool:
    return len(sp) == len(out) and all(a in (b, 1) for a, b in zip(sp, out, strict=True))


def _merge(inputs: list[tuple[_RF, Dims]], out: Dims) -> _RF:
    """Several feature tensors combined element-wise or concatenated along channels."""
    rfs = [rf for rf, _ in inputs]
    # Broadcast operands (a 1×1 gate) carry no pixel pitch of the output map.
    aligned = [rf for rf, sp in inputs if sp == out] or rfs
    return _RF(
        tuple(map(min, zip(*(rf.r_min for rf in rfs), strict=True))),
        tuple(map(max, zip(*(rf.r_max for rf in rfs), strict=True))),
        tuple(map(max, zip(*(rf.jump for rf in aligned), strict=True))),
        rfs[0].axes,
    )


def _arg(node: fx.Node, index: int | None, name: str, default: Any) -> Any:
    if index is not None and len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _module_nd(m: nn.Module) -> int:
    """Spatial dimensions of a torch.nn pooling module (from its class, e.g. MaxPool2d -> 2)."""
    for cls in type(m).__mro__:
        if cls.__module__.startswith("torch.nn") and cls.__name__[-2:] in ("1d", "2d", "3d"):
            return int(cls.__name__[-2])
    raise _Unsupported(f"cannot follow the receptive field through {type(m).__name__}")


class _Walker:
    """Propagates receptive fields through the graph in topological order."""

    def __init__(self, gm: fx.GraphModule, shapes: dict[str, Any], nd: int) -> None:
        self.gm = gm
        self.shapes = shapes
        self.nd = nd
        self.rfs: dict[str, _RF | None] = {}
        self.calls: list[_Call] = []

    def run(self) -> None:
        first_input = True
        for node in self.gm.graph.nodes:
            rf: _RF | None = None
            if node.op == "placeholder":
                ones = (1,) * self.nd
                rf = _RF(ones, ones, ones, _trailing(self.nd)) if first_input else None
                first_input = False
            elif node.op in ("get_attr", "output") or self.shapes.get(node.name) is None:
                rf = None  # parameters, plain values and the return carry no receptive field
            else:
                rf = self._visit(node)
            self.rfs[node.name] = rf

    def _visit(self, node: fx.Node) -> _RF | None:
        try:
            if node.op == "call_module":
                return self._module(node, self.gm.get_submodule(str(node.target)))
            if node.op == "call_method":
                return self._generic(node, str(node.target), f"'.{node.target}()'")
            return self._function(node)
        except _Unsupported:
            raise
        except Exception as exc:  # an op used in a way not foreseen: report, do not crash
            raise _Unsupported(
                f"cannot follow the receptive field through node '{node.name}': {_first_line(exc)}"
            ) from exc

    def _src(self, node: fx.Node, index: int = 0) -> tuple[fx.Node | None, _RF | None]:
        arg = node.args[index] if len(node.args) > index else None
        if isinstance(arg, fx.Node):
            return arg, self.rfs.get(arg.name)
        return None, None

    def _sp(self, node: fx.Node | None, axes: Dims) -> Dims | None:
        return _spatial(self.shapes.get(node.name), axes) if node is not None else None

    def _window(self, rf: _RF | None, keff: Dims, stride: Dims, what: str) -> _RF | None:
        if rf is None:
            return None
        if len(keff) != len(rf.jump) or not rf.trailing:
            raise _Unsupported(
                f"cannot follow the receptive field through {what}: a {len(keff)}-d window "
                f"on a map whose {len(rf.jump)} spatial dimensions are at axes {rf.axes}"
            )
        return rf.window(keff, stride)

    def _module(self, node: fx.Node, m: nn.Module) -> _RF | None:
        name, (src, rf) = str(node.target), self._src(node)
        what = f"'{name}' ({type(m).__name__})"
        if isinstance(m, nn.Linear):
            self.calls.append(_Call(name, m, rf, None, None))
            return _linear(rf)
        if isinstance(m, _CONV):
            nd = len(m.kernel_size)
            kernel, stride = tuple(m.kernel_size), tuple(m.stride)
            keff = _folded(kernel, tuple(m.dilation))
            if m.transposed:
                out = self._transposed(rf, keff, stride, what)
            else:
                out = self._window(rf, keff, stride, what)
            in_spatial = self._sp(src, _trailing(nd))
            self.calls.append(_Call(name, m, rf, out, in_spatial, kernel, stride, keff))
            return out
        if isinstance(m, _ADAPTIVE):
            return self._adaptive(node, src, rf, what)
        if isinstance(m, _POOLS):
            nd = _module_nd(m)
            kernel = _ntuple(m.kernel_size, nd, what)
            stride = _ntuple(m.stride or m.kernel_size, nd, what)
            dilation = _ntuple(getattr(m, "dilation", 1), nd, what)
            return self._window(rf, _folded(kernel, dilation), stride, what)
        if isinstance(m, _PADS):
            return rf  # padding moves the map's border, not what a position sees
        if isinstance(m, (nn.Flatten, nn.Unflatten)):
            return self._generic(node, "flatten", what)
        return self._generic(node, "", what)

    def _transposed(self, rf: _RF | None, keff: Dims, stride: Dims, what: str) -> _RF | None:
        if rf is None:
            return None
        if any(j % s for j, s in zip(rf.jump, stride, strict=True)) or not rf.trailing:
            raise _Unsupported(
                f"cannot follow the receptive field through {what}: it upsamples below one "
                "input pixel per position"
            )
        # Each output position reads at most ceil(k_eff / s) neighbouring input positions.
        span = tuple(-(-k // s) for k, s in zip(keff, stride, strict=True))
        grown = rf.window(span, (1,) * len(span))
        jump = tuple(j // s for j, s in zip(rf.jump, stride, strict=True))
        return _RF(grown.r_min, grown.r_max, jump, rf.axes)

    def _adaptive(
        self, node: fx.Node, src: fx.Node | None, rf: _RF | None, what: str
    ) -> _RF | None:
        if rf is None:
            return None
        n, o = self._sp(src, rf.axes), self._sp(node, rf.axes)
        if n is None or o is None:
            return None
        windows = [_adaptive_window(a, b) for a, b in zip(n, o, strict=True)]
        keff, stride = tuple(k for k, _ in windows), tuple(s for _, s in windows)
        return self._window(rf, keff, stride, what)

    def _function(self, node: fx.Node) -> _RF | None:
        fname = getattr(node.target, "__name__", str(node.target))
        what = f"'{fname}'"
        stem, _, rest = fname.rpartition("_pool") if "_pool" in fname else ("", "", "")
        src, rf = self._src(node)
        if fname in ("conv1d", "conv2d", "conv3d"):
            weight = self._src(node, 1)[0]
            wshape = self.shapes.get(weight.name) if weight is not None else None
            if not isinstance(wshape, tuple):
                raise _Unsupported(f"cannot follow the receptive field through {what}")
            nd = len(wshape) - 2
            stride = _ntuple(_arg(node, 3, "stride", 1), nd, what)
            dilation = _ntuple(_arg(node, 5, "dilation", 1), nd, what)
            return self._window(rf, _folded(tuple(wshape[2:]), dilation), stride, what)
        if stem in ("adaptive_avg", "adaptive_max"):
            return self._adaptive(node, src, rf, what)
        if stem in _WINDOW_FN and rest[:1] in ("1", "2", "3"):
            nd = int(rest[0])
            ki, si, di = _WINDOW_FN[stem]
            kernel = _ntuple(_arg(node, ki, "kernel_size", 1), nd, what)
            stride = _ntuple(_arg(node, si, "stride", None) or kernel, nd, what)
            dilation = _ntuple(_arg(node, di, "dilation", 1), nd, what)
            return self._window(rf, _folded(kernel, dilation), stride, what)
        if fname in ("pad", "constant_pad_nd"):
            return rf
        if fname == "linear":
            return _linear(rf)
        if fname.startswith("conv_transpose"):
            raise _Unsupported(f"cannot follow the receptive field through {what}: use the module")
        return self._generic(node, fname, what)

    def _generic(self, node: fx.Node, name: str, what: str) -> _RF | None:
        """Ops without a window: element-wise, concatenation, permutes, reshapes, reductions."""
        inputs = [(n, rf) for n in node.all_input_nodes if (rf := self.rfs.get(n.name)) is not None]
        if not inputs:
            return None
        if name in _PERMUTES:
            return self._permute(node, name)
        axes = {rf.axes for _, rf in inputs}
        if len(axes) > 1:
            raise _Unsupported(
                f"cannot follow the receptive field through {what}: it combines maps laid out "
                "differently (channels-first and channels-last)"
            )
        (ax,) = axes
        out = self._sp(node, ax)
        spatials = [self._sp(n, ax) for n, _ in inputs]
        if out is not None and all(sp is not None and _broadcasts(sp, out) for sp in spatials):
            pairs = [(rf, cast(Dims, sp)) for (_, rf), sp in zip(inputs, spatials, strict=True)]
            return _merge(pairs, out)
        if name in _RESHAPES:
            return None  # the map is no longer laid out in space: treat as global
        if name in _REDUCTIONS:
            return self._reduction(node, what)
        shapes = f"{self.shapes.get(inputs[0][0].name)} -> {self.shapes.get(node.name)}"
        raise _Unsupported(
            f"cannot follow the receptive field through {what}: it changes the feature map {shapes}"
        )

    def _permute(self, node: fx.Node, name: str) -> _RF | None:
        src, rf = self._src(node)
        in_shape = self.shapes.get(src.name) if src is not None else None
        if rf is None or not isinstance(in_shape, tuple):
            return None
        ndim = len(in_shape)
        order = list(range(ndim))
        if name == "permute":  # x.permute(0, 2, 3, 1), x.permute([0, 2, 3, 1]), torch.permute(x, d)
            dims: Any = node.args[1:] or (node.kwargs.get("dims"),)
            if len(dims) == 1 and not isinstance(dims[0], int):
                dims = dims[0]
            order = [int(d) % ndim for d in dims]
        else:  # transpose / swapaxes / swapdims of two axes
            a, b = int(_arg(node, 1, "dim0", 0)) % ndim, int(_arg(node, 2, "dim1", 0)) % ndim
            order[a], order[b] = order[b], order[a]
        axes = tuple(order.index(a % ndim) - ndim for a in rf.axes)
        return _RF(rf.r_min, rf.r_max, rf.jump, axes)

    def _reduction(self, node: fx.Node, what: str) -> _RF | None:
        src, rf = self._src(node)
        in_shape = self.shapes.get(src.name) if src is not None else None
        out_shape = self.shapes.get(node.name)
        if not isinstance(in_shape, tuple) or not isinstance(out_shape, tuple) or rf is None:
            return None
        if len(in_shape) != len(out_shape):
            return None  # the spatial dimensions were reduced away: global
        n, o = _spatial(in_shape, rf.axes), _spatial(out_shape, rf.axes)
        if n is None or o is None or any(b not in (a, 1) for a, b in zip(n, o, strict=True)):
            raise _Unsupported(f"cannot follow the receptive field through {what}")
        # A keepdim reduction over a spatial dimension reads all of it, like an adaptive pool.
        keff = tuple(a if b == 1 else 1 for a, b in zip(n, o, strict=True))
        return rf.window(keff, keff)


def _linear(rf: _RF | None) -> _RF | None:
    """A Linear layer mixes its last axis: pointwise on a channels-last map, global otherwise."""
    return rf if rf is not None and -1 not in rf.axes else None


# --------------------------------------------------------------------------- verdicts


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
