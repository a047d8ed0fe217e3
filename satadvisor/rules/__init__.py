"""Rules: a saturation profile plus a receptive-field analysis -> Findings -> Recommendations.

:func:`evaluate` reads the per-layer saturation of one run (and/or the training-free
receptive-field analysis of the same model) and names what it sees as :class:`Finding` objects:

- ``tail`` — the longest run of layers at the end of the feature extractor whose saturation falls
  well below the median of the layers before it (Richter et al., BMVC 2021: VGG16 on CIFAR-10 at
  32 px, conv8–conv13). The decision is relative, so it does not change when the whole profile is
  scaled (ResNet18 at 224 px sits at 0.06–0.46 everywhere and has no tail). Reported with the
  receptive-field border layer and whether the two agree. Without a measured profile, the
  receptive field's unproductive layers give a *predicted* tail.
- ``early_underuse`` — a leading run of near-zero saturation: the input is larger than the
  network can use (Richter et al., ICANN 2021).
- ``too_narrow`` / ``too_wide`` — layers outside tail and early run saturated near 1 / near 0.
- ``even`` — none of the above: "no change needed" is a verdict too.

Every saturation carries a standard error (``LayerSaturation.saturation_se``, from the spread
between batch groups). A rule calls a difference only when it exceeds :data:`Z` standard errors
of the values it compares: a tail only when its layers lie below ``tail_ratio`` × the median
before them by more than that, a layer too narrow / too wide only when it lies beyond the limit
by more than that. A value without a standard error counts as exact.

:func:`recommend` turns findings into concrete knob changes with their measured cost, reading
what each knob does from the model family's declaration (:class:`satadvisor.models.KnobRoles`);
:func:`verdict` sums both up in one or two sentences.

The package: :mod:`.records` (the typed records), :mod:`.thresholds`, :mod:`.labels` (layer
labels), :mod:`.profile` (reading a saturation profile), :mod:`.border` (the receptive-field
side), :mod:`.findings` (:func:`evaluate`), :mod:`.workbench` (building and measuring
candidates), :mod:`.moves` (the knob changes), :mod:`.recommend` and :mod:`.verdict`.
"""

from __future__ import annotations

from satadvisor.rules.findings import evaluate
from satadvisor.rules.labels import is_conv, names_label, short_names, span_label
from satadvisor.rules.profile import pattern, tail_layers
from satadvisor.rules.recommend import layer_labels, recommend
from satadvisor.rules.records import (
    Cost,
    Finding,
    FindingKind,
    Recommendation,
    RecommendationKind,
)
from satadvisor.rules.thresholds import RuleThresholds, Z
from satadvisor.rules.verdict import verdict
from satadvisor.rules.workbench import SpecLike

__all__ = [
    "Cost",
    "Finding",
    "FindingKind",
    "Recommendation",
    "RecommendationKind",
    "RuleThresholds",
    "SpecLike",
    "Z",
    "evaluate",
    "is_conv",
    "layer_labels",
    "names_label",
    "pattern",
    "recommend",
    "short_names",
    "span_label",
    "tail_layers",
    "verdict",
]
