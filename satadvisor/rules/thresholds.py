"""The thresholds of the rules, and :data:`Z`, the number of standard errors a difference needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from satadvisor.errors import UsageError

#: A difference is called only when it exceeds this many standard errors (about 95 %).
Z = 2.0


@dataclass(frozen=True)
class RuleThresholds:
    """The thresholds of the rules; every value is a fraction of a saturation or a layer count.

    ``tail_ratio`` (0.5): a run of trailing layers is a tail when its first layer and its mean
    are below this fraction of the median saturation of the layers before it, and none of its
    layers reaches that median (the drop is not undone later). Requiring *every* layer below
    the fraction missed real tails that decay unevenly (measured VGG16-style on Fashion-MNIST:
    conv8–conv10 at 0.09–0.11 after 0.35, against a median of 0.22). Relative, so scaling the
    profile does not change the decision; 0.5 separates the published VGG16 tail (conv8 at 0.17
    against a median of 0.45) from the ordinary layer-to-layer scatter of healthy networks
    (ResNets alternate by a factor of 2–3 between neighbouring layers, never for a whole run).
    ``min_prefix`` (2): layers that must precede a tail (and follow an early run) so that the
    median it is compared with means something. ``min_tail`` (2): the shortest tail reported; a
    single low last layer is indistinguishable from that scatter. ``early_ratio`` (0.1): a
    leading layer is under-used when its saturation is below this fraction of the median of the
    body (the layers between the early run and the tail) — "near zero" relative to the network
    itself; VGG16's conv1 at 0.12 against 0.48 is ordinary, 0.02 against 0.40 is not.
    ``narrow`` (0.95): outside tail and early run, a layer at or above this saturation uses
    (almost) all its channels — likely too narrow. ``wide`` (0.05): at or below, a layer uses
    almost none — likely too wide. These two are absolute: saturation near 1 or 0 means the same
    at any width. ``agree_within`` (1): the measured tail and the receptive-field border agree
    when their first layers are at most this many layers apart.
    """

    tail_ratio: float = 0.5
    min_prefix: int = 2
    min_tail: int = 2
    early_ratio: float = 0.1
    narrow: float = 0.95
    wide: float = 0.05
    agree_within: int = 1

    def __post_init__(self) -> None:
        for name in ("tail_ratio", "early_ratio", "narrow", "wide"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise UsageError(f"rule threshold {name} must be in (0, 1], got {value}")
        if self.wide >= self.narrow:
            raise UsageError(
                f"rule threshold wide ({self.wide}) must be below narrow ({self.narrow})"
            )
        for name in ("min_prefix", "min_tail"):
            if getattr(self, name) < 1:
                raise UsageError(f"rule threshold {name} must be at least 1")
        if self.agree_within < 0:
            raise UsageError("rule threshold agree_within must be 0 or more")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: The thresholds the rules use unless told otherwise.
DEFAULT_THRESHOLDS = RuleThresholds()
