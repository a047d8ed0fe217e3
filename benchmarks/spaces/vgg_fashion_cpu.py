"""The space of :mod:`vgg_fashion` at CPU scale: widths 2, 4 and 6 instead of 4 to 16.

Everything else is the same (depth 4-13, 2-5 downsamplings, kernels 3-7, 28 or 32 px). A
trial of the full space costs about 16 ms per training image on one thread of the 2-core CPU
(163 M MACs on average); these widths cut that about 7-fold, so 3 strategies x 10 seeds fit
in about an hour there. The GPU run uses ``vgg_fashion.py``.
"""

from __future__ import annotations

from vgg_fashion import DATASET, RESOLUTION, build_model

SEARCH_SPACE = {
    "depth": list(range(4, 14)),
    "downsamplings": [2, 3, 4, 5],
    "kernel_size": [3, 5, 7],
    "width": [2, 4, 6],
    "resolution": [28, 32],
}

__all__ = ["DATASET", "RESOLUTION", "SEARCH_SPACE", "build_model"]
