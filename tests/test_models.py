"""Built-in families and presets: shapes, gradients, names, published layouts."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs as tv_vgg_cfgs
from torchvision.models.vgg import make_layers as tv_vgg_layers

from satadvisor import receptive
from satadvisor.errors import ModelFileError, UsageError
from satadvisor.models import (
    create_model,
    get_model_fn,
    knob_roles,
    list_models,
    model_knobs,
    register_model,
)
from satadvisor.models._registry import split_evenly
from satadvisor.models.vgg import vgg_stages

FAMILIES = ("vgg", "resnet", "plain")
PRESETS = ("vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet18_cifar")
# Every registered model has a width knob; small widths keep the file fast on a 2-core CPU.
SMALL: dict[str, Any] = {"width": 8}


def _forward_backward(model: nn.Module, in_channels: int, resolution: int) -> torch.Tensor:
    torch.manual_seed(0)
    model.train()
    x = torch.randn(2, in_channels, resolution, resolution)
    out = model(x)
    out.square().mean().backward()
    return out


def _conv_input_rf(model: nn.Module) -> list[tuple[str, int]]:
    """(conv name, r of its input) for a purely sequential net, by r += (k-1)*j, j *= s."""
    r, j, rows = 1, 1, []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.MaxPool2d):
            k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
            s = module.stride if isinstance(module.stride, int) else module.stride[0]
            if isinstance(module, nn.Conv2d):
                rows.append((name, r))
            r, j = r + (k - 1) * j, j * s
    return rows


def test_registry_lists_families_and_presets() -> None:
    assert set(FAMILIES) | set(PRESETS) == set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_backward_at_32px(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=in_channels, **SMALL)
    out = _forward_backward(model, in_channels, 32)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname


@pytest.mark.parametrize(
    ("name", "knobs"),
    [
        ("vgg", {"depth": 3, "downsamplings": 3}),
        ("vgg", {"depth": 6, "downsamplings": 5}),  # pools past 1x1 keep 1x1
        ("vgg", {"depth": 4, "downsamplings": 0, "batch_norm": False}),
        ("plain", {"depth": 3, "downsamplings": 2}),
        ("plain", {"depth": 6, "downsamplings": 5}),  # stride-2 convs past 1x1
        ("resnet", {"depth": 10}),
        ("resnet", {"depth": 10, "stem_kernel": 7, "stem_stride": 2, "stem_pool": True}),
        ("resnet", {"depth": 10, "downsamplings": 0, "kernel_size": 5}),
    ],
)
@pytest.mark.parametrize("resolution", [8, 1])
def test_families_survive_small_resolutions(
    name: str, knobs: dict[str, Any], resolution: int
) -> None:
    model = create_model(name, width=4, num_classes=5, in_channels=1, **knobs)
    out = _forward_backward(model, 1, resolution)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


def test_model_knobs_are_the_defaulted_keywords() -> None:
    assert model_knobs("vgg") == {
        "depth": 8,
        "kernel_size": 3,
        "width": 16,
        "downsamplings": 3,
        "batch_norm": True,
        "stages": None,
    }
    assert model_knobs("resnet") == {
        "depth": 18,
        "kernel_size": 3,
        "width": 64,
        "downsamplings": 3,
        "stem_kernel": 3,
        "stem_stride": 1,
        "stem_pool": False,
    }
    assert model_knobs("plain") == {
        "depth": 6,
        "kernel_size": 3,
        "width": 16,
        "downsamplings": 2,
        "stages": None,
    }
    assert model_knobs("vgg16") == {"width": 64, "kernel_size": 3, "batch_norm": True}
    assert model_knobs("resnet18") == {"width": 64, "kernel_size": 3}


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelFileError) as info:
        create_model("vgg17")
    message = str(info.value)
    assert "\n" not in message
    assert "'vgg17'" in message and "vgg16" in message and "resnet18_cifar" in message
    with pytest.raises(ModelFileError):
        get_model_fn("nope")


def test_unknown_knob_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown knob 'depth' for vgg16"):
        create_model("vgg16", depth=3)


def test_registering_a_name_twice_fails() -> None:
    def vgg() -> nn.Module:  # same name as the family
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(vgg)


@pytest.mark.parametrize(
    ("name", "knobs", "match"),
    [
        ("vgg", {"kernel_size": 4}, "odd kernel_size"),
        ("vgg", {"depth": 2, "downsamplings": 3}, "downsamplings <= depth"),
        ("vgg", {"width": 0}, "width >= 1"),
        ("vgg", {"depth": 8, "downsamplings": 4, "stages": 3}, "downsamplings <= stages <= depth"),
        ("vgg", {"depth": 4, "downsamplings": 3, "stages": 5}, "downsamplings <= stages <= depth"),
        ("vgg", {"stages": 0}, "stages >= 1"),
        ("plain", {"depth": 6, "downsamplings": 3, "stages": 3}, "downsamplings < stages"),
        ("plain", {"depth": 2, "downsamplings": 2}, "downsamplings < depth"),
        ("resnet", {"depth": 20}, "10, 18, 26, 34"),
        ("resnet", {"downsamplings": 4}, "downsamplings <= 3"),
        ("resnet", {"stem_kernel": 2}, "odd stem_kernel"),
    ],
)
def test_bad_knob_values_raise_value_error(name: str, knobs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model(name, **knobs)


def test_split_evenly_puts_extra_layers_last() -> None:
    assert split_evenly(13, 5) == (2, 2, 3, 3, 3)  # VGG16, configuration D
    assert split_evenly(8, 5) == (1, 1, 2, 2, 2)  # VGG11, configuration A
    assert split_evenly(10, 5) == (2, 2, 2, 2, 2)  # VGG13, configuration B
    assert split_evenly(6, 1) == (6,)
    assert sum(split_evenly(17, 4)) == 17


def test_vgg_family_channels_double_and_cap_at_eight_times_width() -> None:
    stages = vgg_stages(6, 4, 5)
    assert [s.convs for s in stages] == [1, 1, 1, 1, 2]
    assert [s.channels for s in stages] == [4, 8, 16, 32, 32]
    assert vgg_stages(5, 4, 0)[0].pool is False


def test_vgg_family_at_13_convs_5_pools_is_the_vgg16_stack() -> None:
    family = create_model("vgg", depth=13, downsamplings=5, width=64)
    preset = create_model("vgg16")
    fam = [m.weight.shape for m in family.modules() if isinstance(m, nn.Conv2d)]
    pre = [m.weight.shape for m in preset.modules() if isinstance(m, nn.Conv2d)]
    assert fam == pre


@pytest.mark.parametrize(
    ("name", "cfg"), [("vgg11", "A"), ("vgg13", "B"), ("vgg16", "D"), ("vgg19", "E")]
)
def test_vgg_presets_match_torchvision_features(name: str, cfg: str) -> None:
    ours = create_model(name).features
    reference = tv_vgg_layers(tv_vgg_cfgs[cfg], batch_norm=True)
    assert [type(m) for m in ours] == [type(m) for m in reference]
    assert [p.shape for p in ours.parameters()] == [p.shape for p in reference.parameters()]
    convs = [n for n, m in ours.named_children() if isinstance(m, nn.Conv2d)]
    assert convs == [f"conv{i}" for i in range(1, len(convs) + 1)]


def test_vgg16_preset_names_and_head() -> None:
    model = create_model("vgg16", num_classes=10, in_channels=1)
    names = dict(model.named_modules())
    assert isinstance(names["features.conv1"], nn.Conv2d)
    assert isinstance(names["features.conv13"], nn.Conv2d)
    assert "features.conv14" not in names
    assert isinstance(names["features.bn13"], nn.BatchNorm2d)
    assert names["features.conv1"].in_channels == 1
    fc1, fc2 = names["classifier.fc1"], names["classifier.fc2"]
    assert isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)
    assert (fc1.in_features, fc1.out_features, fc2.out_features) == (512, 256, 10)


def test_vgg16_at_32px_reads_wider_than_the_image_from_conv8() -> None:
    # DESIGN.md calibration: conv7 reads r = 32 (critical), conv8 reads r = 44 > 32.
    rows = dict(_conv_input_rf(create_model("vgg16", width=8)))
    assert rows["features.conv7"] == 32
    assert rows["features.conv8"] == 44
    assert [n for n, r in rows.items() if r > 32] == [f"features.conv{i}" for i in range(8, 14)]


def test_default_vgg_has_a_tail_at_16px() -> None:
    # 8 convs in stages (2, 3, 3): conv5 reads r = 14 -> 18 out; pool2 -> 20 > 16 for conv6.
    rows = dict(_conv_input_rf(create_model("vgg")))
    assert [n for n, r in rows.items() if r > 16] == [
        "features.conv6",
        "features.conv7",
        "features.conv8",
    ]
    assert rows["features.conv5"] == 14


def _state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_resnet18_matches_torchvision() -> None:
    ours = _state_shapes(create_model("resnet18", num_classes=10))
    reference = _state_shapes(torchvision.models.resnet18(num_classes=10))
    assert ours == reference


def test_resnet18_cifar_differs_only_in_the_stem() -> None:
    model = create_model("resnet18_cifar", num_classes=10)
    ours = _state_shapes(model)
    reference = _state_shapes(torchvision.models.resnet18(num_classes=10))
    assert ours.keys() == reference.keys()
    assert [k for k in ours if ours[k] != reference[k]] == ["conv1.weight"]
    assert ours["conv1.weight"] == (64, 3, 3, 3)
    assert model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)


def test_resnet_depth_34_with_imagenet_stem_matches_torchvision() -> None:
    ours = create_model("resnet", depth=34, stem_kernel=7, stem_stride=2, stem_pool=True)
    assert _state_shapes(ours) == _state_shapes(torchvision.models.resnet34(num_classes=10))


def test_resnet_fewer_downsamplings_drop_the_early_strides() -> None:
    model = create_model("resnet", depth=10, width=4, downsamplings=1)
    strides = [getattr(model, f"layer{i}")[0].conv1.stride[0] for i in range(1, 5)]
    assert strides == [1, 1, 1, 2]
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 10)


def test_kernel_size_knob_reaches_every_body_conv() -> None:
    for name in FAMILIES:
        model = create_model(name, kernel_size=5, width=4)
        body = [
            m
            for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and n != "conv1" and "downsample" not in n
        ]
        assert body and all(m.kernel_size == (5, 5) and m.padding == (2, 2) for m in body), name


def test_plain_downsamples_with_stride_two_convs() -> None:
    model = create_model("plain", depth=6, downsamplings=2, width=4)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert [n for n, _ in convs] == [f"convs.conv{i}" for i in range(1, 7)]
    assert [m.stride[0] for _, m in convs] == [1, 1, 2, 1, 2, 1]
    assert [m.out_channels for _, m in convs] == [4, 4, 8, 8, 16, 16]
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert isinstance(model.fc, nn.Linear)


@pytest.mark.parametrize("name", list_models())
def test_layers_are_registered_in_forward_order(name: str) -> None:
    model = create_model(name, **SMALL)
    registered = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    called: list[str] = []
    handles = [
        module.register_forward_hook(lambda *_, n=n: called.append(n))
        for n, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    ]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, 3, 32, 32))
    for handle in handles:
        handle.remove()
    assert called == registered


# --------------------------------------------------------------- fewer downsamplings, same channels


def _conv_channels(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def _input_r_min(model: nn.Module, resolution: int = 32) -> list[int]:
    rf = receptive.analyze(model, resolution, in_channels=3)
    return [layer.input_r_min for layer in rf.layers if "conv" in layer.module_type.lower()]


def test_vgg_stages_default_to_one_per_downsampling() -> None:
    # The documented layouts are unchanged: the embedded default and VGG16's conv stack.
    assert [(s.convs, s.channels, s.pool) for s in vgg_stages(8, 16, 3)] == [
        (2, 16, True),
        (3, 32, True),
        (3, 64, True),
    ]
    explicit = create_model("vgg", depth=13, downsamplings=5, stages=5, width=4)
    default = create_model("vgg", depth=13, downsamplings=5, width=4)
    assert _state_shapes(explicit) == _state_shapes(default)


def test_vgg16_stack_without_its_first_pool_keeps_every_conv_channel() -> None:
    base = create_model("vgg", depth=13, downsamplings=5, width=16)
    fewer = create_model("vgg", depth=13, downsamplings=4, stages=5, width=16)
    assert _conv_channels(fewer) == _conv_channels(base)
    assert _conv_channels(base) == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]
    assert _state_shapes(fewer) == _state_shapes(base)  # pools carry no parameters
    pools = [n for n, m in fewer.features.named_children() if isinstance(m, nn.MaxPool2d)]
    assert pools == ["pool2", "pool3", "pool4", "pool5"]  # the earliest pool is the one gone
    names = [n for n, _ in fewer.features.named_children()]
    assert names.index("pool2") == names.index("relu4") + 1  # conv1-conv4 at full resolution


def test_removing_the_first_pool_slows_the_receptive_field_growth() -> None:
    base = create_model("vgg", depth=13, downsamplings=5, width=4)
    fewer = create_model("vgg", depth=13, downsamplings=4, stages=5, width=4)
    r_base, r_fewer = _input_r_min(base), _input_r_min(fewer)
    # Hand-computed: without pool1 conv3 reads r = 5 (not 5 + 1 through the pool), conv4 7...
    assert r_base[:4] == [1, 3, 6, 10] and r_fewer[:4] == [1, 3, 5, 7]
    # ... and the later jumps are halved: conv8 reads 24 instead of 44.
    assert r_base[7] == 44 and r_fewer[7] == 24
    assert all(f <= b for f, b in zip(r_fewer, r_base, strict=True))
    assert all(f < b for f, b in zip(r_fewer[2:], r_base[2:], strict=True))
    unproductive = [
        len(receptive.analyze(m, 32, in_channels=3).unproductive) for m in (base, fewer)
    ]
    assert unproductive == [6, 4]  # conv8-conv13, then conv10-conv13


def test_plain_fewer_downsamplings_drop_the_early_strides_and_keep_channels() -> None:
    base = create_model("plain", depth=6, downsamplings=2, width=4)
    fewer = create_model("plain", depth=6, downsamplings=1, stages=3, width=4)
    assert _conv_channels(fewer) == _conv_channels(base) == [4, 4, 8, 8, 16, 16]
    strides = [m.stride[0] for m in fewer.modules() if isinstance(m, nn.Conv2d)]
    assert strides == [1, 1, 1, 1, 2, 1]  # conv3's stride (the earliest) is gone
    assert _state_shapes(fewer) == _state_shapes(base)
    assert create_model("plain", depth=6, downsamplings=0, stages=3, width=4)(
        torch.zeros(2, 3, 8, 8)
    ).shape == (2, 10)


def test_resnet_fewer_downsamplings_keep_every_conv_channel() -> None:
    base = create_model("resnet", depth=10, width=4)
    fewer = create_model("resnet", depth=10, width=4, downsamplings=2)
    assert _conv_channels(fewer) == _conv_channels(base)
    assert _state_shapes(fewer) == _state_shapes(base)  # the 1x1 projections stay
    strides = [getattr(fewer, f"layer{i}")[0].conv1.stride[0] for i in range(1, 5)]
    assert strides == [1, 1, 2, 2]


# ----------------------------------------------------------------------------- knob descriptors


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", list_models())
def test_every_declared_role_is_a_knob_the_family_has_or_a_shared_one(name: str) -> None:
    roles = knob_roles(name)
    family = name if name in FAMILIES else next(f for f in FAMILIES if name.startswith(f))
    # A preset shares its family's declaration and lacks some of its knobs (no depth).
    assert set(model_knobs(name)) <= set(model_knobs(family))
    assert roles is knob_roles(family) and roles.names() <= set(model_knobs(family))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_declared_depth_knob_removes_convs_and_the_width_knob_scales_them(family: str) -> None:
    roles = knob_roles(family)
    assert roles.depth is not None and roles.width is not None
    depths = roles.choices.get(roles.depth) or range(3, 9)
    counts = [len(_convs(create_model(family, **SMALL, **{roles.depth: d}))) for d in depths]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    narrow = _convs(create_model(family, **{roles.width: 8}))
    wide = _convs(create_model(family, **{roles.width: 16}))
    assert [2 * c.out_channels for c in narrow] == [c.out_channels for c in wide]


def test_resnets_declared_depths_are_the_ones_it_builds() -> None:
    roles = knob_roles("resnet")
    builds = []
    for depth in range(8, 36):
        try:
            create_model("resnet", depth=depth, width=4)
        except ValueError:
            continue
        builds.append(depth)
    assert tuple(builds) == roles.choices["depth"]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_declared_receptive_knob_slows_the_receptive_field_growth(family: str) -> None:
    # At 32 px, moving each receptive-field knob one step in its declared direction gives the
    # last conv a smaller receptive field along its widest path (r_max, from receptive.analyze;
    # a ResNet's shortest path skips the block convs, so r_min need not move).
    base_knobs = {**model_knobs(family), **SMALL}
    if family == "resnet":
        base_knobs.update(depth=10, stem_kernel=7, stem_stride=2, stem_pool=True)

    def last_r_max(**knobs: Any) -> int:
        rf = receptive.analyze(create_model(family, **{**base_knobs, **knobs}), 32, in_channels=3)
        convs = [x for x in rf.layers if "conv" in x.module_type.lower()]
        value = convs[-1].r_max
        assert value is not None
        return value

    step = {
        "kernel": lambda v: v - 2,
        "stride": lambda v: 1,
        "switch": lambda v: False,
        "downsampling_count": lambda v: v - 1,
        "downsampling_spacing": lambda v: v + 1,
    }
    before = last_r_max()
    roles = knob_roles(family).receptive
    assert roles
    for role in roles:
        changed = {role.name: step[role.kind](base_knobs[role.name])}
        if role.layout is not None:  # one stage per downsampling: pin the stages
            changed[role.layout] = base_knobs["downsamplings"] + (family == "plain")
        assert last_r_max(**changed) < before, (role, changed)
