"""A model file declares what its knobs do with ``KNOBS`` (as a family does), and the rules and
the search read it; a declaration naming a knob build_model does not take is a one-line error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import satadvisor
from satadvisor import spec as spec_mod
from satadvisor.errors import ModelFileError
from satadvisor.models import CONVENTIONAL
from satadvisor.search.space import derive_space

STACK = """
from torch import nn
{header}

def build_model(blocks: int = 8, channels: int = 8, pool_every: int = 1, *,
                num_classes: int, in_channels: int) -> nn.Module:
    layers, width = [], in_channels
    for i in range(1, blocks + 1):
        layers += [nn.Conv2d(width, channels, 3, padding=1, bias=False), nn.ReLU()]
        width = channels
        if i % pool_every == 0:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)
"""

DECLARED = """
from satadvisor.models import KnobRoles, ReceptiveKnob
KNOBS = KnobRoles(depth="blocks", width="channels", kernel=None,
                  receptive=(ReceptiveKnob("pool_every", "downsampling_spacing"),),
                  depth_factors=(0.25, 1.0))
"""


def _file(tmp_path: Path, header: str) -> Path:
    path = tmp_path / "stack.py"
    path.write_text(STACK.format(header=textwrap.dedent(header)))
    return path


def test_a_declared_model_file_gets_its_own_moves_and_space(tmp_path: Path) -> None:
    path = _file(tmp_path, DECLARED)
    spec = spec_mod.load(str(path))
    assert spec.roles.depth == "blocks"
    # 8 px digits: conv3–conv8 read a receptive field larger than the image (as the toy
    # family's test works out by hand), so the tail is cut with the file's own depth knob.
    analysis = satadvisor.analyze(str(path), train=False, dataset="digits", resolution=8)
    efficiency = [r for r in analysis.recommendations if r.kind == "efficiency"]
    assert [r.changes for r in efficiency] == [{"blocks": 2}]
    assert derive_space(spec, resolution=8).choices["blocks"] == (2, 3, 4, 5, 6, 7, 8)


def test_an_undeclared_model_file_has_no_depth_move(tmp_path: Path) -> None:
    path = _file(tmp_path, "")
    spec = spec_mod.load(str(path))
    assert spec.roles is CONVENTIONAL
    analysis = satadvisor.analyze(str(path), train=False, dataset="digits", resolution=8)
    assert not any("blocks" in r.changes for r in analysis.recommendations)
    assert "blocks" not in derive_space(spec, resolution=8).choices


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (
            "KNOBS = {'depth': 'blocks'}",
            r"stack\.py: KNOBS is a dict, not a KnobRoles; write e\.g\.",
        ),
        (
            "from satadvisor.models import KnobRoles\nKNOBS = KnobRoles(depth='layers')",
            r"stack\.py: KNOBS names 'layers', which build_model does not take",
        ),
    ],
)
def test_a_bad_declaration_is_one_line(tmp_path: Path, header: str, match: str) -> None:
    with pytest.raises(ModelFileError, match=match) as info:
        spec_mod.load(str(_file(tmp_path, header)))
    assert "\n" not in str(info.value)
