"""ResNet-style networks of BasicBlocks with torchvision's layer names.

Names: ``conv1`` / ``bn1`` / ``relu`` / ``maxpool`` (the stem), ``layerS.B.conv1``,
``layerS.B.conv2`` (with ``bn1`` / ``bn2``), ``layerS.B.downsample.0`` (the 1x1 projection)
and ``fc``; ``resnet18`` has exactly torchvision's ``resnet18`` parameter names and shapes.
Modules are registered in forward order (the projection runs after the block's main path).

``depth`` counts the weighted layers on the main path (stem conv + 2 per block + fc), as in
the published names: 10 -> (1, 1, 1, 1) blocks per stage, 18 -> (2, 2, 2, 2),
26 -> (3, 3, 3, 3), 34 -> (3, 4, 6, 3). Other depths are rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from satadvisor.models._registry import (
    FamilyMember,
    check_odd_kernel,
    check_positive,
    init_weights,
    register_member,
    register_model,
)
from satadvisor.models.knobs import KnobRoles, ReceptiveKnob

#: BasicBlocks per stage for each supported depth.
RESNET_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    26: (3, 3, 3, 3),
    34: (3, 4, 6, 3),
}


#: What the knobs do: ``depth`` (one of :data:`RESNET_BLOCKS`), ``width`` channels of the stem
#: and first stage, the blocks' ``kernel_size``, the stem (``stem_kernel``, ``stem_stride``,
#: ``stem_pool``) and ``downsamplings`` stride-2 stages, tried mildest first. The presets
#: share it (they lack some of the knobs).
RESNET_KNOBS = KnobRoles(
    depth="depth",
    width="width",
    kernel="kernel_size",
    receptive=(
        ReceptiveKnob("kernel_size", "kernel"),
        ReceptiveKnob("stem_kernel", "kernel"),
        ReceptiveKnob("downsamplings", "downsampling_count"),
        ReceptiveKnob("stem_stride", "stride"),
        ReceptiveKnob("stem_pool", "switch"),
    ),
    choices={"depth": tuple(sorted(RESNET_BLOCKS))},
)


@dataclass(frozen=True)
class ResNetStage:
    """``blocks`` BasicBlocks with ``channels`` outputs; the first has stride ``stride``."""

    blocks: int
    channels: int
    stride: int


class BasicBlock(nn.Module):
    """Two k x k conv-BN pairs plus the identity (or a 1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, channels: int, *, stride: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem (conv, BN, ReLU, optional 3x3/2 max-pool), the stages, global pooling, ``fc``."""

    def __init__(
        self,
        stages: Sequence[ResNetStage],
        *,
        kernel_size: int = 3,
        stem_channels: int = 64,
        stem_kernel: int = 7,
        stem_stride: int = 2,
        stem_pool: bool = True,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, stem_channels, stem_kernel, stem_stride, stem_kernel // 2, bias=False
        )
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        # Identity keeps the module tree (and so the names) the same with and without the pool.
        self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
        channels = stem_channels
        for i, stage in enumerate(stages, start=1):
            blocks = []
            for b in range(stage.blocks):
                stride = stage.stride if b == 0 else 1
                blocks.append(
                    BasicBlock(channels, stage.channels, stride=stride, kernel_size=kernel_size)
                )
                channels = stage.channels
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.num_stages = len(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_stages(depth: int, width: int, downsamplings: int) -> tuple[ResNetStage, ...]:
    """Four stages of width, 2*width, 4*width, 8*width channels.

    The last ``downsamplings`` stages (0-3) start with stride 2; fewer downsamplings remove
    the early ones first, which is the remedy for a receptive field that grows too fast.
    """
    blocks = RESNET_BLOCKS[depth]
    first_strided = len(blocks) - downsamplings
    return tuple(
        ResNetStage(n, width * 2**i, 2 if i >= first_strided else 1) for i, n in enumerate(blocks)
    )


@register_model(knobs=RESNET_KNOBS)
def resnet(
    depth: int = 18,
    kernel_size: int = 3,
    width: int = 64,
    downsamplings: int = 3,
    stem_kernel: int = 3,
    stem_stride: int = 1,
    stem_pool: bool = False,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """ResNet family of BasicBlocks; the defaults are ResNet18 with the CIFAR stem.

    ``depth`` is 10, 18, 26 or 34; ``kernel_size`` is the block convs' kernel; ``width`` the
    stem's and first stage's channels; ``downsamplings`` the number of stride-2 stages after
    the stem (0-3). The stem is a ``stem_kernel`` conv of stride ``stem_stride`` plus a 3x3
    stride-2 max-pool when ``stem_pool`` (the ImageNet stem is 7 / 2 / True).
    """
    if depth not in RESNET_BLOCKS:
        known = ", ".join(str(d) for d in RESNET_BLOCKS)
        raise ValueError(f"resnet depth must be one of {known}, got {depth!r}")
    check_positive("resnet", width=width, stem_stride=stem_stride)
    check_odd_kernel("resnet", "kernel_size", kernel_size)
    check_odd_kernel("resnet", "stem_kernel", stem_kernel)
    if not 0 <= downsamplings <= 3:
        raise ValueError(f"resnet needs 0 <= downsamplings <= 3, got {downsamplings}")
    return ResNet(
        resnet_stages(depth, width, downsamplings),
        kernel_size=kernel_size,
        stem_channels=width,
        stem_kernel=stem_kernel,
        stem_stride=stem_stride,
        stem_pool=stem_pool,
        num_classes=num_classes,
        in_channels=in_channels,
    )


@register_model(knobs=RESNET_KNOBS)
def resnet18(
    width: int = 64, kernel_size: int = 3, *, num_classes: int = 10, in_channels: int = 3
) -> nn.Module:
    """ResNet18 (He et al. 2016) with the ImageNet stem: 7x7 stride-2 conv + 3x3/2 max-pool."""
    return resnet(
        18,
        kernel_size,
        width,
        3,
        stem_kernel=7,
        stem_stride=2,
        stem_pool=True,
        num_classes=num_classes,
        in_channels=in_channels,
    )


@register_model(knobs=RESNET_KNOBS)
def resnet18_cifar(
    width: int = 64, kernel_size: int = 3, *, num_classes: int = 10, in_channels: int = 3
) -> nn.Module:
    """ResNet18 with the CIFAR stem: a 3x3 stride-1 conv and no max-pool."""
    return resnet(
        18,
        kernel_size,
        width,
        3,
        stem_kernel=3,
        stem_stride=1,
        stem_pool=False,
        num_classes=num_classes,
        in_channels=in_channels,
    )


def _resnet_member(
    depth: int, stem: tuple[int, int, bool]
) -> Callable[[Mapping[str, Any]], FamilyMember]:
    """The ``resnet`` family's knobs for ResNet-``depth`` with the stem (kernel, stride, pool)."""

    def member(knobs: Mapping[str, Any]) -> FamilyMember:
        return FamilyMember(
            "resnet",
            {
                "depth": depth,
                "kernel_size": int(knobs.get("kernel_size", 3)),
                "width": int(knobs.get("width", 64)),
                "downsamplings": 3,
                "stem_kernel": stem[0],
                "stem_stride": stem[1],
                "stem_pool": stem[2],
            },
        )

    return member


register_member("resnet18", _resnet_member(18, (7, 2, True)))
register_member("resnet18_cifar", _resnet_member(18, (3, 1, False)))
for _depth in (18, 34):  # torchvision's BasicBlock ResNets, ImageNet stem
    register_member(f"torchvision:resnet{_depth}", _resnet_member(_depth, (7, 2, True)))
