"""A tiny model file (a few hundred parameters) shared by the search, CLI and reliability tests."""

import textwrap

TINY_MODEL_SOURCE = textwrap.dedent(
    """
    import torch.nn as nn

    SEARCH_SPACE = {"depth": [1, 2, 3], "width": [4, 8], "resolution": [8, 12]}
    DATASET = "digits"
    RESOLUTION = 8

    def build_model(depth=2, width=4, kernel_size=3, *, num_classes, in_channels):
        layers, c = [], in_channels
        for i in range(depth):
            layers += [nn.Conv2d(c, width, kernel_size, padding=kernel_size // 2),
                       nn.BatchNorm2d(width), nn.ReLU()]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            c = width
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(c, num_classes))
    """
)
