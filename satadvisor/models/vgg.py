"""VGG-style networks: stages of "same"-padded convs, each stage ended by a 2x2 max-pool.

Layer names are stable and readable, so reports can say "conv8-conv13":
``features.conv1`` ... ``features.convN`` (with ``features.bnI`` / ``features.reluI`` after
each conv and ``features.poolS`` after stage S), then ``avgpool`` (global average pooling) and
the ``classifier``. In the family, stages may outnumber the pools: the pools then end the
last stages (``pool2`` ... ``pool5`` when VGG16's first pool is removed), and the channel
schedule stays the stages'.

- ``vgg`` (the family) ends in global average pooling + one ``Linear`` (``classifier``), so
  it stays small and works at any input resolution.
- ``vgg11`` / ``vgg13`` / ``vgg16`` / ``vgg19`` are the published configurations A / B / D / E
  (Simonyan & Zisserman 2015) with batch norm and five max-pools, and the CIFAR head used in
  the saturation papers (Richter et al. 2021): global average pooling, then
  ``classifier.fc1`` (8*width -> 4*width) and ``classifier.fc2``, each preceded by
  BatchNorm1d + Dropout(0.25). The BatchNorm1d layers need batches of at least 2 in training.

The pools use ``ceil_mode=True``: identical to the floor mode on even sizes (32 -> 1 and
224 -> 7 px through five pools), and a 1x1 map stays 1x1 instead of vanishing, so deep
configurations do not crash at small resolutions (their tail layers then read a 1x1 map,
which is exactly what the receptive-field analysis flags).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from satadvisor.models._registry import (
    FamilyMember,
    check_odd_kernel,
    check_positive,
    check_stage_layout,
    init_weights,
    register_member,
    register_model,
    split_evenly,
)
from satadvisor.models.knobs import KnobRoles, ReceptiveKnob

Head = Literal["linear", "mlp"]

#: What the knobs do: ``depth`` convs, ``width`` channels in the first stage, every conv's
#: ``kernel_size``, and ``downsamplings`` pools (fewer, with ``stages`` pinned, remove the
#: earliest pools and keep the channels). The presets share it (they lack some of the knobs).
VGG_KNOBS = KnobRoles(
    depth="depth",
    width="width",
    kernel="kernel_size",
    receptive=(
        ReceptiveKnob("kernel_size", "kernel"),
        ReceptiveKnob("downsamplings", "downsampling_count", layout="stages"),
    ),
)

#: Convs per stage of the published configurations (A, B, D, E); a pool ends every stage.
VGG_CONFIGS: dict[str, tuple[int, ...]] = {
    "vgg11": (1, 1, 2, 2, 2),
    "vgg13": (2, 2, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}


@dataclass(frozen=True)
class VGGStage:
    """``convs`` convolutions with ``channels`` outputs, then a 2x2 max-pool when ``pool``."""

    convs: int
    channels: int
    pool: bool = True


def stage_channels(width: int, index: int) -> int:
    """Channels of stage ``index`` (0-based): width doubles per stage, capped at 8*width."""
    return width * 2 ** min(index, 3)


def vgg_stages(
    depth: int, width: int, downsamplings: int, stages: int | None = None
) -> tuple[VGGStage, ...]:
    """The family's stage layout: ``depth`` convs split evenly over ``stages`` stages.

    ``stages`` (None: one per downsampling, at least one) fixes the channel schedule; the
    ``downsamplings`` pools end the *last* stages, so fewer downsamplings remove the earliest
    pools first (slower receptive-field growth in the early layers) and keep every conv's
    channels. Extra convs go to the later stages, so depth 13 with 5 downsamplings is exactly
    VGG16's D; ``downsamplings=0`` without ``stages`` gives one stage without a pool.
    """
    count = max(downsamplings if stages is None else stages, 1)
    first_pool = count - downsamplings
    return tuple(
        VGGStage(n, stage_channels(width, i), pool=i >= first_pool)
        for i, n in enumerate(split_evenly(depth, count))
    )


def preset_stages(name: str, width: int) -> tuple[VGGStage, ...]:
    """Stages of a published configuration (``vgg11`` ... ``vgg19``) at base width ``width``."""
    return tuple(
        VGGStage(n, stage_channels(width, i), pool=True) for i, n in enumerate(VGG_CONFIGS[name])
    )


class VGG(nn.Module):
    """A VGG network built from ``stages``; see the module docstring for names and heads."""

    def __init__(
        self,
        stages: tuple[VGGStage, ...],
        *,
        kernel_size: int = 3,
        batch_norm: bool = True,
        head: Head = "linear",
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, conv = in_channels, 0
        for s, stage in enumerate(stages, start=1):
            for _ in range(stage.convs):
                conv += 1
                layers[f"conv{conv}"] = nn.Conv2d(
                    channels, stage.channels, kernel_size, padding=kernel_size // 2
                )
                if batch_norm:
                    layers[f"bn{conv}"] = nn.BatchNorm2d(stage.channels)
                layers[f"relu{conv}"] = nn.ReLU(inplace=True)
                channels = stage.channels
            if stage.pool:
                layers[f"pool{s}"] = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.features = nn.Sequential(layers)
        self.num_stages = len(stages)  # read by the recommender to keep the channel schedule
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier: nn.Module
        if head == "linear":
            self.classifier = nn.Linear(channels, num_classes)
        else:
            hidden = channels // 2
            self.classifier = nn.Sequential(
                OrderedDict(
                    norm1=nn.BatchNorm1d(channels),
                    drop1=nn.Dropout(0.25),
                    fc1=nn.Linear(channels, hidden),
                    relu1=nn.ReLU(inplace=True),
                    norm2=nn.BatchNorm1d(hidden),
                    drop2=nn.Dropout(0.25),
                    fc2=nn.Linear(hidden, num_classes),
                )
            )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model(knobs=VGG_KNOBS)
def vgg(
    depth: int = 8,
    kernel_size: int = 3,
    width: int = 16,
    downsamplings: int = 3,
    batch_norm: bool = True,
    stages: int | None = None,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """VGG-style family: ``depth`` convs (kernel ``kernel_size``) over ``downsamplings`` pools.

    The convs are split over ``stages`` stages (None: one per downsampling); ``width`` is the
    first stage's channel count, doubling per stage up to 8*width. The pools end the last
    ``downsamplings`` stages, so lowering ``downsamplings`` with ``stages`` fixed removes the
    earliest pools and keeps every conv's channels (``depth=13, downsamplings=4, stages=5`` is
    VGG16's conv stack without its first pool). The head is global average pooling + one
    Linear. Needs ``downsamplings <= stages <= depth`` (every stage holds a conv). The
    defaults (8 convs, 3 pools, width 16) are the embedded default model: at 16 px its last
    three convs read inputs wider than the image (a tail).
    """
    check_positive("vgg", depth=depth, width=width)
    check_odd_kernel("vgg", "kernel_size", kernel_size)
    check_stage_layout(
        "vgg", depth=depth, downsamplings=downsamplings, stages=stages, first_unstrided=False
    )
    return VGG(
        vgg_stages(depth, width, downsamplings, stages),
        kernel_size=kernel_size,
        batch_norm=batch_norm,
        head="linear",
        num_classes=num_classes,
        in_channels=in_channels,
    )


def _preset(
    name: str, width: int, kernel_size: int, batch_norm: bool, num_classes: int, in_channels: int
) -> nn.Module:
    check_positive(name, width=width)
    check_odd_kernel(name, "kernel_size", kernel_size)
    return VGG(
        preset_stages(name, width),
        kernel_size=kernel_size,
        batch_norm=batch_norm,
        head="mlp",
        num_classes=num_classes,
        in_channels=in_channels,
    )


@register_model(knobs=VGG_KNOBS)
def vgg11(
    width: int = 64,
    kernel_size: int = 3,
    batch_norm: bool = True,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """VGG11 (configuration A: 8 convs, 5 pools) with batch norm and the CIFAR head."""
    return _preset("vgg11", width, kernel_size, batch_norm, num_classes, in_channels)


@register_model(knobs=VGG_KNOBS)
def vgg13(
    width: int = 64,
    kernel_size: int = 3,
    batch_norm: bool = True,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """VGG13 (configuration B: 10 convs, 5 pools) with batch norm and the CIFAR head."""
    return _preset("vgg13", width, kernel_size, batch_norm, num_classes, in_channels)


@register_model(knobs=VGG_KNOBS)
def vgg16(
    width: int = 64,
    kernel_size: int = 3,
    batch_norm: bool = True,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """VGG16 (configuration D: 13 convs, 5 pools) with batch norm and the CIFAR head."""
    return _preset("vgg16", width, kernel_size, batch_norm, num_classes, in_channels)


@register_model(knobs=VGG_KNOBS)
def vgg19(
    width: int = 64,
    kernel_size: int = 3,
    batch_norm: bool = True,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
) -> nn.Module:
    """VGG19 (configuration E: 16 convs, 5 pools) with batch norm and the CIFAR head."""
    return _preset("vgg19", width, kernel_size, batch_norm, num_classes, in_channels)


def _vgg_member(name: str, *, library: bool = False) -> Callable[[Mapping[str, Any]], FamilyMember]:
    """The ``vgg`` family's knobs for a published configuration (its convs over 5 stages of
    5 pools, channels doubling from ``width``)."""
    convs = VGG_CONFIGS[name.removesuffix("_bn")]
    notes = []
    if split_evenly(sum(convs), 5) != convs:
        spread = "-".join(str(n) for n in split_evenly(sum(convs), 5))
        notes.append(f"its convs per stage are {spread} instead of {'-'.join(map(str, convs))}")
    if library:
        notes.append("its head is global average pooling and one Linear layer instead of a 7×7 "
                     "pool and a 4096-wide MLP")  # fmt: skip
    else:
        notes.append("its head is one Linear layer instead of the two-layer MLP")

    def member(knobs: Mapping[str, Any]) -> FamilyMember:
        return FamilyMember(
            "vgg",
            {
                "depth": sum(convs),
                "kernel_size": int(knobs.get("kernel_size", 3)),
                "width": int(knobs.get("width", 64)),
                "downsamplings": 5,
                "batch_norm": bool(knobs.get("batch_norm", name.endswith("_bn") or not library)),
                "stages": 5,
            },
            "; ".join(notes),
        )

    return member


for _name in VGG_CONFIGS:
    register_member(_name, _vgg_member(_name))
    for _variant in (_name, f"{_name}_bn"):
        register_member(f"torchvision:{_variant}", _vgg_member(_variant, library=True))
