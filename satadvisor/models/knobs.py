"""What a model family's knobs do: the descriptor the rules and the search read.

A family declares, next to its build function, which of its knobs sets the depth (removes
layers), which scales the width, which is the kernel size, which slow the receptive-field
growth (and how), which values a knob may take, and the ranges a search derives around the
defaults::

    TOY_KNOBS = KnobRoles(
        depth="blocks",
        width="channels",
        kernel=None,
        receptive=(ReceptiveKnob("pool_every", "downsampling_spacing"),),
    )

    @register_model(knobs=TOY_KNOBS)
    def toy(blocks=8, channels=8, pool_every=1, *, num_classes=10, in_channels=3): ...

The rules (:mod:`satadvisor.rules`) and the search space (:mod:`satadvisor.search.space`) never
name a family or a knob; a new family needs its descriptor only. A model without a declaration
(a model file, a library model) gets :data:`CONVENTIONAL`: the conventional knob names
(``depth``, ``width``, ``kernel_size``, ``downsamplings``, ``stem_*``), each used only when the
model has that knob. Every role is a knob *name*; the changed models are always built and
measured, so a role says where to look, never what a value will do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: How a knob slows the receptive-field growth when changed:
#: ``kernel``: a smaller odd kernel; ``stride``: stride 1; ``switch``: a pooling turned off;
#: ``downsampling_count``: fewer downsampling steps; ``downsampling_spacing``: more layers
#: between downsamplings.
ReceptiveKind = Literal["kernel", "stride", "switch", "downsampling_count", "downsampling_spacing"]
RECEPTIVE_KINDS: tuple[ReceptiveKind, ...] = (
    "kernel",
    "stride",
    "switch",
    "downsampling_count",
    "downsampling_spacing",
)


@dataclass(frozen=True)
class ReceptiveKnob:
    """A knob that slows the receptive-field growth, and how (see :data:`ReceptiveKind`).

    ``layout`` names a knob that, left at None, derives the channel schedule from this one (a
    ``stages`` knob of one stage per downsampling): it is pinned to the built model's
    ``num_stages`` when this knob changes, so the change keeps every layer's channels.
    """

    name: str
    kind: ReceptiveKind
    layout: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in RECEPTIVE_KINDS:
            raise ValueError(
                f"receptive knob {self.name!r}: kind must be one of "
                f"{', '.join(RECEPTIVE_KINDS)}, got {self.kind!r}"
            )


@dataclass(frozen=True)
class KnobRoles:
    """What a family's knobs do. Every role is a knob name, or None when no knob plays it.

    ``depth``: the knob whose lower values build fewer layers (the efficiency move cuts a tail
    with it). ``width``: the knob that scales every layer's channels (doubled or halved for a
    layer that is too narrow or too wide). ``kernel``: the main kernel size (searched over
    ``kernel_sizes``). ``receptive``: the knobs that slow the receptive-field growth, in the
    order they are tried (mildest change first). ``choices``: knobs whose valid values are a
    fixed set (ResNet's depths); moves and search use only those. ``depth_factors`` /
    ``width_factors``: the range a search derives around the default, as factors of it (two
    factors: every integer between; more: evenly spaced values).
    """

    depth: str | None = "depth"
    width: str | None = "width"
    kernel: str | None = "kernel_size"
    receptive: tuple[ReceptiveKnob, ...] = (
        ReceptiveKnob("kernel_size", "kernel"),
        ReceptiveKnob("stem_kernel", "kernel"),
        ReceptiveKnob("downsamplings", "downsampling_count", layout="stages"),
        ReceptiveKnob("stem_stride", "stride"),
        ReceptiveKnob("stem_pool", "switch"),
    )
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict, hash=False)
    depth_factors: tuple[float, ...] = (0.5, 1.25)
    width_factors: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    kernel_sizes: tuple[int, ...] = (3, 5, 7)

    def __post_init__(self) -> None:
        for name in ("depth_factors", "width_factors"):
            factors = getattr(self, name)
            if len(factors) < 2 or list(factors) != sorted(factors) or factors[0] <= 0:
                raise ValueError(f"{name} must be at least two increasing positive factors")
        for knob, values in self.choices.items():
            if not values:
                raise ValueError(f"choices of {knob!r} must not be empty")

    def names(self) -> set[str]:
        """Every knob name this descriptor gives a role."""
        named = {self.depth, self.width, self.kernel, *(k.name for k in self.receptive)}
        named |= {k.layout for k in self.receptive} | set(self.choices)
        return {name for name in named if name is not None}


#: The descriptor of a model that declares none: the conventional knob names.
CONVENTIONAL = KnobRoles()
