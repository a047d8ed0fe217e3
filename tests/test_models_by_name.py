"""torchvision:NAME and timm:NAME: loading, knobs, channel adaptation, advice without knobs."""

from __future__ import annotations

import sys

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from satadvisor import spec
from satadvisor.errors import ModelFileError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_torchvision_model_is_torchvisions_own_with_its_architecture_knobs() -> None:
    s = spec.load("torchvision:mobilenet_v2")
    assert (s.name, s.source, s.optimisable) == ("mobilenet_v2", "torchvision:mobilenet_v2", True)
    assert s.knobs["width_mult"] == 1.0 and "dropout" not in s.knobs
    assert spec.load(s.source).knobs == s.knobs  # the source loads again
    torch.manual_seed(0)
    ours = s.create(num_classes=10, in_channels=3, width_mult=0.5)
    torch.manual_seed(0)
    theirs = tvm.mobilenet_v2(weights=None, num_classes=10, width_mult=0.5)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert all(torch.equal(ours_sd[k], theirs_sd[k]) for k in ours_sd)


def test_knobs_the_builder_fixes_are_left_out() -> None:
    assert spec.load("torchvision:resnet18").knobs == {"groups": 1, "width_per_group": 64}
    assert spec.load("torchvision:resnext50_32x4d").knobs == {}  # groups=32 set by the builder


def test_one_channel_data_replaces_the_stem() -> None:
    s = spec.load("torchvision:resnet18")
    model = s.create(num_classes=7, in_channels=1)
    ref = tvm.resnet18(weights=None).conv1
    conv = model.conv1
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (64, 1, 7, 7)
    assert (conv.stride, conv.padding, conv.bias) == (ref.stride, ref.padding, None)
    spec.check_output(model, num_classes=7, in_channels=1, resolution=32, source=s.source)


def test_a_vision_transformer_takes_the_resolution() -> None:
    s = spec.load("torchvision:vit_b_32")
    assert s.knobs == {"resolution": 224}
    with torch.device("meta"):
        model = s.create(num_classes=10, in_channels=3, resolution=64)
        assert model.image_size == 64
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_unknown_names_and_missing_timm_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ModelFileError, match=r"torchvision:resnet19: .*did you mean resnet18"):
        spec.load("torchvision:resnet19")
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm fails
    from satadvisor.models import _library

    _library.resolve.cache_clear()
    with pytest.raises(ModelFileError) as exc:
        spec.load("timm:resnet18")
    assert str(exc.value) == (
        "timm:resnet18: timm is not installed; pip install 'satadvisor[timm]' (or pip install timm)"
    )


def test_a_timm_model_when_timm_is_installed() -> None:
    pytest.importorskip("timm")
    s = spec.load("timm:resnet18")
    model = s.create(num_classes=5, in_channels=1)
    spec.check_output(model, num_classes=5, in_channels=1, resolution=32, source=s.source)


def _conv_macs(model: nn.Module, names: list[str], x: torch.Tensor) -> int:
    """MACs of conv layers by the textbook formula: C_out·H·W · C_in/groups · k_h·k_w."""
    total = 0

    def hook(m: nn.Module, _: object, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Conv2d)
        k = m.kernel_size[0] * m.kernel_size[1]
        total += out[0].numel() * (m.in_channels // m.groups) * k

    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(hook) for n in names]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


def test_a_model_without_depth_knob_gets_the_layers_to_cut_and_the_predicted_cost() -> None:
    from satadvisor import analyze

    # resnet50: no depth knob, and no built-in family that builds it (torchvision's resnet18
    # gets the resnet family's depth instead, see tests/test_readability.py)
    result = analyze("torchvision:resnet50", dataset="digits", resolution=32, train=False)
    tail = next(f for f in result.findings if f.kind == "tail")
    rec = result.recommendations[0]
    assert rec.kind == "efficiency" and "in a copy of its code" in rec.title
    model = spec.load("torchvision:resnet50").create(num_classes=10, in_channels=1)
    saved = _conv_macs(model, list(tail.layers), torch.zeros(1, 1, 32, 32))
    everything = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    convs = _conv_macs(model, everything, torch.zeros(1, 1, 32, 32))
    fc = 2048 * 10
    assert result.macs == convs + fc  # the baseline: every conv plus the classifier
    ratio = (result.macs - saved) / result.macs
    assert f"(about {ratio:.2f}× MACs)" in rec.title
    assert f"{len(tail.layers)} layers" in rec.rationale and f"{ratio:.2f}× left" in rec.rationale
