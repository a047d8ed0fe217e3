"""Window arithmetic: the receptive field of every graph node, from the input forward."""

from __future__ import annotations

import math
from typing import Any, cast

import torch.fx as fx
from torch import nn

from satadvisor.receptive._trace import (
    _ADAPTIVE,
    _PADS,
    _PERMUTES,
    _POOLS,
    _REDUCTIONS,
    _RESHAPES,
    _RF,
    CONV,
    Dims,
    LayerCall,
    Unsupported,
    _first_line,
    _trailing,
)

# Ops that mix positions by content when both operands are computed from the image (q·kᵀ, attn·v)
_MATMULS = frozenset(("matmul", "bmm", "baddbmm", "einsum", "__matmul__"))
_ATTENTION_MODULES = (nn.MultiheadAttention,)

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
        raise Unsupported(f"cannot follow the receptive field through {what}: {dims} for {nd}-d")
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
    raise Unsupported(f"cannot follow the receptive field through {type(m).__name__}")


class Walker:
    """Propagates receptive fields through the graph in topological order.

    Besides the receptive fields it records the attention ops (``attention``: a
    MultiheadAttention or transformer module, scaled-dot-product attention, or a matrix product
    of two tensors both computed from the image), which tensors are computed from their output
    (``mixed``), and whether some window depends on the input size (``resolution_dependent``:
    an adaptive pool to more than one position, a keepdim reduction over part of the map).
    """

    def __init__(self, gm: fx.GraphModule, shapes: dict[str, Any], nd: int) -> None:
        self.gm = gm
        self.shapes = shapes
        self.nd = nd
        self.rfs: dict[str, _RF | None] = {}
        self.calls: list[LayerCall] = []
        self.data: set[str] = set()  # tensors computed from the image (not parameters only)
        self.mixed: set[str] = set()
        self.attention: list[str] = []
        self.resolution_dependent = False

    def run(self) -> None:
        first_input = True
        for node in self.gm.graph.nodes:
            rf: _RF | None = None
            if node.op == "placeholder":
                ones = (1,) * self.nd
                rf = _RF(ones, ones, ones, _trailing(self.nd)) if first_input else None
                if first_input:
                    self.data.add(node.name)
                first_input = False
            elif node.op in ("get_attr", "output") or self.shapes.get(node.name) is None:
                rf = None  # parameters, plain values and the return carry no receptive field
            else:
                inputs = node.all_input_nodes
                mixed = any(n.name in self.mixed for n in inputs)
                first_call = len(self.calls)
                if self._is_attention(node):
                    # Every output position reads every input position, weighted by content:
                    # no window describes it, the result is global.
                    self.attention.append(_label(node))
                    mixed = True
                else:
                    rf = self._visit(node)
                for call in self.calls[first_call:]:
                    call.after_attention = any(n.name in self.mixed for n in inputs)
                if mixed:
                    self.mixed.add(node.name)
                if any(n.name in self.data for n in inputs):
                    self.data.add(node.name)
            self.rfs[node.name] = rf

    def _is_attention(self, node: fx.Node) -> bool:
        if _attention_op(self.gm, node):
            return True
        name = str(node.target) if node.op == "call_method" else _fn_name(node)
        return name in _MATMULS and sum(n.name in self.data for n in node.all_input_nodes) >= 2

    def _visit(self, node: fx.Node) -> _RF | None:
        try:
            if node.op == "call_module":
                return self._module(node, self.gm.get_submodule(str(node.target)))
            if node.op == "call_method":
                return self._generic(node, str(node.target), f"'.{node.target}()'")
            return self._function(node)
        except Unsupported:
            raise
        except Exception as exc:  # an op used in a way not foreseen: report, do not crash
            raise Unsupported(
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
            raise Unsupported(
                f"cannot follow the receptive field through {what}: a {len(keff)}-d window "
                f"on a map whose {len(rf.jump)} spatial dimensions are at axes {rf.axes}"
            )
        return rf.window(keff, stride)

    def _module(self, node: fx.Node, m: nn.Module) -> _RF | None:
        name, (src, rf) = str(node.target), self._src(node)
        what = f"'{name}' ({type(m).__name__})"
        if isinstance(m, nn.Linear):
            self.calls.append(LayerCall(name, m, rf, None, None))
            return _linear(rf)
        if isinstance(m, CONV):
            nd = len(m.kernel_size)
            kernel, stride = tuple(m.kernel_size), tuple(m.stride)
            keff = _folded(kernel, tuple(m.dilation))
            if m.transposed:
                out = self._transposed(rf, keff, stride, what)
            else:
                out = self._window(rf, keff, stride, what)
            in_spatial = self._sp(src, _trailing(nd))
            self.calls.append(LayerCall(name, m, rf, out, in_spatial, kernel, stride, keff))
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
            raise Unsupported(
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
        if n is None or o is None or all(b == 1 for b in o):
            # A global pool: a descriptor of the whole image with no layout left (a squeeze-
            # and-excitation gate or a head reads it like a Linear layer): global.
            return None
        self.resolution_dependent = True  # windows of ~n/o positions change with the input
        windows = [_adaptive_window(a, b) for a, b in zip(n, o, strict=True)]
        keff, stride = tuple(k for k, _ in windows), tuple(s for _, s in windows)
        return self._window(rf, keff, stride, what)

    def _function(self, node: fx.Node) -> _RF | None:
        fname = _fn_name(node)
        what = f"'{fname}'"
        stem, _, rest = fname.rpartition("_pool") if "_pool" in fname else ("", "", "")
        src, rf = self._src(node)
        if fname in ("conv1d", "conv2d", "conv3d"):
            weight = self._src(node, 1)[0]
            wshape = self.shapes.get(weight.name) if weight is not None else None
            if not isinstance(wshape, tuple):
                raise Unsupported(f"cannot follow the receptive field through {what}")
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
            raise Unsupported(f"cannot follow the receptive field through {what}: use the module")
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
            raise Unsupported(
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
        raise Unsupported(
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
            raise Unsupported(f"cannot follow the receptive field through {what}")
        if all(b == 1 for b in o):
            return None  # a keepdim reduction over the whole map is a global pool: global
        self.resolution_dependent = True
        # A keepdim reduction over a spatial dimension reads all of it, like an adaptive pool.
        keff = tuple(a if b == 1 else 1 for a, b in zip(n, o, strict=True))
        return rf.window(keff, keff)


def _attention_op(gm: fx.GraphModule, node: fx.Node) -> bool:
    """An attention module (or one holding one) or scaled-dot-product attention: known from
    the graph alone (matrix products of two image tensors need the walk to be recognised)."""
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        return any(isinstance(m, _ATTENTION_MODULES) for m in module.modules())
    return node.op == "call_function" and _fn_name(node) == "scaled_dot_product_attention"


def graph_attention(gm: fx.GraphModule) -> list[str]:
    """Labels of the attention ops :func:`_attention_op` finds in ``gm``, in graph order."""
    return [_label(node) for node in gm.graph.nodes if _attention_op(gm, node)]


def _fn_name(node: fx.Node) -> str:
    return str(getattr(node.target, "__name__", node.target))


def _label(node: fx.Node) -> str:
    """The module an op belongs to (``encoder.layers.0.self_attention``), else the node name."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1]
        path = path[0] if isinstance(path, tuple) else path
        if isinstance(path, str) and path:
            return f"{path} ({node.name})"
    return node.name


def _linear(rf: _RF | None) -> _RF | None:
    """A Linear layer mixes its last axis: pointwise on a channels-last map, global otherwise."""
    return rf if rf is not None and -1 not in rf.axes else None
