"""Registry of built-in model families and presets (timm style: architectures as data).

Every registered function has the model-file signature::

    fn(depth=..., kernel_size=3, width=..., ..., *, num_classes: int = 10, in_channels: int = 3)

Its keyword parameters with defaults, minus ``num_classes`` / ``in_channels``, are the
architecture *knobs* the advisor can read and the search can change.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from torch import nn

from satadvisor.errors import ModelFileError, UsageError
from satadvisor.models.knobs import CONVENTIONAL, KnobRoles

#: Parameters filled in from the dataset, never knobs.
INJECTED = ("num_classes", "in_channels")

ModelFn = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFn)

_MODELS: dict[str, ModelFn] = {}


_ROLES: dict[str, KnobRoles] = {}


@overload
def register_model(fn: F, *, knobs: KnobRoles | None = None) -> F: ...


@overload
def register_model(fn: None = None, *, knobs: KnobRoles | None = None) -> Callable[[F], F]: ...


def register_model(fn: F | None = None, *, knobs: KnobRoles | None = None) -> F | Callable[[F], F]:
    """Register ``fn`` under its ``__name__``; a second function of the same name is an error.

    ``knobs`` declares what its knobs do (the rules and the search read it; None: the
    conventional names, :data:`~satadvisor.models.knobs.CONVENTIONAL`). Usable as
    ``@register_model`` or ``@register_model(knobs=KnobRoles(...))``.
    """

    def register(f: F) -> F:
        name = f.__name__
        if name in _MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        _MODELS[name] = f
        _ROLES[name] = knobs if knobs is not None else CONVENTIONAL
        return f

    return register(fn) if fn is not None else register


def unregister_model(name: str) -> None:
    """Remove the model registered as ``name`` (and its knob declaration); unknown names raise
    :class:`ModelFileError`. For registrations made at run time (a notebook, a test)."""
    get_model_fn(name)
    del _MODELS[name]
    _ROLES.pop(name, None)


def knob_roles(source: str) -> KnobRoles:
    """What the knobs of ``source`` do: a registered model's declaration (``NAME`` or
    ``builtin:NAME``); :data:`~satadvisor.models.knobs.CONVENTIONAL` for anything else."""
    return _ROLES.get(source.removeprefix("builtin:"), CONVENTIONAL)


@dataclass(frozen=True)
class FamilyMember:
    """A model that a registered family builds with its own knobs (a preset, a library model),
    so advice for it can change knobs the model itself does not have.

    ``family``: the registered family's name; ``knobs``: the family's knob values that build the
    member's layers; ``note``: what the family's build differs in (empty: nothing).
    """

    family: str
    knobs: dict[str, Any]
    note: str = ""


_MEMBERS: dict[str, Callable[[Mapping[str, Any]], FamilyMember | None]] = {}


def register_member(
    source: str, member: Callable[[Mapping[str, Any]], FamilyMember | None]
) -> None:
    """Declare that ``source`` (``"vgg16"``, ``"torchvision:resnet18"``) belongs to a family:
    ``member`` maps the model's knob values to the family's (None: not for those values)."""
    _MEMBERS[source] = member


def family_member(source: str, knobs: Mapping[str, Any]) -> FamilyMember | None:
    """The family that builds ``source`` (``builtin:NAME``, ``NAME`` or a library name) with
    ``knobs``, or None when it has none."""
    key = source.removeprefix("builtin:")
    member = _MEMBERS.get(key)
    return member(knobs) if member is not None else None


def list_models() -> list[str]:
    """Names of all registered families and presets, sorted."""
    return sorted(_MODELS)


def get_model_fn(name: str) -> ModelFn:
    """The registered function ``name``; unknown names raise :class:`ModelFileError`."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ModelFileError(
            f"unknown built-in model {name!r}: use one of {', '.join(list_models())}"
        ) from None


def signature_knobs(fn: Callable[..., Any]) -> dict[str, Any]:
    """Keyword parameters of ``fn`` that have defaults, minus num_classes/in_channels."""
    knobs: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.name in INJECTED or param.default is inspect.Parameter.empty:
            continue
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            knobs[param.name] = param.default
    return knobs


def model_knobs(name: str) -> dict[str, Any]:
    """Knob name -> default value of the registered model ``name``."""
    return signature_knobs(get_model_fn(name))


def create_model(name: str, **knobs: Any) -> nn.Module:
    """Build the registered model ``name``; ``knobs`` override its defaults.

    ``num_classes`` and ``in_channels`` may be passed too. Unknown knob names raise
    :class:`UsageError` naming the known ones.
    """
    fn = get_model_fn(name)
    allowed = set(signature_knobs(fn)) | set(INJECTED)
    for key in knobs:
        if key not in allowed:
            known = ", ".join(sorted(allowed - set(INJECTED)))
            raise UsageError(f"unknown knob {key!r} for {name}: known knobs are {known}")
    return fn(**knobs)


def input_dims(model: nn.Module) -> int:
    """Spatial dimensions of the input ``model`` expects: 1 for signals (N, C, T), 2 for images.

    Read from the first convolution or pooling layer in module order (a Conv1d/MaxPool1d ->
    1, Conv2d -> 2, Conv3d -> 3); 2 when there is none (an MLP reads whatever it is given).
    """
    windowed = (
        nn.modules.conv._ConvNd,
        nn.modules.pooling._MaxPoolNd,
        nn.modules.pooling._AvgPoolNd,
        nn.modules.pooling._AdaptiveAvgPoolNd,
        nn.modules.pooling._AdaptiveMaxPoolNd,
    )
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return len(module.kernel_size)
        if isinstance(module, windowed):
            for cls in type(module).__mro__:
                if cls.__module__.startswith("torch.nn") and cls.__name__[-2:] in ("1d", "3d"):
                    return int(cls.__name__[-2])
            return 2
    return 2


# --- shared helpers of the families -------------------------------------------------------


def split_evenly(total: int, parts: int) -> tuple[int, ...]:
    """``total`` split into ``parts`` near-equal counts, the larger ones last.

    Later stages get the extra layers, as in VGG: 13 convs over 5 stages -> (2, 2, 3, 3, 3).
    """
    base, extra = divmod(total, parts)
    return tuple(base + (1 if i >= parts - extra else 0) for i in range(parts))


def check_positive(family: str, **values: int) -> None:
    """ValueError unless every value is an int >= 1."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{family} needs {key} >= 1, got {value!r}")


def check_stage_layout(
    family: str, *, depth: int, downsamplings: int, stages: int | None, first_unstrided: bool
) -> None:
    """ValueError unless the downsamplings fit the stages and the stages fit the depth.

    ``stages=None`` means the family's default (one stage per downsampling, plus one when the
    first stage never downsamples), so only ``downsamplings`` against ``depth`` is checked.
    ``first_unstrided``: the first stage runs at full resolution (``downsamplings < stages``).
    """
    op = "<" if first_unstrided else "<="
    if stages is None:
        if not 0 <= downsamplings <= depth - first_unstrided:
            raise ValueError(
                f"{family} needs 0 <= downsamplings {op} depth, got "
                f"downsamplings={downsamplings} with depth={depth}"
            )
        return
    check_positive(family, stages=stages)
    if not 0 <= downsamplings <= stages - first_unstrided or stages > depth:
        raise ValueError(
            f"{family} needs 0 <= downsamplings {op} stages <= depth, got "
            f"downsamplings={downsamplings}, stages={stages}, depth={depth}"
        )


def check_odd_kernel(family: str, key: str, value: int) -> None:
    """ValueError unless ``value`` is an odd int >= 1 ("same" padding needs an odd kernel)."""
    check_positive(family, **{key: value})
    if value % 2 == 0:
        raise ValueError(f"{family} needs an odd {key} (1, 3, 5, ...), got {value}")


def init_weights(model: nn.Module) -> None:
    """He-normal (fan-out) conv weights, BatchNorm at identity, zero biases; Linear as torch."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
