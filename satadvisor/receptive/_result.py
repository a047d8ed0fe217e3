"""Result types of the receptive-field analysis: one layer, and the whole model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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

    ``after_attention`` marks a layer that reads a tensor computed from the output of an
    attention op: attention mixes every position with every other by content, so the
    receptive field does not describe the layer (its fields are None and it is never flagged).
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
    after_attention: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerReceptiveField:
        return cls(**d)


@dataclass(frozen=True)
class ReceptiveFieldAnalysis:
    """Result of :func:`analyze` for one model at one input resolution.

    ``attention`` names the attention ops of the model (modules, or ``module (node)`` for
    functional ones), in forward order; a model with any is ``supported=False`` with a
    ``reason`` that says so, and its layers are still listed (see ``after_attention``).
    """

    resolution: int
    supported: bool
    layers: tuple[LayerReceptiveField, ...] = ()
    feasible_range: tuple[int, int] | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    attention: tuple[str, ...] = ()

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
            "attention": list(self.attention),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReceptiveFieldAnalysis:
        rng = d.get("feasible_range")
        return cls(
            resolution=int(d["resolution"]),
            supported=bool(d["supported"]),
            layers=tuple(LayerReceptiveField.from_dict(x) for x in d.get("layers", ())),
            feasible_range=(int(rng[0]), int(rng[1])) if rng else None,
            reason=d.get("reason"),
            extra=dict(d.get("extra", {})),
            attention=tuple(d.get("attention", ())),
        )
