"""A new model family needs only its knob descriptor: rules and search read it.

The toy family below is registered here, in the test, with knob names no built-in family uses
(``blocks`` sets the depth, ``pool_every`` spaces the pools, ``channels`` is the width); the
rules and the search space must handle it without knowing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
import torch
from _source import string_constants
from torch import nn

import satadvisor
from satadvisor import models, receptive, rules
from satadvisor import spec as spec_mod
from satadvisor.cost import count_macs
from satadvisor.models import KnobRoles, ReceptiveKnob
from satadvisor.search.space import derive_space

TOY = "toy_stack"
TOY_KNOBS = KnobRoles(
    depth="blocks",
    width="channels",
    kernel=None,
    receptive=(ReceptiveKnob("pool_every", "downsampling_spacing"),),
    depth_factors=(0.25, 1.0),
)
PACKAGE = Path(satadvisor.__file__).parent


def toy_stack(
    blocks: int = 8,
    channels: int = 8,
    pool_every: int = 1,
    *,
    num_classes: int = 10,
    in_channels: int = 1,
) -> nn.Module:
    """``blocks`` 3×3 convs of ``channels`` outputs; a 2×2 max-pool after every ``pool_every``
    of them; global average pooling and one Linear."""
    if blocks < 1 or channels < 1 or pool_every < 1:
        raise ValueError("toy_stack needs blocks, channels and pool_every >= 1")
    layers: list[nn.Module] = []
    width = in_channels
    for i in range(1, blocks + 1):
        layers += [nn.Conv2d(width, channels, 3, padding=1, bias=False), nn.ReLU()]
        width = channels
        if i % pool_every == 0:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


@pytest.fixture
def toy() -> Iterator[spec_mod.ModelSpec]:
    models.register_model(toy_stack, knobs=TOY_KNOBS)
    try:
        yield spec_mod.load(TOY)
    finally:
        models.unregister_model(TOY)


def convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


def test_the_registry_returns_the_declaration_and_the_conventional_default(
    toy: spec_mod.ModelSpec,
) -> None:
    assert models.knob_roles(toy.source) is TOY_KNOBS
    assert models.knob_roles("my_model.py") is models.CONVENTIONAL
    assert models.CONVENTIONAL.depth == "depth" and models.CONVENTIONAL.width == "width"
    with pytest.raises(ValueError, match="kind must be one of"):
        ReceptiveKnob("pool_every", "faster")  # type: ignore[arg-type]


def test_the_toy_familys_tail_is_cut_with_its_own_depth_knob(toy: spec_mod.ModelSpec) -> None:
    # By hand at 8 px (3×3 convs, a pool after each): conv1 reads r 1 and conv2 r 4 (after the
    # first pool); conv3 reads r 10 > 8 px on a 2×2 map, so conv3–conv8 are unproductive.
    base = toy.create(num_classes=10, in_channels=1)
    rf = receptive.analyze(base, 8, in_channels=1)
    assert len(rf.unproductive) == 6
    findings = rules.evaluate(None, rf)
    recs = rules.recommend(
        findings, spec=toy, knobs=toy.knobs, resolution=8, num_classes=10, in_channels=1,
        rf=rf, source_resolution=8,
    )  # fmt: skip
    (cut,) = [r for r in recs if r.kind == "efficiency"]
    assert cut.changes == {"blocks": 2}  # 8 convs − 6 unproductive
    assert cut.knobs == {"blocks": 2, "channels": 8, "pool_every": 1}
    smaller = toy.create(num_classes=10, in_channels=1, **cut.knobs)
    assert convs(smaller) == 2 < convs(base) == 8
    # MACs by hand: conv1 at 8×8 (64·8·1·9 = 4608), conv2 at 4×4 (16·8·8·9 = 9216), conv3 at
    # 2×2 (4·576), conv4–conv8 at 1×1 (5·576), the Linear 8·10 = 80.
    assert count_macs(base, in_channels=1, resolution=8) == 4608 + 9216 + 2304 + 2880 + 80
    assert count_macs(smaller, in_channels=1, resolution=8) == 4608 + 9216 + 80
    assert cut.cost is not None and cut.cost.macs == 4608 + 9216 + 80
    assert cut.cost.macs_ratio == pytest.approx((4608 + 9216 + 80) / 19088)
    # The receptive-field knob is pool_every, and a larger value is slower growth: one more
    # block between pools (conv1, conv2 at 8 px, conv4 reads r 10) leaves 5 unproductive.
    slower = [r for r in recs if r.kind == "performance" and "pool_every" in r.changes]
    assert slower and slower[0].changes == {"pool_every": 2}
    assert slower[0].unproductive_after == 5
    built = toy.create(num_classes=10, in_channels=1, **slower[0].knobs)
    assert len(receptive.analyze(built, 8, in_channels=1).unproductive) == 5


def test_the_toy_familys_width_knob_answers_a_narrow_layer(toy: spec_mod.ModelSpec) -> None:
    narrow = rules.Finding("too_narrow", ("2",), "conv2 uses all its channels")
    (rec,) = rules.recommend(
        [narrow], spec=toy, knobs=toy.knobs, resolution=8, num_classes=10, in_channels=1,
        rf=None,
    )  # fmt: skip
    assert rec.kind == "width" and rec.changes == {"channels": 16}
    wider = toy.create(num_classes=10, in_channels=1, **rec.knobs)
    assert {m.out_channels for m in wider.modules() if isinstance(m, nn.Conv2d)} == {16}


def test_analyze_advises_the_toy_family_by_name(toy: spec_mod.ModelSpec) -> None:
    analysis = satadvisor.analyze(TOY, train=False, dataset="digits", resolution=8)
    efficiency = [r for r in analysis.recommendations if r.kind == "efficiency"]
    assert [r.changes for r in efficiency] == [{"blocks": 2}]
    assert efficiency[0].model is None  # the toy's own knob, not another family's


def test_the_search_space_comes_from_the_declaration(toy: spec_mod.ModelSpec) -> None:
    space = derive_space(toy, resolution=8)
    # blocks: every integer from 0.25× to 1× the default 8 (the declared depth factors);
    # channels: 0.5×–2× the default 8 in steps of 0.5× (the conventional width factors);
    # resolution: 1×–2× of 8 px in steps of 2 px (nothing below the 8 px floor);
    # pool_every plays no searched role, and the toy has no kernel knob.
    assert space.choices == {
        "blocks": (2, 3, 4, 5, 6, 7, 8),
        "channels": (4, 8, 12, 16),
        "resolution": (8, 10, 12, 14, 16),
    }
    for params in ({"blocks": 2, "channels": 4}, {"blocks": 8, "channels": 16}):
        net = toy.create(num_classes=10, in_channels=1, **params)
        assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_rules_and_search_name_no_family_and_no_declared_knob() -> None:
    families = {"vgg", "resnet", "plain"}
    declared = set().union(*(models.knob_roles(name).names() for name in families))
    assert {"depth", "width", "kernel_size", "downsamplings", "stem_pool"} <= declared
    # "width" is also a kind of recommendation (the analysis.json schema), not a knob there.
    allowed = set(get_args(rules.RecommendationKind))
    forbidden = (families | declared) - allowed
    found = {
        f"{path.relative_to(PACKAGE)}: {text!r}"
        for folder in ("rules", "search")
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        for text in {text for _, text in string_constants(path)} & forbidden
    }
    assert not found
