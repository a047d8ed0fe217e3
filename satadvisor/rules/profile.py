"""Reading a saturation profile: the feature layers, the trailing tail and the early run.

A difference counts only beyond :data:`~satadvisor.rules.thresholds.Z` standard errors.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from satadvisor.receptive import ReceptiveFieldAnalysis
from satadvisor.rules.labels import is_conv
from satadvisor.rules.thresholds import DEFAULT_THRESHOLDS, RuleThresholds, Z
from satadvisor.saturation._result import LayerSaturation


def feature_layers(
    profile: Sequence[LayerSaturation], rf: ReceptiveFieldAnalysis | None = None
) -> list[LayerSaturation]:
    """The feature extractor: the conv layers, or for an MLP every layer but the output layer.

    A model with attention (``rf.attention``, e.g. a ViT whose only conv is the patch
    embedding) does its work in Linear blocks: every layer but the output layer, as for an MLP.
    """
    if rf is not None and rf.attention:
        return list(profile[:-1])
    convs = [layer for layer in profile if is_conv(layer.module_type)]
    if convs:
        return convs
    # Without convs the last Linear produces the logits: its width is the number of classes,
    # not a design choice, so it is neither tail nor capacity evidence.
    return list(profile[:-1])


def standard_errors(layers: Sequence[LayerSaturation]) -> list[float]:
    """Each layer's standard error (0.0 where none was measured)."""
    return [layer.saturation_se or 0.0 for layer in layers]


def margin(*errors: float) -> float:
    """:data:`Z` standard errors of a difference of independent values."""
    return Z * math.sqrt(sum(e * e for e in errors))


def tail_start(
    values: Sequence[float], th: RuleThresholds, errors: Sequence[float] | None = None
) -> int | None:
    """Index of the first layer of the longest trailing tail (see RuleThresholds.tail_ratio).

    With ``errors`` (standard errors of ``values``), the first layer and the mean of the run
    must lie below ``tail_ratio`` × the reference median by more than :data:`Z` standard
    errors of that difference (the median's taken as its middle layer's).
    """
    err = list(errors) if errors is not None else [0.0] * len(values)
    for start in range(th.min_prefix, len(values) - th.min_tail + 1):
        reference = statistics.median(values[:start])
        ref_err = th.tail_ratio * statistics.median(err[:start])
        run, run_err = values[start:], err[start:]
        limit = th.tail_ratio * reference
        mean_err = math.sqrt(sum(e * e for e in run_err)) / len(run)
        if (
            reference > 0
            and run[0] + margin(run_err[0], ref_err) < limit
            and statistics.fmean(run) + margin(mean_err, ref_err) < limit
            and max(run) < reference
        ):
            return start  # the smallest start gives the longest tail
    return None


def early_end(
    values: Sequence[float], stop: int, th: RuleThresholds, errors: Sequence[float] | None = None
) -> int:
    """Length of the longest leading run below early_ratio × the median of values[end:stop]
    (by more than :data:`Z` standard errors, given ``errors``)."""
    err = list(errors) if errors is not None else [0.0] * len(values)
    best = 0
    for end in range(1, stop - th.min_prefix + 1):
        reference = statistics.median(values[end:stop])
        ref_err = th.early_ratio * statistics.median(err[end:stop])
        top = max(range(end), key=lambda i: values[i])
        if reference > 0 and values[top] + margin(err[top], ref_err) < th.early_ratio * reference:
            best = end
    return best


def tail_layers(
    profile: Sequence[LayerSaturation],
    *,
    thresholds: RuleThresholds = DEFAULT_THRESHOLDS,
    rf: ReceptiveFieldAnalysis | None = None,
) -> list[str]:
    """Qualified names of the measured tail (conv layers only when the net has convs and no
    attention, see ``rf``), or []."""
    layers = feature_layers(profile, rf)
    start = tail_start([layer.saturation for layer in layers], thresholds, standard_errors(layers))
    return [] if start is None else [layer.name for layer in layers[start:]]


def pattern(
    profile: Sequence[LayerSaturation],
    *,
    thresholds: RuleThresholds = DEFAULT_THRESHOLDS,
    rf: ReceptiveFieldAnalysis | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The shape the rules read in a profile: (tail layers, under-used early layers).

    Two epochs whose patterns are equal tell the same story; :func:`satadvisor.trust.settling`
    compares them to decide whether a profile settled. ``rf`` (optional) says whether the model
    has attention, whose Linear blocks then count as feature layers.
    """
    layers = feature_layers(profile, rf)
    values, errors = [layer.saturation for layer in layers], standard_errors(layers)
    start = tail_start(values, thresholds, errors)
    stop = len(values) if start is None else start
    end = early_end(values, stop, thresholds, errors) if values else 0
    tail = () if start is None else tuple(layer.name for layer in layers[start:])
    return tail, tuple(layer.name for layer in layers[:end])
