"""The search space: which knob values a study may try.

It comes from the model file's ``SEARCH_SPACE`` or is derived around the model's defaults:
the knobs its family declares as depth, width and kernel size
(``ModelSpec.roles``: the family's declaration or the model file's ``KNOBS``, with the ranges
it gives) and the input
resolution. A knob whose values are evenly spaced
integers (``range(2, 6)``, ``[3, 5, 7]``, every derived knob) is *ordinal*: an
``IntDistribution`` with that step, so the sampler's model knows 5 lies between 3 and 7. Other
values (strings, booleans, unevenly spaced numbers) are categorical. A study remembers its
space (a rerun with another space is refused instead of silently mixing results).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from satadvisor._flags import flag
from satadvisor.errors import UsageError
from satadvisor.models import KnobRoles
from satadvisor.spec import DATA_KNOB

if TYPE_CHECKING:
    from satadvisor.spec import ModelSpec

#: The factors of the run's resolution (the data knob) a derived space tries; evenly spaced,
#: so the derived knob is ordinal.
RESOLUTION_FACTORS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
MIN_RESOLUTION = 8


@dataclass(frozen=True)
class SearchSpace:
    """Knob → ordered tuple of allowed values; ``fixed`` knobs are pinned (set by the caller)."""

    choices: dict[str, tuple[Any, ...]]
    fixed: dict[str, Any] = field(default_factory=dict)

    def distributions(self) -> dict[str, BaseDistribution]:
        return {k: distribution(v) for k, v in self.choices.items()}

    def params_of(self, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """The searched part of a configuration (what Optuna stores as the trial's params)."""
        return {k: knobs[k] for k in self.choices if k in knobs}

    def random_params(self, rng: random.Random) -> dict[str, Any]:
        return {k: rng.choice(v) for k, v in self.choices.items()}

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


def step_of(values: tuple[Any, ...]) -> int | None:
    """The common step of evenly spaced, increasing integers (None: not such a sequence)."""
    if len(values) < 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    step = values[1] - values[0]
    if step <= 0 or any(b - a != step for a, b in itertools.pairwise(values)):
        return None
    return int(step)


def distribution(values: tuple[Any, ...]) -> BaseDistribution:
    """Ordinal (``IntDistribution``) for evenly spaced integers, else categorical."""
    step = step_of(values)
    if step is not None:
        return IntDistribution(int(values[0]), int(values[-1]), step=step)
    return CategoricalDistribution(list(values))


def _scaled(default: int, factors: tuple[float, ...], lower: int) -> tuple[int, ...]:
    """Evenly spaced values from ``default × factors[0]`` to ``default × factors[-1]``.

    The step is the gap between the first two factors (at least 1), so the values stay
    evenly spaced around the default after rounding and the knob is ordinal.
    """
    if len(factors) == 2:  # every integer in between
        lo, hi = max(lower, round(default * factors[0])), max(lower, round(default * factors[1]))
        return tuple(range(lo, max(hi, default) + 1))
    step = max(1, round(default * (factors[1] - factors[0])))
    below = [default - step * i for i in range(1, 64) if default - step * i >= lower]
    below = [v for v in below if v >= default * factors[0] - step / 2]
    above = [default + step * i for i in range(1, 64)]
    above = [v for v in above if v <= default * factors[-1] + step / 2]
    return tuple(sorted({*below, default, *above}))


def _ordinal(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def derived_choices(
    roles: KnobRoles, knobs: Mapping[str, Any], resolution: int
) -> dict[str, tuple[Any, ...]]:
    """The values a search tries without a SEARCH_SPACE, from what the knobs do (``roles``):
    the depth and width knobs scaled by the declared factors around their defaults, the
    resolution by :data:`RESOLUTION_FACTORS`, the kernel knob over the declared kernel sizes
    (plus its default); a knob with declared ``choices`` takes those. Only integer knobs the
    model has are derived."""
    choices: dict[str, tuple[Any, ...]] = {}
    scaled = (
        (roles.depth, roles.depth_factors, knobs.get(roles.depth or ""), 1),
        (roles.width, roles.width_factors, knobs.get(roles.width or ""), 1),
        (DATA_KNOB, RESOLUTION_FACTORS, resolution, MIN_RESOLUTION),
    )
    for knob, factors, default, lower in scaled:
        if knob is not None and isinstance(default, int) and not isinstance(default, bool):
            choices[knob] = _scaled(default, factors, lower)
    kernel = knobs.get(roles.kernel or "")
    if roles.kernel is not None and _ordinal(kernel):
        choices[roles.kernel] = tuple(sorted({*roles.kernel_sizes, kernel}))
    for knob, values in roles.choices.items():
        if knob in choices:
            choices[knob] = tuple(values)
    return choices


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
        choices = derived_choices(spec.roles, spec.knobs, resolution)
    for knob in pinned:
        choices.pop(knob, None)
    choices = {k: v for k, v in choices.items() if len(v) > 1}
    if not choices:
        raise UsageError(
            f"nothing to search for {spec.source}: every knob is pinned or has one value; "
            f"drop a {flag('set')} or add choices to SEARCH_SPACE"
        )
    if DATA_KNOB not in choices:
        pinned.setdefault(DATA_KNOB, resolution)
    return SearchSpace(choices=choices, fixed=pinned)
