"""Layer saturation: streaming covariance of layer outputs and the share of eigen-directions used.

``SaturationTracker`` observes a model through forward hooks; ``functional`` holds the pure
maths (streaming ``(n, mean, M2)`` states, reductions, k rules) it is built from.
"""

from satadvisor.saturation import functional
from satadvisor.saturation._result import LayerSaturation
from satadvisor.saturation._tracker import SaturationTracker, auto_rows

__all__ = ["LayerSaturation", "SaturationTracker", "auto_rows", "functional"]
