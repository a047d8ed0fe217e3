"""Quick-start model file: a small plain CNN for scikit-learn's 8x8 digits.

Run it with::

    satadvisor analyze examples/digits_cnn.py           # profile the default architecture
    satadvisor analyze examples/digits_cnn.py --set depth=4 --set kernel_size=5
    satadvisor optimize examples/digits_cnn.py --budget 20

satadvisor calls ``build_model`` with the knob values it wants to try. Every keyword
parameter with a default (``depth``, ``kernel_size``, ``width``) is such a knob;
``num_classes`` and ``in_channels`` are filled in from the dataset.
"""

from __future__ import annotations

from torch import nn


def build_model(
    depth: int = 6,
    kernel_size: int = 3,
    width: int = 32,
    *,
    num_classes: int,
    in_channels: int,
) -> nn.Module:
    """``depth`` conv-BN-ReLU layers of ``kernel_size`` x ``kernel_size``, ``width`` channels.

    A 2x2 max-pool follows every second conv, so each pair of convs sees a twice coarser map.
    With the defaults at 16 px the receptive field reaches the image size at conv5: conv6
    only ever sees inputs wider than the image, and the advisor will say so.
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for i in range(1, depth + 1):
        layers += [
            # "same" padding keeps the map size; only the pools shrink it.
            nn.Conv2d(channels, width, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
        if i % 2 == 0 and i < depth:
            # ceil_mode keeps a 1x1 map at 1x1, so deep variants still run at 8 px.
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


# What `satadvisor optimize` may try. Every key is a knob of build_model, or `resolution`
# (the input size in pixels, handled by satadvisor). Leave it out to let satadvisor choose.
SEARCH_SPACE = {
    "depth": [2, 3, 4, 5, 6, 8],
    "kernel_size": [3, 5],
    "resolution": [8, 12, 16, 24],
}

# Defaults for the command line (--dataset and --resolution override them).
DATASET = "digits"  # scikit-learn's bundled digits: no download needed
RESOLUTION = 16  # the 8x8 digits are resized to 16x16
