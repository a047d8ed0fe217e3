"""What a person reads: layer labels, advice for models whose code is not theirs, no sentence
said twice (issue 15)."""

from __future__ import annotations

import html
import re
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from satadvisor import models
from satadvisor._flags import set_args
from satadvisor.advisor import Analysis, analyze
from satadvisor.cli import format_summary
from satadvisor.config import TrainConfig
from satadvisor.report import render_analysis
from satadvisor.report._analysis import with_commands
from satadvisor.rules import short_names

pytestmark = pytest.mark.usefixtures("one_thread")

SEQUENTIAL_MODEL = """
    import torch.nn as nn

    DATASET = "digits"
    RESOLUTION = 8

    def build_model(width: int = 8, *, num_classes: int, in_channels: int) -> nn.Module:
        layers, c = [], in_channels
        for _ in range(6):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        return nn.Sequential(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(c, num_classes))
"""


def _model_file(tmp_path: Path) -> Path:
    path = tmp_path / "seqnet.py"
    path.write_text(textwrap.dedent(SEQUENTIAL_MODEL))
    return path


# ----------------------------------------------------------------------------- labels


def test_unnamed_layers_get_type_and_number_named_ones_keep_their_name() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(2, 2, 3), nn.Linear(2, 2)),
        nn.Conv2d(2, 2, 1),
    )
    layers = [
        (n, type(m).__name__)
        for n, m in net.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    names = [n for n, _ in layers]
    labels = short_names(names, [t for _, t in layers])
    assert labels == {
        "0": "Conv2d #1 (0)",
        "2.0": "Conv2d #2 (2.0)",
        "2.1": "Linear #1 (2.1)",
        "3": "Conv2d #3 (3)",
    }
    # named layers: the last component where unique, else the qualified name
    named = ["features.conv1", "layer1.0.conv2", "layer2.0.conv2", "fc"]
    assert short_names(named, ["Conv2d", "Conv2d", "Conv2d", "Linear"]) == {
        "features.conv1": "conv1",
        "layer1.0.conv2": "layer1.0.conv2",
        "layer2.0.conv2": "layer2.0.conv2",
        "fc": "fc",
    }


def test_sequential_children_are_named_by_type_in_verdict_terminal_and_report(
    tmp_path: Path,
) -> None:
    analysis = analyze(str(_model_file(tmp_path)), train=False)
    d = with_commands(analysis.to_dict())
    convs = [row for row in d["layers"] if row["type"] == "Conv2d"]
    # the JSON keeps the real qualified names; the labels number the convs in forward order
    assert [row["name"] for row in convs] == [f"0.{3 * i}" for i in range(6)]
    assert [row["label"] for row in convs] == [f"Conv2d #{i + 1} (0.{3 * i})" for i in range(6)]
    assert d["layers"][-1]["label"] == "Linear #1 (3)"
    tail = next(f for f in analysis.findings if f.kind == "tail")
    first = next(row["label"] for row in d["layers"] if row["name"] == tail.layers[0])
    assert first in analysis.verdict and f"{first}'s inputs" in analysis.verdict
    assert not re.search(r"(^|[\s:])0\.\d+'s", analysis.verdict)  # no bare "0.12's inputs"
    summary = format_summary(analysis.record(), tmp_path / "index.html")
    assert all(row["label"] in summary for row in d["layers"])
    page = html.unescape(render_analysis(d))
    assert all(f">{row['label']}" in page for row in convs)


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("preset", "family_source"),
    [
        ("vgg11", "vgg11"),
        ("vgg13", "vgg13"),
        ("vgg16", "vgg16"),
        ("resnet18", "resnet18"),
        ("resnet18_cifar", "resnet18_cifar"),
    ],
)
def test_a_presets_family_builds_its_layers(preset: str, family_source: str) -> None:
    """The declared family knobs rebuild the preset's conv stack exactly (same layers, same
    shapes, same names); only the heads may differ, as the note says."""
    knobs = models.model_knobs(preset)
    member = models.family_member(f"builtin:{family_source}", knobs)
    assert member is not None
    a = models.create_model(preset, num_classes=10, in_channels=3)
    b = models.create_model(member.family, num_classes=10, in_channels=3, **member.knobs)

    def convs(net: nn.Module) -> list[tuple[str, tuple[int, ...], Any, Any]]:
        return [
            (n, tuple(m.weight.shape), m.stride, m.padding)
            for n, m in net.named_modules()
            if isinstance(m, nn.Conv2d)
        ]

    assert convs(a) == convs(b)
    same_head = sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    assert same_head == (member.note == "")


def test_vgg19s_family_member_says_how_it_differs() -> None:
    member = models.family_member("vgg19", models.model_knobs("vgg19"))
    assert member is not None and "3-3-3-3-4 instead of 2-2-4-4-4" in member.note


def test_torchvision_resnet18_advice_is_the_resnet_familys_depth() -> None:
    analysis = analyze("torchvision:resnet18", train=False, dataset="synthetic", resolution=32)
    moves = analysis.recommendations
    assert moves and not any("in its code" in r.rationale for r in moves)
    depth = next(r for r in moves if "depth" in r.changes)
    assert depth.model == "resnet" and depth.changes["depth"] < 18
    # the command analyses the family with every knob that makes it torchvision's resnet18
    for pin in ("stem_kernel=7", "stem_stride=2", "stem_pool=true"):
        assert f"--set {pin}" in set_args(depth.settings)
    tv = models.family_member("torchvision:resnet18", {})
    assert tv is not None
    import torchvision

    ours = models.create_model("resnet", num_classes=10, in_channels=3, **tv.knobs)
    theirs = torchvision.models.resnet18(weights=None, num_classes=10)
    assert [tuple(p.shape) for p in ours.parameters()] == [
        tuple(p.shape) for p in theirs.parameters()
    ]


def test_a_library_model_without_a_family_is_not_told_to_edit_its_code() -> None:
    analysis = analyze("torchvision:squeezenet1_1", train=False, dataset="synthetic", resolution=32)
    by_hand = [r for r in analysis.recommendations if r.kind == "efficiency" and not r.changes]
    assert by_hand, [r.title for r in analysis.recommendations]
    assert "copy its definition into a model file" in by_hand[0].rationale
    assert "in a copy of its code" in by_hand[0].title
    assert not any("layers in its code." in r.rationale for r in analysis.recommendations)


def test_the_try_command_of_a_family_move_analyses_the_family() -> None:
    analysis = analyze("vgg16", train=False, dataset="synthetic", resolution=32)
    d = analysis.to_dict()
    d["command"] = "satadvisor analyze vgg16 --dataset synthetic --set width=32 --resolution 32"
    rec = next(r for r in with_commands(d)["recommendations"] if r["model"] == "vgg")
    assert rec["command"].startswith("satadvisor analyze vgg --dataset synthetic ")
    assert "--set width=32 " not in rec["command"]  # vgg16's pins are replaced by the family's
    assert rec["command"].endswith(f"{rec['set_args']} --name vgg16-try1")


# ----------------------------------------------------------------------------- repetition

QUICK = TrainConfig(epochs=2, batch_size=64, device="cpu")


def _sentences(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", text)
    return [s.strip() for s in re.split(r"(?<=[.:;!?])\s+(?=[A-Z])", text) if s.strip()]


def _visible_text(page: str) -> str:
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "\n", page))


def _repeated(text: str, *, longer_than: int = 40) -> list[str]:
    counts = Counter(s for s in _sentences(text) if len(s) > longer_than)
    return [s for s, n in counts.items() if n > 1]


@pytest.fixture(scope="module")
def analyses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Analysis]:
    tmp = tmp_path_factory.mktemp("models")
    return {
        "default, trained": analyze(config=QUICK, subset=400),
        "default, no training": analyze(train=False),
        "vgg16 preset": analyze("vgg16", train=False, dataset="synthetic", resolution=32),
        "resnet18_cifar preset": analyze("resnet18_cifar", train=False, resolution=16),
        "sequential file": analyze(str(_model_file(tmp)), train=False),
        "sequential file, trained": analyze(str(_model_file(tmp)), config=QUICK, subset=300),
    }


@pytest.mark.integration
def test_no_sentence_is_said_twice_on_the_page_or_the_terminal(
    analyses: dict[str, Analysis], tmp_path: Path
) -> None:
    for name, analysis in analyses.items():
        d = with_commands(analysis.to_dict())
        assert analysis.recommendations, name
        page = _visible_text(render_analysis(d))
        assert _repeated(page) == [], name
        assert _repeated(format_summary(analysis.record(), tmp_path / "index.html")) == [], name
        # every finding's message is still on the page once (in the verdict or the list)
        for f in analysis.findings:
            assert page.count(f.message[1:]) == 1, (name, f.message)


def test_the_repetition_check_finds_a_repeated_sentence() -> None:
    said = "The receptive field predicts a tail: conv6–conv8 are unproductive at 16 px."
    assert _repeated(f"{said} Suggested: remove it. {said}") == [said]
