"""A plain CNN: a stack of conv-BN-ReLU layers, global average pooling, one Linear.

Downsampling is done by stride-2 convs (no pooling layers), so every layer that changes the
receptive field is a conv the advisor measures. Names: ``convs.conv1`` ... ``convs.convN``
(with ``convs.bnI`` / ``convs.reluI``), ``avgpool``, ``fc``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from satadvisor.models._registry import (
    check_odd_kernel,
    check_positive,
    init_weights,
    register_model,
    split_evenly,
)


@dataclass(frozen=True)
class PlainStage:
    """``convs`` conv-BN-ReLU layers with ``channels`` outputs; the first has ``stride``."""

    convs: int
    channels: int
    stride: int


def plain_stages(depth: int, width: int, downsamplings: int) -> tuple[PlainStage, ...]:
    """``depth`` convs split evenly over ``downsamplings + 1`` stages.

    The first stage runs at full resolution; each later stage starts with a stride-2 conv and
    doubles the channels (capped at 8*width). Extra convs go to the later stages.
    """
    counts = split_evenly(depth, downsamplings + 1)
    return tuple(
        PlainStage(n, width * 2 ** min(i, 3), 1 if i == 0 else 2) for i, n in enumerate(counts)
    )


class PlainCNN(nn.Module):
    """The plain network built from ``stages``."""

    def __init__(
        self,
        stages: tuple[PlainStage, ...],
        *,
        kernel_size: int = 3,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, index = in_channels, 0
        for stage in stages:
            for c in range(stage.convs):
                index += 1
                stride = stage.stride if c == 0 else 1
                layers[f"conv{index}"] = nn.Conv2d(
                    channels, stage.channels, kernel_size, stride, kernel_size // 2, bias=False
                )
                layers[f"bn{index}"] = nn.BatchNorm2d(stage.channels)
                layers[f"relu{index}"] = nn.ReLU(inplace=True)
                channels = stage.channels
        self.convs = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.convs(x)), 1))


@register_model
def plain(
    depth: int = 6,
    kernel_size: int = 3,
    width: int = 16,
    downsamplings: int = 2,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """Plain CNN family: ``depth`` conv-BN-ReLU layers, ``downsamplings`` of them stride 2.

    ``width`` is the first stage's channel count, doubling per downsampling up to 8*width.
    Needs ``downsamplings < depth`` (the first conv always runs at full resolution).
    """
    check_positive("plain", depth=depth, width=width)
    check_odd_kernel("plain", "kernel_size", kernel_size)
    if downsamplings < 0 or downsamplings >= depth:
        raise ValueError(
            f"plain needs 0 <= downsamplings < depth, got downsamplings={downsamplings} "
            f"with depth={depth}"
        )
    return PlainCNN(
        plain_stages(depth, width, downsamplings),
        kernel_size=kernel_size,
        num_classes=num_classes,
        in_channels=in_channels,
    )
