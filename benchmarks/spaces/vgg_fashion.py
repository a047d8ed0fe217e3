"""VGG-style space on Fashion-MNIST where the architecture can mismatch the data (issue 12).

The built-in ``vgg`` family (:mod:`satadvisor.models.vgg`) with the channel schedule of VGG16
kept at every depth: the convs are split evenly over five stages (four below five convs), the
widths are ``width`` × 1, 2, 4, 8, 8, and ``downsamplings`` 2x2 max-pools end the *last*
stages, so fewer downsamplings remove the earliest pools (slower receptive-field growth, the
same parameters). The default is VGG16's conv stack (13 convs, 5 pools, 3x3 kernels) at a
small width on 28-pixel Fashion-MNIST: its last stage reads 2x2 and 1x1 maps, the mismatch
the saturation analysis and the receptive-field prior are meant to find.

Depth 4 has four stages, so at most four pools: ``downsamplings=5`` builds the same network
as ``downsamplings=4`` there (the only alias in the 960 configurations).
"""

from __future__ import annotations

from torch import nn

from satadvisor.models import create_model

#: VGG16 has five stages; fewer only when there are fewer convs than that.
STAGES = 5

SEARCH_SPACE = {
    "depth": list(range(4, 14)),
    "downsamplings": [2, 3, 4, 5],
    "kernel_size": [3, 5, 7],
    "width": [4, 8, 12, 16],
    "resolution": [28, 32],
}
DATASET = "fashion-mnist"
RESOLUTION = 28


def build_model(
    depth: int = 13,
    downsamplings: int = 5,
    kernel_size: int = 3,
    width: int = 8,
    *,
    num_classes: int = 10,
    in_channels: int = 1,
) -> nn.Module:
    """VGG16-like conv stack: ``depth`` convs over min(5, depth) stages, the last
    ``downsamplings`` of them ending in a max-pool (clamped to the stages)."""
    stages = min(STAGES, depth)
    return create_model(
        "vgg",
        depth=depth,
        downsamplings=min(downsamplings, stages),
        kernel_size=kernel_size,
        width=width,
        stages=stages,
        num_classes=num_classes,
        in_channels=in_channels,
    )
