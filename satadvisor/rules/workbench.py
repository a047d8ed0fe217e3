"""Builds and measures candidate models: every recommendation's cost is measured, not guessed.

Every candidate is *built* with ``spec.create`` and measured (``cost.count_macs`` /
``count_parameters`` at its resolution, ``receptive.analyze`` for its unproductive layers):
knob semantics differ between models, so nothing here guesses what a value does. What each
knob is *for* (depth, width, receptive-field growth) comes from the model family's
declaration, :func:`satadvisor.models.knob_roles`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from satadvisor import receptive
from satadvisor.cost import count_macs, count_parameters, macs_by_module
from satadvisor.errors import SatAdvisorError
from satadvisor.models import KnobRoles, knob_roles
from satadvisor.receptive import ReceptiveFieldAnalysis
from satadvisor.rules.records import Cost, Recommendation, RecommendationKind


class SpecLike(Protocol):
    """What the rules need of a :class:`satadvisor.spec.ModelSpec`."""

    @property
    def knobs(self) -> Mapping[str, Any]: ...

    @property
    def search_space(self) -> Mapping[str, Sequence[Any]] | None: ...

    @property
    def optimisable(self) -> bool: ...

    def create(self, *, num_classes: int, in_channels: int, **knobs: Any) -> nn.Module: ...


def source_of(spec: SpecLike) -> str:
    """Where the model comes from (``builtin:NAME``, a file, a library name)."""
    return str(getattr(spec, "source", "") or "the model")


def count_label(n: int) -> str:
    """12,345,678 -> '12.3 M'; small counts as written."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)


def conv_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


@dataclass
class Workbench:
    """Builds and measures candidate models relative to the baseline (cached per config)."""

    spec: SpecLike
    knobs: dict[str, Any]
    resolution: int
    num_classes: int
    in_channels: int
    #: Resolution of the dataset's own images; None when unknown (no cap on raising it).
    source_resolution: int | None = None
    _models: dict[str, nn.Module | None] = field(default_factory=dict)
    baseline: Cost | None = None
    #: What the model's knobs do (its family's declaration, or the conventional names).
    roles: KnobRoles = field(init=False)
    # Built models kept for reuse; few, because a candidate may be a large network.
    _cache_size: int = 4

    def __post_init__(self) -> None:
        self.knobs.pop("resolution", None)  # the data knob travels separately
        declared = getattr(self.spec, "roles", None)  # a ModelSpec's; else by its source
        self.roles = (
            declared if isinstance(declared, KnobRoles) else knob_roles(source_of(self.spec))
        )
        model = self.build({})
        if model is not None:
            macs = self.macs(model, self.resolution)
            if macs is not None:
                self.baseline = Cost(macs, count_parameters(model), 1.0, 1.0)

    def build(self, changes: Mapping[str, Any]) -> nn.Module | None:
        knobs = {**self.knobs, **{k: v for k, v in changes.items() if k != "resolution"}}
        if "resolution" in self.spec.knobs:  # a build_model that sizes itself by resolution
            knobs["resolution"] = int(changes.get("resolution", self.resolution))
        key = json.dumps(knobs, sort_keys=True, default=repr)
        if key in self._models:
            self._models[key] = self._models.pop(key)  # most recently used last
            return self._models[key]
        # Building draws initial weights: keep the caller's RNG stream untouched.
        with torch.random.fork_rng(devices=[]):
            try:
                model: nn.Module | None = self.spec.create(
                    num_classes=self.num_classes, in_channels=self.in_channels, **knobs
                )
            except SatAdvisorError:
                model = None
        self._models[key] = model
        while len(self._models) > self._cache_size:
            del self._models[next(iter(self._models))]
        return model

    def macs(self, model: nn.Module, resolution: int) -> int | None:
        try:
            return count_macs(model, in_channels=self.in_channels, resolution=resolution)
        except (SatAdvisorError, RuntimeError, ValueError):  # e.g. a map shrinks below 1 px
            return None

    def layer_cost(self, names: Sequence[str]) -> tuple[int, int] | None:
        """MACs (one input at the resolution) and parameters of the baseline's layers ``names``."""
        model = self.build({})
        if model is None:
            return None
        modules = dict(model.named_modules())
        if not names or any(name not in modules for name in names):
            return None
        try:
            per_module = macs_by_module(
                model, in_channels=self.in_channels, resolution=self.resolution
            )
        except (SatAdvisorError, RuntimeError, ValueError):
            return None
        macs = sum(per_module.get(name, 0) for name in names)
        params = {id(p): p.numel() for n in names for p in modules[n].parameters()}
        return macs, sum(params.values())

    def analyze(self, model: nn.Module, resolution: int) -> ReceptiveFieldAnalysis | None:
        try:
            rf = receptive.analyze(model, resolution, in_channels=self.in_channels)
        except SatAdvisorError:
            return None
        return rf if rf.supported else None

    def smallest_productive(self, model: nn.Module) -> int | None:
        space = (self.spec.search_space or {}).get("resolution")
        tries: list[list[int] | None] = [sorted(int(v) for v in space)] if space else []
        for candidates in [*tries, None]:
            try:
                found = receptive.smallest_productive_resolution(
                    model, in_channels=self.in_channels, candidates=candidates
                )
            except SatAdvisorError:
                return None
            if found is not None:
                return int(found)
        return None

    def has(self, knob: str | None) -> bool:
        """Whether the model has ``knob`` (a role's knob name; None: no knob plays the role)."""
        return knob is not None and knob in self.knobs

    def values(self, knob: str) -> list[Any]:
        """The values ``knob`` may take other than its current one: the search space's, else
        the family's fixed choices; [] when neither lists any."""
        values = (self.spec.search_space or {}).get(knob) or self.roles.choices.get(knob)
        return [v for v in values if v != self.knobs.get(knob)] if values else []

    def make(
        self, kind: RecommendationKind, title: str, changes: dict[str, Any], rationale: str
    ) -> Recommendation | None:
        """The recommendation for ``changes``, measured; None when the model fails to build/run."""
        resolution = int(changes.get("resolution", self.resolution))
        model = self.build(changes)
        if model is None:
            return None
        macs = self.macs(model, resolution)
        if macs is None:
            return None
        cost = None
        if self.baseline is not None:
            params = count_parameters(model)
            cost = Cost(
                macs,
                params,
                macs / max(self.baseline.macs, 1),
                params / max(self.baseline.params, 1),
            )
        rf = self.analyze(model, resolution)
        knobs = {**self.knobs, **{k: v for k, v in changes.items() if k != "resolution"}}
        return Recommendation(
            kind=kind,
            title=title,
            changes=dict(changes),
            knobs=knobs,
            resolution=resolution,
            rationale=rationale,
            cost=cost,
            unproductive_after=len(rf.unproductive) if rf is not None else None,
        )
