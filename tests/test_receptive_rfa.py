"""Layer-by-layer agreement with rfa_toolbox (Richter et al.'s receptive-field toolbox).

rfa_toolbox builds its own graph from ``torch.jit.trace`` and computes r_min / r_max with its
own code, so it is an independent reference for the receptive fields. It is optional: install
it with ``pip install --ignore-requires-python --no-deps rfa-toolbox attrs graphviz`` (1.7.0
imports ``collections.Sequence``, gone since Python 3.10; the patch below puts it back).

Compared for every Conv2d rfa_toolbox reports: the output r_min and r_max, the smallest r_min
among the layer's inputs, and the unproductive verdict. The verdict's reference is rfa_toolbox's
r_min rule with our deliberate conventions, and a size rule measured with forward pre-hooks:

* r_min rule: every input's r_min > I strictly (rfa_toolbox's ``is_border`` uses ≥, so a layer
  whose inputs see exactly the image is critical here, unproductive there);
* size rule: the real input map (hooked at I, so padding, valid convolutions and ceil-mode
  pools count) is no larger than the dilation-folded kernel, for kernels larger than 1×1
  (rfa_toolbox estimates the map as I // jump and flags 1×1 kernels on 1×1 maps too, e.g.
  ResNet-50's layer4.1.conv1 and layer4.2.conv1 at 32 px).

Squeeze-and-excitation blocks are opaque to rfa_toolbox (kernel 1, a pass-through): their
convs are absent there, and have no receptive field here (they read a global pool).
"""

from __future__ import annotations

import collections
import collections.abc
import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from satadvisor.receptive import analyze

if not hasattr(collections, "Sequence"):
    collections.Sequence = collections.abc.Sequence  # type: ignore[attr-defined]

rfa = pytest.importorskip("rfa_toolbox", reason="rfa_toolbox is not installed")
intermediate_graph = pytest.importorskip("rfa_toolbox.encodings.pytorch.intermediate_graph")

Reference = dict[str, tuple[int, int, int, bool]]


def _min(value: Any) -> int:
    return int(np.min(np.asarray(value)))


def _max(value: Any) -> int:
    return int(np.max(np.asarray(value)))


def input_sizes(model: nn.Module, resolution: int) -> dict[str, tuple[int, ...]]:
    """Every Conv2d's input map size at ``resolution``, from forward pre-hooks on a real run."""
    sizes: dict[str, tuple[int, ...]] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            sizes.setdefault(name, tuple(args[0].shape[2:]))

        return record

    handles = [
        m.register_forward_pre_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, resolution, resolution))
    for handle in handles:
        handle.remove()
    return sizes


def reference(
    model: nn.Module, resolution: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[Reference, set[str]]:
    """Qualified conv name -> (r_min, r_max, input r_min, unproductive) from rfa_toolbox, and
    the convs rfa_toolbox's own ``is_border`` flags where we do not, each for a documented
    reason: it estimates the map as ``I // jump`` (smaller than the real map where padding
    rounds up) and flags 1×1 kernels on a map of 1, or it counts inputs that see exactly the
    image (≥, where we say critical)."""
    labels: dict[str, str] = {}
    original = intermediate_graph.Digraph.node

    def node(self: Any, name: str, label: str | None = None, **kwargs: Any) -> None:
        labels[name] = label or name  # "layer1.0.conv1 (Conv2d)": the module behind a node
        original(self, name, label=label, **kwargs)

    monkeypatch.setattr(intermediate_graph.Digraph, "node", node)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = rfa.create_graph_from_pytorch_model(model, input_res=(1, 3, resolution, resolution))
    sizes = input_sizes(model, resolution)
    out: Reference = {}
    border = set()
    for n in graph.all_layers:
        label = labels.get(n.name, "")
        if not label.endswith("(Conv2d)"):
            continue
        name = label.split(" ")[0]
        conv = model.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        reads = min((_min(p.receptive_field_min) for p in n.predecessors), default=1)
        keff = [d * (k - 1) + 1 for k, d in zip(conv.kernel_size, conv.dilation, strict=True)]
        too_small = any(k > 1 and s <= k for s, k in zip(sizes[name], keff, strict=True))
        out[name] = (
            _min(n.receptive_field_min),
            _max(n.receptive_field_max),
            reads,
            reads > resolution or too_small,
        )
        if n.is_border(resolution) and not out[name][3]:
            jump = max(_max(p.get_maximum_scale_factor()) for p in n.predecessors)
            estimate = resolution // jump
            rounded = any(estimate <= k < s for s, k in zip(sizes[name], keff, strict=True))
            one_by_one = max(keff) == 1 and estimate <= 1
            assert rounded or one_by_one or reads == resolution, name
            border.add(name)
    return out, border


def compare(name: str, resolution: int, monkeypatch: pytest.MonkeyPatch) -> int:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    expected, border = reference(model, resolution, monkeypatch)
    result = analyze(model, resolution)
    assert result.supported, result.reason
    ours = {
        x.name: (x.r_min, x.r_max, x.input_r_min, x.unproductive)
        for x in result.layers
        if x.module_type == "Conv2d"
    }
    # The convs with a receptive field are exactly rfa_toolbox's; the others are SE gates.
    fielded = {n for n, v in ours.items() if v[0] is not None}
    assert fielded == set(expected)
    for gate in set(ours) - fielded:
        assert ".fc" in gate or "se" in gate.split(".")[-2], gate
    disagreements = {n: (ours[n], expected[n]) for n in expected if ours[n] != expected[n]}
    assert disagreements == {}
    assert border == RFA_ONLY.get((name, resolution), border)
    return len(expected)


# Where rfa_toolbox's own verdict flags more (see reference): ResNet-50's layer4.1.conv1 and
# layer4.2.conv1 read 1×1 maps at 32 px, but their inputs see only 11 px (identity path).
RFA_ONLY = {
    ("resnet50", 32): {"layer4.1.conv1", "layer4.2.conv1"},
    ("resnet18", 32): set(),
    ("mobilenet_v2", 32): set(),
    ("efficientnet_b0", 32): set(),
}

FAST = [("resnet18", 32), ("resnet50", 32), ("mobilenet_v2", 32), ("efficientnet_b0", 32)]
SLOW = [
    (name, resolution)
    for name in ("resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0")
    for resolution in (48, 64, 224)
]


@pytest.mark.parametrize(("name", "resolution"), FAST)
def test_agrees_with_rfa_toolbox_layer_by_layer(
    name: str, resolution: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = {"resnet18": 20, "resnet50": 53, "mobilenet_v2": 52, "efficientnet_b0": 49}
    assert compare(name, resolution, monkeypatch) == counts[name]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "resolution"), SLOW)
def test_agrees_with_rfa_toolbox_at_larger_inputs(
    name: str, resolution: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert compare(name, resolution, monkeypatch) > 0
