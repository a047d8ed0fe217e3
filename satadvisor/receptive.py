"""Training-free receptive-field analysis (Richter et al., ICMLA 2021). To be implemented."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerReceptiveField:
    """Receptive field of one tracked layer's *output* (pixels of the input image).

    ``input_r_min`` is the smallest r_min among the inputs the layer reads; ``input_size`` the
    smaller spatial side of its input feature map at the analysed resolution. Linear layers
    (which see the whole input) have ``r_min = r_max = None`` and are never flagged.
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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    def border_layer(self) -> str | None:
        """The first unproductive layer in forward order, or None."""
        names = self.unproductive
        return names[0] if names else None

    def by_name(self) -> dict[str, LayerReceptiveField]:
        return {layer.name: layer for layer in self.layers}
