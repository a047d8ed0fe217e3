"""The search space: which knob values a study may try.

It comes from the model file's ``SEARCH_SPACE`` or is derived around the model's defaults
(depth, kernel size, width and input resolution). Every knob is categorical in Optuna, so the
rule-guided candidates can be enqueued with exact values, and a study remembers its space (a
rerun with another space is refused instead of silently mixing results).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, CategoricalDistribution

from satadvisor.errors import UsageError

if TYPE_CHECKING:
    from satadvisor.spec import ModelSpec

#: Knobs derived when the model has no SEARCH_SPACE, with the factors applied to the default.
DERIVED_FACTORS: dict[str, tuple[float, ...]] = {
    "depth": (0.5, 0.75, 1.0, 1.25),
    "width": (0.5, 1.0, 2.0),
    "resolution": (0.5, 0.75, 1.0, 1.5, 2.0),
}
KERNEL_SIZES = (3, 5, 7)
MIN_RESOLUTION = 8


@dataclass(frozen=True)
class SearchSpace:
    """Knob → ordered tuple of allowed values; ``fixed`` knobs are pinned (``--set``)."""

    choices: dict[str, tuple[Any, ...]]
    fixed: dict[str, Any] = field(default_factory=dict)

    def distributions(self) -> dict[str, BaseDistribution]:
        return {k: CategoricalDistribution(list(v)) for k, v in self.choices.items()}

    def snap(self, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """Project a configuration onto the space: each searched knob to its nearest choice."""
        out: dict[str, Any] = {}
        for name, values in self.choices.items():
            value = knobs.get(name, values[0])
            if value in values:
                out[name] = value
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                out[name] = min(values, key=lambda v: (abs(float(v) - float(value)), v))
            else:
                out[name] = values[0]
        return out

    def configuration(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Sampled params + pinned knobs: everything ``analyze`` needs (``resolution`` included)."""
        return {**self.fixed, **params}

    @property
    def size(self) -> int:
        n = 1
        for v in self.choices.values():
            n *= len(v)
        return n


def _scaled(default: int, factors: tuple[float, ...], lower: int) -> tuple[int, ...]:
    return tuple(sorted({max(lower, round(default * f)) for f in factors}))


def derive_space(
    spec: ModelSpec, *, resolution: int, pinned: Mapping[str, Any] | None = None
) -> SearchSpace:
    """The model's SEARCH_SPACE, else a space around its defaults; ``pinned`` knobs are fixed."""
    pinned = dict(pinned or {})
    if not spec.optimisable:
        raise UsageError(
            f"{spec.source} defines a fixed `model`; define build_model(...) with knobs "
            "(depth, kernel_size, width) to optimise it"
        )
    if spec.search_space:
        choices = {k: tuple(v) for k, v in spec.search_space.items()}
    else:
        choices = {}
        for knob, factors in DERIVED_FACTORS.items():
            default = resolution if knob == "resolution" else spec.knobs.get(knob)
            if isinstance(default, int) and not isinstance(default, bool):
                lower = MIN_RESOLUTION if knob == "resolution" else 1
                choices[knob] = _scaled(default, factors, lower)
        k = spec.knobs.get("kernel_size")
        if isinstance(k, int) and not isinstance(k, bool):
            choices["kernel_size"] = tuple(sorted({*KERNEL_SIZES, k}))
        if spec.source.startswith("builtin:"):
            from satadvisor.models import KNOB_CHOICES

            for knob, values in KNOB_CHOICES.get(spec.name, {}).items():
                if knob in choices:
                    choices[knob] = values
    for knob in pinned:
        choices.pop(knob, None)
    choices = {k: v for k, v in choices.items() if len(v) > 1}
    if not choices:
        raise UsageError(
            f"nothing to search for {spec.source}: every knob is pinned or has one value; "
            "drop a --set or add choices to SEARCH_SPACE"
        )
    if "resolution" not in choices:
        pinned.setdefault("resolution", resolution)
    return SearchSpace(choices=choices, fixed=pinned)
