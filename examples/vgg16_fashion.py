"""VGG16-style model file for Fashion-MNIST (28x28 grey images, resized to 32x32).

Run it with::

    satadvisor analyze examples/vgg16_fashion.py --data-dir ~/data --download
    satadvisor optimize examples/vgg16_fashion.py --budget 30 --data-dir ~/data

It reuses satadvisor's built-in VGG family: five 2x2 max-pools, and ``depth`` convs split
over the five stages with the extra ones in the later stages, so depth 8, 10 and 13 are the
conv stacks of VGG11, VGG13 and VGG16. At 32 px VGG16's receptive field outgrows the image
from conv8 on: expect the advisor to report conv8-conv13 as an unproductive tail.
"""

from __future__ import annotations

from torch import nn

from satadvisor.models import create_model


def build_model(
    depth: int = 13,
    kernel_size: int = 3,
    width: int = 64,
    *,
    num_classes: int,
    in_channels: int,
) -> nn.Module:
    """VGG-style network: ``depth`` convs with batch norm, channels width, 2*width, ... 8*width.

    The head is global average pooling + one Linear layer (``classifier``).
    """
    return create_model(
        "vgg",
        depth=depth,
        kernel_size=kernel_size,
        width=width,
        downsamplings=5,
        batch_norm=True,
        num_classes=num_classes,
        in_channels=in_channels,
    )


# depth 8 / 10 / 13 = the conv stacks of VGG11 / VGG13 / VGG16.
SEARCH_SPACE = {
    "depth": [8, 10, 13],
    "kernel_size": [3, 5],
    "width": [32, 64],
    "resolution": [32, 48, 64],
}

DATASET = "fashion-mnist"
RESOLUTION = 32
