"""Tracing a model with torch.fx and recording its feature-map shapes at one input size."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.fx as fx
from torch import nn

Dims = tuple[int, ...]


class Unsupported(Exception):
    """The graph holds something whose receptive field cannot be followed."""


class ShapeFailure(Exception):
    """The model does not run on a (1, C, I, I) input ((1, C, I) for signals)."""


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
class LayerCall:
    """One call of a reported (Conv*/Linear) module."""

    name: str
    module: nn.Module
    in_rf: _RF | None
    out_rf: _RF | None
    in_spatial: Dims | None
    kernel: Dims | None = None
    stride: Dims | None = None
    keff: Dims | None = None
    after_attention: bool = False  # it reads a tensor computed from an attention op's output


@dataclass
class TracedModel:
    """A model traced by :func:`trace_model`: its fx graph, the submodules kept opaque, and the
    spatial dimensions of its input."""

    model_name: str
    gm: fx.GraphModule
    opaque: tuple[str, ...]
    nd: int = 2  # spatial dimensions of the input: 1 for (N, C, T) signals, 2 for images


#: The layers the verdicts are about: every Conv1d/2d/3d and transposed conv.
CONV = nn.modules.conv._ConvNd
_REPORTED = (CONV, nn.Linear)
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


def trace_model(model: nn.Module, nd: int = 2) -> TracedModel:
    """Symbolically trace ``model`` (fed inputs with ``nd`` spatial dimensions); submodules fx
    cannot trace into become opaque leaves."""
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
            raise Unsupported(f"cannot trace {name}: {_first_line(exc)}") from exc
        gm = fx.GraphModule(tracer.root, graph, name)
        return TracedModel(name, gm, tuple(sorted(opaque)), nd)
    raise Unsupported(f"cannot trace {name}: too many untraceable submodules")


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


def record_shapes(traced: TracedModel, resolution: int, in_channels: int) -> dict[str, Any]:
    """Node name -> output shape (tuple, nested list for tuples, None for non-tensors).

    Runs a copy on the meta device first (shapes without arithmetic, at any resolution; the
    first call in a process pays a one-time import inside torch). When an op has no meta
    kernel, a zero input runs through a real copy in eval mode without gradients; a model
    that cannot be copied runs itself, and its training flags are restored afterwards.
    """
    size = (1, in_channels, *(resolution,) * traced.nd)
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
        raise ShapeFailure(
            f"cannot run {traced.model_name} on a {shape} input: {_first_line(exc)}"
        ) from exc
    finally:
        for m, mode in modes.items():
            m.train(mode)
