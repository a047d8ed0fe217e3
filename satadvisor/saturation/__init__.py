"""Layer saturation: streaming covariance of layer outputs and the share of eigen-directions used.

``SaturationTracker`` observes a model through forward hooks; ``functional`` holds the pure
maths (streaming ``(n, mean, M2)`` states, reductions, k rules) it is built from.
"""

from satadvisor.saturation import functional
from satadvisor.saturation._result import LayerSaturation
from satadvisor.saturation._tracker import (
    GROUPS,
    MIN_ROWS,
    ROWS_PER_FEATURE,
    STATED_ERROR,
    SaturationTracker,
    auto_rows,
    sample_size,
)

__all__ = [
    "GROUPS",
    "MIN_ROWS",
    "ROWS_PER_FEATURE",
    "STATED_ERROR",
    "LayerSaturation",
    "SaturationTracker",
    "auto_rows",
    "functional",
    "sample_size",
]
