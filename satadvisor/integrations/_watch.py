"""The per-epoch reading of a profile that the integrations log: tail and settled state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from satadvisor import rules, trust
from satadvisor.saturation import LayerSaturation


@dataclass(frozen=True)
class WatchState:
    """One epoch as :class:`SaturationWatch` reads it.

    ``tail``: the measured tail (layer names, see :func:`satadvisor.rules.tail_layers`);
    ``settled``: whether the profile moved by at most the settling tolerance over the last
    epoch with an unchanged tail/early pattern (:func:`satadvisor.trust.settling`; never with
    one epoch); ``max_change``: the largest per-layer change over the last epoch.
    """

    epoch: int
    profile: tuple[LayerSaturation, ...]
    tail: tuple[str, ...]
    settled: bool
    max_change: float | None

    def scalars(self, prefix: str = "saturation") -> dict[str, float]:
        """Flat metrics for a logger: one per layer, plus tail length and settled (0/1)."""
        out = {f"{prefix}/{layer.name}": float(layer.saturation) for layer in self.profile}
        out[f"{prefix}/tail_length"] = float(len(self.tail))
        out[f"{prefix}/settled"] = 1.0 if self.settled else 0.0
        return out


@dataclass
class SaturationWatch:
    """Feed it one profile per epoch (:meth:`update`); it keeps the history."""

    thresholds: rules.RuleThresholds = field(default_factory=rules.RuleThresholds)
    history: list[tuple[LayerSaturation, ...]] = field(default_factory=list)

    def update(self, profile: Sequence[LayerSaturation]) -> WatchState:
        self.history.append(tuple(profile))
        th = self.thresholds
        settling = trust.settling(self.history, pattern=lambda p: rules.pattern(p, thresholds=th))
        return WatchState(
            epoch=len(self.history),
            profile=tuple(profile),
            tail=tuple(rules.tail_layers(profile, thresholds=th)),
            settled=settling.settled,
            max_change=settling.max_change,
        )
