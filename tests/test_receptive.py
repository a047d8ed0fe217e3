"""Receptive-field analysis against hand-computed, published and brute-force references.

Hand values follow r_l = r_{l-1} + (k_l - 1)·j_{l-1}, j_l = j_{l-1}·s_l (Richter et al., ICMLA
2021); the brute-force reference measures the extent of the input gradient of one output pixel
of an all-ones network (no bias, no normalisation, no activation, no padding), which is the
receptive field of the longest path.
"""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from satadvisor.errors import UnsupportedModelError, UsageError
from satadvisor.receptive import (
    LayerReceptiveField,
    ReceptiveFieldAnalysis,
    analyze,
    smallest_productive_resolution,
)

# Simonyan & Zisserman's configurations; widths are divided by 8 because receptive fields do
# not depend on the number of channels and narrow models build faster.
BLOCK_E: list[int | str] = [512, 512, 512, 512, "M"]
VGG_CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", *BLOCK_E, *BLOCK_E],
}


def vgg(cfg: str, num_classes: int = 10) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG_CFGS[cfg]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            width = int(v) // 8
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def conv_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def cifar_resnet18() -> torchvision.models.ResNet:
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def brute_force_extent(model: nn.Module, size: int) -> tuple[int, int]:
    """(rows, cols) of input pixels that reach the centre output pixel of an all-ones net."""
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    y = model(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    assert x.grad is not None
    hit = x.grad[0, 0].abs() > 0
    rows = torch.nonzero(hit.any(dim=1)).flatten()
    cols = torch.nonzero(hit.any(dim=0)).flatten()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


# ------------------------------------------------------------------------------- VGG


def test_vgg16_at_32px_is_unproductive_exactly_from_conv8() -> None:
    model = vgg("D")
    names = conv_names(model)
    result = analyze(model, 32)
    assert result.supported and result.reason is None
    assert result.unproductive == names[7:13]
    assert result.border_layer == names[7]
    assert result.critical == [names[6]]
    conv7 = result.by_name()[names[6]]
    assert conv7.input_r_min == 32 and not conv7.unproductive and conv7.critical
    layers = result.by_name()
    assert [layers[n].r_min for n in names] == [3, 5, 10, 14, 24, 32, 40, 60, 76, 92, 132, 164, 196]
    assert [layers[n].jump for n in names] == [1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16]
    assert all(layers[n].r_max == layers[n].r_min for n in names)  # a chain has one path
    assert [layers[n].input_size for n in names] == [32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2]
    assert result.feasible_range == (164, 196)  # conv13 reads 164; conv13 sees 196
    assert result.extra["lower_bound_layer"] == names[12]


def test_vgg16_linear_layer_has_no_receptive_field_and_is_never_flagged() -> None:
    result = analyze(vgg("D"), 32)
    linear = result.layers[-1]
    assert linear.module_type == "Linear"
    assert (linear.r_min, linear.r_max, linear.jump, linear.input_r_min) == (None,) * 4
    assert not linear.unproductive and not linear.critical
    assert [layer.module_type for layer in result.layers] == ["Conv2d"] * 13 + ["Linear"]


def test_input_exactly_at_the_resolution_is_critical_not_unproductive() -> None:
    # conv8 of VGG16 reads r_min = 44: strictly larger inputs flag it, 44 itself does not.
    names = conv_names(vgg("D"))
    at_43 = analyze(vgg("D"), 43).by_name()
    at_44 = analyze(vgg("D"), 44).by_name()
    assert at_43[names[7]].input_r_min == 44 and at_43[names[7]].unproductive
    assert not at_44[names[7]].unproductive and at_44[names[7]].critical
    assert at_44[names[8]].unproductive  # conv9 reads 60 > 44


def test_smallest_productive_resolution_rises_with_vgg_depth() -> None:
    # Hand values: the input r_min of each configuration's last conv (A: 102, B: 108, D: 164,
    # E: 220); at those sizes the last block still reads maps larger than 3×3.
    got = {cfg: smallest_productive_resolution(vgg(cfg)) for cfg in "ABDE"}
    assert got == {"A": 102, "B": 108, "D": 164, "E": 220}
    assert analyze(vgg("D"), 164).unproductive == []
    assert analyze(vgg("D"), 163).unproductive == [conv_names(vgg("D"))[12]]


def test_smallest_productive_resolution_candidates_and_limits() -> None:
    model = vgg("A")
    assert smallest_productive_resolution(model, candidates=[32, 64, 96, 128, 256]) == 128
    assert smallest_productive_resolution(model, max_resolution=101) is None
    assert smallest_productive_resolution(model, candidates=[200, 101], max_resolution=150) is None
    with pytest.raises(UsageError):
        smallest_productive_resolution(model, candidates=[0, 32])
    with pytest.raises(UsageError):
        smallest_productive_resolution(model, max_resolution=0)


def test_size_rule_flags_kernels_that_cover_the_whole_map() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1))
    at_3 = analyze(model, 3).by_name()
    assert at_3["0"].unproductive and at_3["0"].input_r_min == 1  # 3 <= 3: size rule only
    assert not at_3["1"].unproductive  # a 1×1 kernel is never flagged by the size rule
    assert not analyze(model, 4).by_name()["0"].unproductive


# ---------------------------------------------------------------------------- ResNet


def test_cifar_resnet18_has_no_unproductive_layers_at_32px() -> None:
    result = analyze(cifar_resnet18(), 32)
    assert result.supported
    assert result.unproductive == []
    assert len(result.layers) == 21  # 20 convs (3 downsample) + fc
    assert result.by_name()["layer4.1.conv2"].input_size == 4


def test_imagenet_resnet18_at_32px_flags_layer3_and_layer4_only() -> None:
    result = analyze(torchvision.models.resnet18(), 32)
    assert result.supported
    flagged = set(result.unproductive)
    # Identity paths keep r_min small (11 px after the stem), so the r_min rule never fires;
    # the size rule flags every 3×3 conv that reads a 2×2 or 1×1 map.
    assert flagged == {
        "layer3.0.conv2",
        "layer3.1.conv1",
        "layer3.1.conv2",
        "layer4.0.conv1",
        "layer4.0.conv2",
        "layer4.1.conv1",
        "layer4.1.conv2",
    }
    layers = result.by_name()
    assert layers["layer4.0.downsample.0"].input_r_min == 11
    assert not layers["layer4.0.downsample.0"].unproductive
    # stem: 7×7/2 -> r 7, maxpool 3/2 -> r 11, j 4; the second block reads min(27, 11).
    assert (layers["conv1"].r_min, layers["conv1"].jump) == (7, 2)
    assert (layers["layer1.1.conv1"].r_min, layers["layer1.1.conv1"].r_max) == (19, 35)
    assert layers["layer3.0.conv1"].input_size == 4 and not layers["layer3.0.conv1"].unproductive


def test_imagenet_resnet18_needs_97px_for_a_4x4_map_in_layer4() -> None:
    # 97 px: 49 (conv1) -> 25 (maxpool) -> 13 -> 7 -> 4 > 3; 96 px ends at 3×3 (size rule).
    model = torchvision.models.resnet18()
    assert smallest_productive_resolution(model) == 97
    assert analyze(model, 96).unproductive == [
        "layer4.0.conv2",
        "layer4.1.conv1",
        "layer4.1.conv2",
    ]


# ------------------------------------------------------------- graph constructs


class DenseBlock(nn.Module):
    """DenseNet-style: every conv reads the concatenation of all earlier maps."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.b = nn.Conv2d(2, 1, 3, padding=1, bias=False)
        self.c = nn.Conv2d(3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        b = self.b(torch.cat([x, a], dim=1))
        return self.c(torch.cat([x, a, b], dim=1))


def test_concatenation_takes_min_and_max_over_inputs() -> None:
    result = analyze(DenseBlock(), 4, in_channels=1)
    layers = result.by_name()
    assert (layers["b"].input_r_min, layers["b"].r_min, layers["b"].r_max) == (1, 3, 5)
    assert (layers["c"].input_r_min, layers["c"].r_min, layers["c"].r_max) == (1, 1, 5)
    # A chain of the same convs would read r = 5 > 4 at c; the concatenation keeps x visible.
    assert result.unproductive == []
    assert brute_force_extent(DenseBlock(), 21) == (5, 5)  # r_max is the longest path


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.c3 = nn.Conv2d(1, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(self.c2(self.c1(x)) + x)


def test_residual_addition_takes_the_identity_path_for_r_min() -> None:
    layers = analyze(Residual(), 16, in_channels=1).by_name()
    assert (layers["c3"].input_r_min, layers["c3"].r_min, layers["c3"].r_max) == (1, 3, 7)
    assert brute_force_extent(Residual(), 31) == (7, 7)


def test_dilation_is_folded_into_the_kernel() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, dilation=2, bias=False), nn.Conv2d(1, 1, 3, dilation=4, bias=False)
    )
    layers = analyze(model, 64, in_channels=1).by_name()
    assert (layers["0"].effective_kernel, layers["0"].r_min) == (5, 5)
    assert (layers["1"].effective_kernel, layers["1"].r_min) == (9, 13)
    assert layers["1"].kernel_size == 3
    assert brute_force_extent(model, 41) == (13, 13)


class GlobalHead(nn.Module):
    def __init__(self, pool: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.gate = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 * pool * pool, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.gate(self.pool(self.c2(self.c1(x)))), 1))


def test_global_pool_output_is_global_and_linear_too() -> None:
    # A global pool leaves a descriptor of the whole image: the 1×1 conv that reads it is a
    # Linear layer on that descriptor (no receptive field, never flagged), at every size.
    for resolution in (4, 16, 64):
        result = analyze(GlobalHead(1), resolution)
        gate, fc = result.by_name()["gate"], result.by_name()["fc"]
        assert (gate.input_r_min, gate.r_min, gate.r_max, gate.input_size) == (None,) * 3 + (1,)
        assert not gate.unproductive and not gate.critical
        assert fc.r_min is None and not fc.unproductive
        assert result.unproductive == []
        # The range is the architecture's: c2 sees 5 px (3 + 2·1); 4 px is the smallest
        # input on which c1 (3×3) reads a map larger than its kernel.
        assert result.feasible_range == (4, 5)
    # Pooling 8×8 to 2×2 uses 4×4 windows: r 5 + 3·2 = 11, j 8; this gate is not exempt.
    gate2 = analyze(GlobalHead(2), 16).by_name()["gate"]
    assert (gate2.r_min, gate2.jump, gate2.input_size) == (11, 8, 2)
    assert analyze(GlobalHead(2), 10).by_name()["gate"].input_r_min == 9  # 5×5 -> 2×2: k 3


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc1 = nn.Conv2d(8, 2, 1)
        self.fc2 = nn.Conv2d(2, 8, 1)
        self.project = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return self.project(x * gate)


def test_squeeze_excitation_gate_adds_nothing_to_the_main_path_and_is_not_flagged() -> None:
    # conv: 3×3/2 -> r 3, j 2. The gate (global pool -> fc1 -> fc2) is multiplied back onto
    # the map: project reads x · gate, which sees what x sees: r_min = r_max = 3, jump 2 (not
    # the whole image, which would make r_max grow with the input).
    for resolution in (8, 32, 128):
        result = analyze(SqueezeExcite(), resolution)
        layers = result.by_name()
        assert layers["fc1"].input_r_min is None and layers["fc2"].r_min is None
        project = layers["project"]
        assert (project.input_r_min, project.r_min, project.r_max, project.jump) == (3, 3, 3, 2)
        assert result.unproductive == [] and result.critical == []
        assert result.feasible_range == (4, 3)  # empty: 3×3 needs a 4 px map, sees 3 px


def test_one_by_one_conv_on_a_one_by_one_map_obeys_the_r_min_rule() -> None:
    # Three 3×3/2 convs (padding 1): r 3, 7, 15; j 2, 4, 8. At 8 px the maps are 4, 2, 1 and
    # the 1×1 conv reads r_min 15 > 8: unproductive, though its kernel covers its 1×1 map
    # (the size rule never flags a 1×1 kernel). At 15 px it reads r_min = I: productive.
    model = nn.Sequential(
        *(nn.Conv2d(3, 3, 3, stride=2, padding=1) for _ in range(3)), nn.Conv2d(3, 3, 1)
    )
    at_8 = analyze(model, 8).by_name()["3"]
    assert (at_8.input_size, at_8.input_r_min, at_8.unproductive) == (1, 15, True)
    at_15 = analyze(model, 15).by_name()["3"]
    assert (at_15.input_size, at_15.unproductive, at_15.critical) == (2, False, False)
    assert smallest_productive_resolution(model) == 15


class FunctionalNet(nn.Module):
    """The functional style of the PyTorch MNIST example."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.conv3 = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.conv3(F.max_pool2d(x, 2))
        x = F.avg_pool2d(x, kernel_size=2, stride=2)
        return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))


def test_functional_pools_and_reductions() -> None:
    result = analyze(FunctionalNet(), 28, in_channels=1)
    layers = result.by_name()
    assert result.supported
    assert (layers["conv2"].r_min, layers["conv3"].input_r_min, layers["conv3"].r_min) == (5, 6, 10)
    assert layers["conv3"].jump == 2
    assert layers["fc"].r_min is None


def test_non_square_kernels_are_tracked_per_dimension() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 1, (3, 5), stride=(1, 2), bias=False), nn.Conv2d(1, 1, 3, bias=False)
    )
    layer = analyze(model, 64, in_channels=1).by_name()["1"]
    rows, cols = brute_force_extent(model, 41)
    assert (rows, cols) == (5, 9)  # rows: 3 + 2·1; cols: 5 + 2·2
    assert (layer.r_min, layer.r_max, layer.jump) == (rows, cols, 2)
    assert (layer.kernel_size, layer.stride) == (3, 1)


def test_transposed_conv_divides_the_jump() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, stride=2, bias=False),
        nn.ConvTranspose2d(1, 1, 2, stride=2, bias=False),
        nn.Conv2d(1, 1, 3, bias=False),
    )
    layers = analyze(model, 32, in_channels=1).by_name()
    assert (layers["1"].r_min, layers["1"].jump) == (3, 1)
    assert (layers["2"].r_min, layers["2"].jump) == (5, 1)
    assert brute_force_extent(model, 41) == (5, 5)


class ChannelsLast(nn.Module):
    """A ConvNeXt-style block: Linear layers act per position on a channels-last map."""

    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 7, padding=3, groups=4)
        self.norm = nn.LayerNorm(4)
        self.pw = nn.Linear(4, 4)
        self.out = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.norm(self.dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return self.out(y + x)


def test_permutes_to_channels_last_keep_the_spatial_dimensions() -> None:
    layers = analyze(ChannelsLast(), 16, in_channels=4).by_name()
    assert (layers["out"].input_r_min, layers["out"].r_min, layers["out"].r_max) == (1, 3, 9)
    assert layers["pw"].r_min is None and not layers["pw"].unproductive


def test_chain_matches_brute_force_for_pools() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, bias=False),
        nn.AvgPool2d(2),
        nn.Conv2d(1, 1, 5, bias=False),
        nn.AvgPool2d(3, stride=2),
        nn.Conv2d(1, 1, 3, dilation=2, bias=False),
    )
    layer = analyze(model, 96, in_channels=1).by_name()["4"]
    # 3 -> pool 4 (j 2) -> 12 -> pool 16 (j 4) -> dilated 5: 16 + 4·4 = 32
    assert (layer.r_min, layer.jump) == (32, 4)
    assert brute_force_extent(model, 95) == (32, 32)
    max_model = nn.Sequential(*(nn.MaxPool2d(m.kernel_size, m.stride) if isinstance(m, nn.AvgPool2d) else m for m in model))  # fmt: skip
    assert analyze(max_model, 96, in_channels=1).by_name()["4"].r_min == 32


@pytest.mark.parametrize("seed", range(6))
def test_random_chains_match_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    layers: list[nn.Module] = []
    for _ in range(rng.randint(2, 5)):
        k, s, d = rng.choice([1, 2, 3, 5]), rng.choice([1, 1, 2]), rng.choice([1, 1, 2])
        if rng.random() < 0.3:
            layers.append(nn.AvgPool2d(max(k, 2), stride=s))
        else:
            layers.append(nn.Conv2d(1, 1, k, stride=s, dilation=d, bias=False))
    layers.append(nn.Conv2d(1, 1, 1, bias=False))  # reported layer at the end
    model = nn.Sequential(*layers)
    last = analyze(model, 128, in_channels=1).layers[-1]
    rows, cols = brute_force_extent(model, 127)
    assert last.r_min == last.r_max == rows == cols


def test_module_called_twice_gets_one_entry() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.c(x))

    (layer,) = analyze(Twice(), 4).layers
    assert (layer.calls, layer.input_r_min, layer.r_min, layer.r_max) == (2, 1, 3, 5)
    assert not layer.unproductive and layer.critical  # the second call sees 5 > 4


# ------------------------------------------------------------- unsupported models


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.c(x)
        return x


def test_untraceable_model_is_reported_not_raised() -> None:
    result = analyze(DataDependent(), 8)
    assert not result.supported
    assert result.reason is not None and result.reason.startswith("cannot trace DataDependent: ")
    assert "control flow" in result.reason and "\n" not in result.reason
    assert result.layers == () and result.feasible_range is None
    with pytest.raises(UnsupportedModelError, match="cannot trace DataDependent"):
        smallest_productive_resolution(DataDependent())


def test_untraceable_shape_preserving_submodule_becomes_an_opaque_leaf() -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), DataDependent(), nn.Conv2d(3, 3, 3))
    model.train()
    result = analyze(model, 8)
    assert result.supported
    assert result.extra["opaque_modules"] == ["1"]
    assert [layer.name for layer in result.layers] == ["0", "2"]
    assert result.by_name()["2"].input_r_min == 3  # growth inside the leaf is not counted
    assert all(m.training for m in model.modules())


def test_ops_that_resize_the_map_unknowably_are_unsupported() -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 3), nn.Upsample(scale_factor=2), nn.Conv2d(3, 3, 3))
    result = analyze(model, 16)
    assert not result.supported
    assert result.reason is not None and "'1' (Upsample)" in result.reason


def test_resolution_too_small_to_run_is_unsupported_with_reason() -> None:
    result = analyze(vgg("D"), 16)
    assert not result.supported
    assert result.reason is not None and result.reason.startswith("cannot run Sequential on a ")


def test_invalid_arguments_raise_usage_errors() -> None:
    with pytest.raises(UsageError):
        analyze(vgg("A"), 0)
    with pytest.raises(UsageError, match="'nope'"):
        analyze(vgg("A"), 32, include=["nope"])


# ----------------------------------------------------------------- API contract


def test_include_restricts_the_report_but_not_the_range() -> None:
    model = vgg("D")
    names = conv_names(model)
    full = analyze(model, 32)
    part = analyze(model, 32, include=[names[12], names[0], "1"])
    assert [layer.name for layer in part.layers] == [names[0], names[12]]  # forward order
    assert part.feasible_range == full.feasible_range
    assert part.extra["not_reported"] == ["1"]  # a BatchNorm is not a reported layer


def test_analysis_leaves_the_model_untouched_and_fires_no_hooks() -> None:
    model = cifar_resnet18().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[str] = []
    handle = model.get_submodule("conv1").register_forward_hook(lambda *_: seen.append("conv1"))
    analyze(model, 32)
    handle.remove()
    assert seen == []
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_result_round_trips_through_json() -> None:
    result = analyze(torchvision.models.resnet18(), 32)
    restored = ReceptiveFieldAnalysis.from_dict(json.loads(json.dumps(result.to_dict())))
    assert restored == result
    layer = result.layers[0]
    assert LayerReceptiveField.from_dict(layer.to_dict()) == layer


# ------------------------------------------------- feasible range: the architecture's


def meta_model(name: str) -> nn.Module:
    """A torchvision model without weights, on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return getattr(torchvision.models, name)()


def test_imagenet_resnet18_range_runs_from_97_to_435_px_at_every_resolution() -> None:
    # Upper bound by hand along the longest path: conv1 7, maxpool 11 (j 4); layer1 +4·2·4 =
    # 43; layer2 +2·4 = 51 (j 8) +3·2·8 = 99; layer3 +2·8 = 115 (j 16) +3·2·16 = 211; layer4
    # +2·16 = 243 (j 32) +3·2·32 = 435. Lower bound: the size rule (97 px, see above) binds,
    # not the r_min rule (layer4.1.conv2 reads r_min 75).
    model = meta_model("resnet18")
    for resolution in (32, 97, 224, 512):
        result = analyze(model, resolution)
        assert result.feasible_range == (97, 435)
        assert result.extra["lower_bound_rule"] == "size"
        assert result.extra["lower_bound_layer"] == "layer4.0.conv2"
    assert analyze(model, 224).by_name()["layer4.1.conv2"].input_r_min == 75


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "efficientnet_b0"])
def test_feasible_range_depends_on_the_architecture_alone(name: str) -> None:
    model = meta_model(name)
    ranges = {r: analyze(model, r).feasible_range for r in (32, 64, 224, 448)}
    assert len(set(ranges.values())) == 1, ranges
    assert ranges[32] is not None
    lower = ranges[32][0]
    assert lower == smallest_productive_resolution(model)
    assert analyze(model, lower).unproductive == []
    assert analyze(model, lower - 1).unproductive != []


def test_squeeze_excitation_does_not_stretch_efficientnet_b0s_upper_bound() -> None:
    # Every conv of the main path sees at most the r_max of the last 1×1 conv (features.8),
    # which does not grow with the input; gates (global pool -> 1×1 convs) have no field.
    model = meta_model("efficientnet_b0")
    result = analyze(model, 448)
    layers = result.by_name()
    gates = [x for x in result.layers if ".fc" in x.name]
    assert len(gates) == 32 and all(g.r_min is None and not g.unproductive for g in gates)
    assert result.feasible_range is not None
    top = layers["features.8.0"].r_max
    assert top is not None and result.feasible_range[1] == top < 448 * 2


def test_unproductive_layers_only_shrink_as_the_resolution_grows() -> None:
    model = meta_model("mobilenet_v2")
    flagged = [set(analyze(model, r).unproductive) for r in (32, 40, 48, 64, 96, 128, 163)]
    assert all(later <= earlier for earlier, later in itertools.pairwise(flagged))
    assert flagged[0] and flagged[-1] == set()
    # The 1×1 convs of the last blocks read 1×1 maps at 32 px and are flagged (r_min rule).
    at_32 = analyze(model, 32).by_name()
    assert at_32["features.17.conv.2"].input_size == 1 and at_32["features.17.conv.2"].unproductive


# ---------------------------------------------------------------------- attention


def tiny_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    )


def test_vit_receptive_field_advice_does_not_apply_to_attention() -> None:
    result = analyze(tiny_vit(), 32)
    assert not result.supported and result.feasible_range is None
    assert result.attention == (
        "encoder.layers.encoder_layer_0.self_attention",
        "encoder.layers.encoder_layer_1.self_attention",
    )
    assert result.reason is not None and "does not apply to attention" in result.reason
    assert "covers only conv_proj" in result.reason and "\n" not in result.reason
    layers = result.by_name()
    patch = layers["conv_proj"]  # 8×8/8 patch embedding: r 8, j 8
    assert (patch.r_min, patch.r_max, patch.jump, patch.after_attention) == (8, 8, 8, False)
    after = [x.name for x in result.layers if x.after_attention]
    # Every Linear layer comes after the first attention (the MLP of block 0 follows it).
    assert after == [x.name for x in result.layers if x.module_type == "Linear"]
    assert len(after) == 5 and after[-1] == "heads.head"
    assert "does not describe the 5 layers after it" in result.reason
    assert not any(x.unproductive for x in result.layers)
    with pytest.raises(UnsupportedModelError, match="does not apply to attention"):
        smallest_productive_resolution(tiny_vit())


class FunctionalAttention(nn.Module):
    """Self-attention over the positions of a conv map, written with plain matmuls."""

    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.qkv = nn.Linear(8, 24)
        self.proj = nn.Linear(8, 8)
        self.scale = nn.Parameter(torch.ones(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        x = x @ self.scale  # a product with a parameter mixes channels, not positions
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            y = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
        return self.proj(y).mean(1)


@pytest.mark.parametrize("fused", [True, False])
def test_functional_attention_is_found(fused: bool) -> None:
    result = analyze(FunctionalAttention(fused), 8)
    assert not result.supported and len(result.attention) == (1 if fused else 2)
    layers = result.by_name()
    assert not layers["stem"].after_attention and layers["stem"].r_min == 3
    assert not layers["qkv"].after_attention and layers["proj"].after_attention


def test_attention_result_round_trips_through_json() -> None:
    result = analyze(tiny_vit(), 32)
    restored = ReceptiveFieldAnalysis.from_dict(json.loads(json.dumps(result.to_dict())))
    assert restored == result
