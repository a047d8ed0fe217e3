"""Library models by name: ``torchvision:NAME`` and ``timm:NAME`` (timm an optional extra).

Each name becomes a build function with the model-file signature::

    build(*, num_classes, in_channels, **knobs) -> nn.Module

built without pretrained weights (nothing is downloaded). The *knobs* are the model class's
own architecture arguments with simple defaults (bool, int, float; e.g. MobileNetV2's
``width_mult``) that the library's builder lets through: each candidate is tried once on the
meta device with its default value, and arguments the builder fixes itself (ResNeXt's
``groups``) or that only regularise or initialise (dropout, stochastic depth, zero-init) are
left out. Models whose class takes the input size (``image_size`` / ``img_size``: vision
transformers) get the data knob ``resolution`` instead, passed on as that argument.

``num_classes`` and the number of input channels are set by satadvisor: timm takes
``in_chans``; for torchvision the first convolution (the stem) is replaced by one with the
data's channels and otherwise the same geometry, when it reads the 3 image channels.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from satadvisor.errors import ModelBuildError, ModelFileError

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
LIBRARY_PREFIXES = (TORCHVISION_PREFIX, TIMM_PREFIX)
TIMM_INSTALL = "pip install 'satadvisor[timm]'"

#: Constructor arguments that are not architecture: regularisation, initialisation, I/O.
_NOT_KNOBS = frozenset(
    {
        "num_classes",
        "in_chans",
        "in_channels",
        "weights",
        "progress",
        "pretrained",
        "dropout",
        "dropout_aux",
        "attention_dropout",
        "drop_rate",
        "drop_path_rate",
        "proj_drop_rate",
        "attn_drop_rate",
        "pos_drop_rate",
        "patch_drop_rate",
        "drop_block_rate",
        "stochastic_depth_prob",
        "zero_init_residual",
        "zero_init_last",
        "init_weights",
        "init_values",
        "layer_scale",
        "layer_scale_init_value",
        "aux_logits",
        "transform_input",
        "memory_efficient",
        "dynamic_img_size",
        "dynamic_img_pad",
        "fix_init",
    }
)
#: Constructor arguments that are the input size: fed from the data knob ``resolution``.
_SIZE_ARGS = ("image_size", "img_size")
#: Set where the class takes them: plain logits in training mode too, no ImageNet input shift
#: (both only matter for GoogLeNet and Inception-v3).
_FIXED = {"aux_logits": False, "transform_input": False}


class NotAdaptableError(ValueError):
    """The model's first layer cannot be made to read the data's channels."""


@dataclass(frozen=True)
class LibraryModel:
    """A library model resolved by name: its build function, knobs and input-size argument."""

    name: str
    source: str
    build: Callable[..., nn.Module]
    knobs: dict[str, Any]


def is_library(text: str) -> bool:
    """True for ``torchvision:NAME`` and ``timm:NAME``."""
    return text.startswith(LIBRARY_PREFIXES)


@functools.lru_cache(maxsize=64)
def resolve(source: str) -> LibraryModel:
    """The build function and knobs of ``torchvision:NAME`` / ``timm:NAME``.

    Unknown names and a missing timm raise a one-line :class:`ModelFileError`.
    """
    prefix, _, name = source.partition(":")
    name = name.strip()
    if not name:
        raise ModelFileError(
            f"{source}: no model name given; write {prefix}:NAME, e.g. {prefix}:resnet18"
        )
    if prefix + ":" == TORCHVISION_PREFIX:
        builder, fixed = _torchvision_builder(name, source)
        create = functools.partial(_build_torchvision, builder, fixed)
    else:
        timm_create = _timm_creator(name, source)
        fixed = {"pretrained": False}
        create = functools.partial(_build_timm, timm_create, name)
    knobs, size_arg = _knobs(create, fixed, source)
    build = functools.partial(_build, create, size_arg, source)
    if size_arg is not None:
        knobs["resolution"] = size_arg[1]
    return LibraryModel(name=name, source=source, build=build, knobs=knobs)


# --------------------------------------------------------------------------- torchvision


def _torchvision_builder(name: str, source: str) -> tuple[Callable[..., nn.Module], dict[str, Any]]:
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)  # the classification models
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "e.g. resnet18, mobilenet_v2"
        raise ModelFileError(
            f"{source}: torchvision has no classification model {name!r}; {hint} "
            "(torchvision.models.list_models() lists them)"
        )
    builder = tvm.get_model_builder(name)
    fixed: dict[str, Any] = {"weights": None}
    model_cls = type(_on_meta(lambda: builder(weights=None), source))
    params = inspect.signature(model_cls.__init__).parameters
    fixed.update({k: v for k, v in _FIXED.items() if k in params})
    init = params.get("init_weights")
    if init is not None and init.default is None:  # GoogLeNet, Inception: torchvision's
        fixed["init_weights"] = False  # future default, without its warning
    return builder, fixed


def _build_torchvision(
    builder: Callable[..., nn.Module],
    fixed: dict[str, Any],
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    extra = {} if num_classes is None else {"num_classes": num_classes}
    model = builder(**fixed, **extra, **kwargs)
    if in_channels is not None and in_channels != 3:
        adapt_in_channels(model, in_channels)
    return model


def adapt_in_channels(model: nn.Module, in_channels: int) -> str:
    """Replace the first convolution (the stem, which reads the 3 image channels) by one that
    reads ``in_channels``, with the same geometry; returns its name.

    :class:`NotAdaptableError` when the first convolution does not read 3 channels (nothing safe to replace).
    """
    first = next(
        ((n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)),
        None,
    )
    if first is None or first[1].in_channels != 3 or first[1].groups != 1:
        raise NotAdaptableError(
            f"its first layer does not read the 3 image channels, so it cannot be adapted to "
            f"{in_channels}-channel data; use 3-channel data"
        )
    name, conv = first
    if not isinstance(conv, nn.Conv2d | nn.Conv1d | nn.Conv3d):
        raise NotAdaptableError(
            f"its first layer {name} is a {type(conv).__name__}; use 3-channel data"
        )
    replacement = type(conv)(
        in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=1,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, replacement)
    return name


# --------------------------------------------------------------------------- timm


def _timm_creator(name: str, source: str) -> Callable[..., nn.Module]:
    try:
        import timm
    except ImportError:
        raise ModelFileError(
            f"{source}: timm is not installed; {TIMM_INSTALL} (or pip install timm)"
        ) from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "timm.list_models() lists them"
        raise ModelFileError(f"{source}: timm has no model {name!r}; {hint}")
    create: Callable[..., nn.Module] = timm.create_model
    return create


def _build_timm(
    timm_create: Callable[..., nn.Module],
    name: str,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    extra: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if in_channels is not None:
        extra["in_chans"] = in_channels
    return timm_create(name, **extra, **kwargs)


# --------------------------------------------------------------------------- shared


def _build(
    create: Callable[..., nn.Module],
    size_arg: tuple[str, int] | None,
    source: str,
    *,
    num_classes: int,
    in_channels: int,
    resolution: int | None = None,
    **knobs: Any,
) -> nn.Module:
    """The model-file ``build_model`` of a library model."""
    if size_arg is not None:
        knobs[size_arg[0]] = size_arg[1] if resolution is None else resolution
    try:
        return create(num_classes=num_classes, in_channels=in_channels, **knobs)
    except NotAdaptableError as exc:
        raise ModelBuildError(f"{source}: {exc}") from exc


def _knobs(
    create: Callable[..., nn.Module], fixed: dict[str, Any], source: str
) -> tuple[dict[str, Any], tuple[str, int] | None]:
    """The architecture arguments the builder lets through, and the input-size argument."""
    model = _on_meta(lambda: create(), source)
    params = inspect.signature(type(model).__init__).parameters.values()
    knobs: dict[str, Any] = {}
    size_arg: tuple[str, int] | None = None
    for param in params:
        default = param.default
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            continue
        if param.name in _NOT_KNOBS or param.name in fixed or param.name.endswith("eps"):
            continue
        if param.name in _SIZE_ARGS:
            size = _model_size(model, param.name, default)
            if size is not None:
                size_arg = (param.name, size)
            continue
        if not isinstance(default, bool | int | float):
            continue
        if _accepts(create, {param.name: default}):
            knobs[param.name] = default
    return knobs, size_arg


def _model_size(model: nn.Module, arg: str, default: Any) -> int | None:
    """The input size the built model was made for (the builder may differ from the class)."""
    for value in (getattr(model, arg, None), getattr(model, "image_size", None), default):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, tuple | list) and value and isinstance(value[0], int):
            return int(value[0])
    return None


def _accepts(create: Callable[..., nn.Module], kwargs: dict[str, Any]) -> bool:
    try:
        with _meta():
            create(**kwargs)
    except Exception:  # the builder fixes it, or it cannot take it alone
        return False
    return True


def _on_meta(fn: Callable[[], nn.Module], source: str) -> nn.Module:
    """``fn()`` on the meta device (no memory, no init cost), on the CPU if that fails."""
    try:
        with _meta():
            return fn()
    except Exception:
        pass
    try:
        return fn()
    except Exception as exc:
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ModelFileError(
            f"{source}: building it failed ({type(exc).__name__}: {text}); try another model"
        ) from exc


@contextlib.contextmanager
def _meta() -> Iterator[None]:
    with torch.device("meta"), torch.random.fork_rng(devices=[]):
        yield
