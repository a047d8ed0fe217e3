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
    check_stage_layout,
    init_weights,
    register_model,
    split_evenly,
)
from satadvisor.models.knobs import KnobRoles, ReceptiveKnob


@dataclass(frozen=True)
class PlainStage:
    """``convs`` conv-BN-ReLU layers with ``channels`` outputs; the first has ``stride``."""

    convs: int
    channels: int
    stride: int


def plain_stages(
    depth: int, width: int, downsamplings: int, stages: int | None = None
) -> tuple[PlainStage, ...]:
    """``depth`` convs split evenly over ``stages`` stages (None: ``downsamplings + 1``).

    Each stage doubles the channels (capped at 8*width); the first stage runs at full
    resolution and the last ``downsamplings`` stages start with a stride-2 conv, so fewer
    downsamplings remove the earliest strides first and keep every conv's channels. Extra
    convs go to the later stages.
    """
    count = downsamplings + 1 if stages is None else stages
    first_strided = max(count - downsamplings, 1)
    counts = split_evenly(depth, count)
    return tuple(
        PlainStage(n, width * 2 ** min(i, 3), 2 if i >= first_strided else 1)
        for i, n in enumerate(counts)
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
        self.num_stages = len(stages)  # read by the recommender to keep the channel schedule
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.convs(x)), 1))


#: What the knobs do: ``depth`` convs, ``width`` channels in the first stage, every conv's
#: ``kernel_size``, and ``downsamplings`` stride-2 convs (fewer, with ``stages`` pinned, remove
#: the earliest strides and keep the channels).
PLAIN_KNOBS = KnobRoles(
    depth="depth",
    width="width",
    kernel="kernel_size",
    receptive=(
        ReceptiveKnob("kernel_size", "kernel"),
        ReceptiveKnob("downsamplings", "downsampling_count", layout="stages"),
    ),
)


@register_model(knobs=PLAIN_KNOBS)
def plain(
    depth: int = 6,
    kernel_size: int = 3,
    width: int = 16,
    downsamplings: int = 2,
    stages: int | None = None,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """Plain CNN family: ``depth`` conv-BN-ReLU layers, ``downsamplings`` of them stride 2.

    The convs are split over ``stages`` stages (None: ``downsamplings + 1``); ``width`` is the
    first stage's channel count, doubling per stage up to 8*width. The last ``downsamplings``
    stages start with a stride-2 conv, so lowering ``downsamplings`` with ``stages`` fixed
    removes the earliest strides and keeps every conv's channels. Needs
    ``downsamplings < stages <= depth`` (the first conv always runs at full resolution).
    """
    check_positive("plain", depth=depth, width=width)
    check_odd_kernel("plain", "kernel_size", kernel_size)
    check_stage_layout(
        "plain", depth=depth, downsamplings=downsamplings, stages=stages, first_unstrided=True
    )
    return PlainCNN(
        plain_stages(depth, width, downsamplings, stages),
        kernel_size=kernel_size,
        num_classes=num_classes,
        in_channels=in_channels,
    )
