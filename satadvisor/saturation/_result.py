"""The per-layer result of a saturation measurement."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerSaturation:
    """Saturation of one tracked layer over the observations seen in one phase.

    ``saturation`` = ``intrinsic_dimension / width``, a fraction in (0, 1] (0.0 when the layer
    saw no samples); ``eigenvalues`` of the population covariance, descending, float64 values.
    ``samples`` counts observation rows (for a conv output: images × spatial positions).
    A layer whose outputs have zero variance also gets saturation 0.0 (intrinsic dimension 0),
    as can any layer under the ``k_rule="delve"`` compatibility rule (delve's k is one too small).
    ``saturation_se``: the standard error of ``saturation`` from the spread between batch
    groups (see :class:`~satadvisor.saturation.SaturationTracker`); None when not measured.
    """

    name: str
    module_type: str
    width: int
    samples: int
    saturation: float
    intrinsic_dimension: int
    eigenvalues: tuple[float, ...] = field(default=(), repr=False)
    saturation_se: float | None = None

    def to_dict(self, *, with_eigenvalues: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.module_type,
            "width": self.width,
            "samples": self.samples,
            "saturation": self.saturation,
            "intrinsic_dimension": self.intrinsic_dimension,
            "saturation_se": self.saturation_se,
        }
        if with_eigenvalues:
            out["eigenvalues"] = list(self.eigenvalues)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerSaturation:
        return cls(
            name=d["name"],
            module_type=d["type"],
            width=int(d["width"]),
            samples=int(d["samples"]),
            saturation=float(d["saturation"]),
            intrinsic_dimension=int(d["intrinsic_dimension"]),
            eigenvalues=tuple(float(v) for v in d.get("eigenvalues", ())),
            saturation_se=None if d.get("saturation_se") is None else float(d["saturation_se"]),
        )
