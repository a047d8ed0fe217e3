"""Rules: findings from synthetic and published saturation profiles, recommendations on a local
VGG-like spec, built and measured (MACs, parameters, receptive fields)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from satadvisor import receptive
from satadvisor._flags import set_args
from satadvisor.cost import count_macs, count_parameters
from satadvisor.errors import ModelBuildError, UsageError
from satadvisor.receptive import LayerReceptiveField, ReceptiveFieldAnalysis
from satadvisor.rules import (
    Cost,
    Finding,
    Recommendation,
    RuleThresholds,
    evaluate,
    recommend,
    tail_layers,
    verdict,
)
from satadvisor.saturation._result import LayerSaturation

# Richter et al. (BMVC 2021), VGG16 on CIFAR-10 at 32 px, conv1..conv13.
VGG16 = [0.12, 0.35, 0.45, 0.52, 0.61, 0.55, 0.40, 0.17, 0.10, 0.06, 0.04, 0.03, 0.02]
# ResNet18 at 224 px: 0.06-0.46 everywhere, neighbours alternating, no trend at the end.
RESNET18 = [0.21, 0.46, 0.18, 0.40, 0.12, 0.33, 0.25, 0.44, 0.09, 0.38, 0.29]
RESNET18 += [0.06, 0.31, 0.42, 0.15, 0.36, 0.22, 0.27, 0.11, 0.30]


def conv_names(n: int) -> list[str]:
    return [f"features.conv{i}" for i in range(1, n + 1)]


def profile(values: Sequence[float], *, linear: Sequence[float] = ()) -> list[LayerSaturation]:
    """Conv layers conv1..convN (width 64), then Linear fc1.. layers."""
    layers = [
        LayerSaturation(name, "Conv2d", 64, 1000, v, max(1, round(v * 64)))
        for name, v in zip(conv_names(len(values)), values, strict=True)
    ]
    layers += [
        LayerSaturation(f"classifier.fc{i}", "Linear", 10, 1000, v, max(1, round(v * 10)))
        for i, v in enumerate(linear, 1)
    ]
    return layers


def rf_flagging(n: int, first_unproductive: int | None, *, resolution: int = 32) -> Any:
    """A hand-built analysis of n conv layers, unproductive from ``first_unproductive`` (1-based)."""
    layers = tuple(
        LayerReceptiveField(
            name=name,
            module_type="Conv2d",
            kernel_size=3,
            stride=1,
            r_min=3 + 8 * i,
            r_max=3 + 8 * i,
            jump=1,
            input_r_min=40,
            input_size=8,
            unproductive=first_unproductive is not None and i + 1 >= first_unproductive,
            critical=False,
        )
        for i, name in enumerate(conv_names(n))
    )
    return ReceptiveFieldAnalysis(resolution, True, layers, feasible_range=(8, 200))


def kinds(findings: Sequence[Finding]) -> list[str]:
    return [f.kind for f in findings]


# --------------------------------------------------------------------------- tail


def test_vgg16_profile_gives_the_published_tail_conv8_to_conv13() -> None:
    # High Linear layers after the convs would break a tail if they were read: they must not be.
    prof = profile(VGG16, linear=[0.9, 0.95])
    assert tail_layers(prof) == conv_names(13)[7:]
    (tail,) = [f for f in evaluate(prof, None) if f.kind == "tail"]
    assert tail.layers == tuple(conv_names(13)[7:])
    # Median of conv1..conv7, by hand: sorted 0.12 0.35 0.40 0.45 0.52 0.55 0.61 -> 0.45.
    assert tail.evidence["reference_median"] == pytest.approx(0.45)
    assert tail.message.startswith("conv8–conv13 (6 of 13 conv layers) form a tail")
    assert "0.17 → 0.02 against a median of 0.45" in tail.message
    assert not tail.predicted


@pytest.mark.parametrize(
    ("first", "agrees", "phrase"),
    [
        (8, True, "the receptive field agrees: conv8 is the first unproductive layer at 32 px."),
        (7, True, "agrees within one layer: conv7 is the first unproductive layer"),
        (9, True, "agrees within one layer: conv9"),
        (10, False, "does not agree: it flags conv10 as the first unproductive layer at 32 px."),
        (None, False, "does not agree: no layer is unproductive at 32 px."),
    ],
)
def test_tail_reports_whether_the_receptive_field_agrees(
    first: int | None, agrees: bool, phrase: str
) -> None:
    findings = evaluate(profile(VGG16, linear=[0.9, 0.95]), rf_flagging(13, first))
    tail = findings[0]
    assert tail.kind == "tail"
    assert tail.evidence["rf_agrees"] is agrees
    assert phrase in tail.message


def test_resnet18_at_224_has_no_tail_and_is_even() -> None:
    prof = profile(RESNET18, linear=[0.9])
    assert tail_layers(prof) == []
    assert kinds(evaluate(prof, None)) == ["even"]
    assert "no change needed" in evaluate(prof, None)[0].message


@pytest.mark.parametrize("values", [VGG16, RESNET18])
@pytest.mark.parametrize("scale", [0.3, 0.05, 1.7])
def test_tail_decision_does_not_change_with_the_scale_of_the_profile(
    values: list[float], scale: float
) -> None:
    assert tail_layers(profile([v * scale for v in values])) == tail_layers(profile(values))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(0.001, 1.0), min_size=3, max_size=20),
    st.integers(-8, 0),
)
def test_tail_decision_is_scale_invariant_for_any_profile(values: list[float], k: int) -> None:
    # Powers of two scale floats exactly, so no rounding can flip a comparison.
    scaled = [v * 2.0**k for v in values]
    assert tail_layers(profile(scaled)) == tail_layers(profile(values))


def test_tail_hand_computed_cases() -> None:
    # Falling profile: start 4 is the first whose prefix median (0.45) halved (0.225)
    # exceeds every later value (0.2, 0.1); start 2 (median 0.55) fails on 0.4, start 3 on 0.3.
    assert tail_layers(profile([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])) == conv_names(6)[4:]
    # One low last layer is scatter, not a tail ... unless one layer is allowed.
    single = profile([0.4, 0.5, 0.45, 0.5, 0.05])
    assert tail_layers(single) == []
    assert tail_layers(single, thresholds=RuleThresholds(min_tail=1)) == ["features.conv5"]
    # A tail needs min_prefix layers in front of it.
    assert tail_layers(profile([0.5, 0.05, 0.04])) == []
    assert tail_layers(profile([0.5, 0.05, 0.04]), thresholds=RuleThresholds(min_prefix=1)) == [
        "features.conv2",
        "features.conv3",
    ]


def test_an_mlp_profile_reads_every_layer_but_the_output_layer() -> None:
    layers = [
        LayerSaturation(f"fc{i}", "Linear", 64, 100, v, 1)
        for i, v in enumerate([0.5, 0.6, 0.55, 0.05, 0.04, 0.9], 1)
    ]
    assert tail_layers(layers) == ["fc4", "fc5"]


# --------------------------------------------------------------------------- other findings


def test_early_underuse_is_a_leading_run_of_near_zero_saturation() -> None:
    findings = evaluate(profile([0.01, 0.02, 0.35, 0.45, 0.5, 0.4, 0.38]), rf_flagging(7, None))
    assert kinds(findings) == ["early_underuse"]
    early = findings[0]
    assert early.layers == tuple(conv_names(2))
    assert early.evidence["reference_median"] == pytest.approx(0.40)  # median of conv3..conv7
    assert "conv1–conv2 (the first 2 of 7 conv layers) are nearly unused" in early.message
    assert "the 32 px input is larger than the network can use" in early.message
    # VGG16's conv1 (0.12 against a body median of 0.485) is ordinary.
    assert "early_underuse" not in kinds(evaluate(profile(VGG16), None))


def test_too_narrow_and_too_wide_outside_the_tail() -> None:
    narrow = evaluate(profile([0.3, 0.4, 0.97, 0.99, 0.45, 0.35, 0.4]), None)
    assert kinds(narrow) == ["too_narrow"]
    assert narrow[0].layers == ("features.conv3", "features.conv4")
    assert narrow[0].message.startswith("conv3–conv4 are saturated near 1 (0.97–0.99 ≥ 0.95)")
    wide = evaluate(profile([0.3, 0.02, 0.4, 0.45, 0.35, 0.4]), None)
    assert kinds(wide) == ["too_wide"]
    assert wide[0].layers == ("features.conv2",)
    assert "conv2 is nearly empty (0.02 ≤ 0.05)" in wide[0].message
    # VGG16's tail layers are below 0.05 too, but the tail explains them.
    assert kinds(evaluate(profile(VGG16), None)) == ["tail"]


def test_predicted_tail_without_training() -> None:
    (tail,) = evaluate(None, rf_flagging(13, 8))
    assert tail.kind == "tail" and tail.predicted
    assert tail.layers == tuple(conv_names(13)[7:])
    assert tail.message.startswith(
        "The receptive field predicts a tail: conv8–conv13 (6 of 13 conv layers) are "
        "unproductive at 32 px"
    )
    (even,) = evaluate([], rf_flagging(13, None))
    assert even.kind == "even" and even.predicted
    assert "feasible input range 8–200 px" in even.message
    assert evaluate(None, None) == []
    unsupported = ReceptiveFieldAnalysis(32, False, reason="custom op")
    assert evaluate(None, unsupported) == []


def test_an_unconfirmed_receptive_field_tail_is_reported_as_predicted() -> None:
    findings = evaluate(profile(RESNET18[:13]), rf_flagging(13, 11))
    assert kinds(findings) == ["tail"]
    assert findings[0].predicted
    assert findings[0].message.endswith("the measured saturation shows no tail.")


def test_findings_serialise_and_thresholds_validate() -> None:
    findings = evaluate(profile(VGG16), rf_flagging(13, 8))
    assert json.loads(json.dumps([f.to_dict() for f in findings]))[0]["kind"] == "tail"
    assert RuleThresholds().to_dict()["tail_ratio"] == 0.5
    with pytest.raises(UsageError, match="tail_ratio"):
        RuleThresholds(tail_ratio=0.0)
    with pytest.raises(UsageError, match="narrow"):
        RuleThresholds(wide=0.9, narrow=0.8)


def test_unnamed_layers_are_labelled_by_type_and_number() -> None:
    layers = [
        LayerSaturation(name, "Conv2d", 64, 100, v, 1)
        for name, v in zip(
            ["features.0", "features.2", "features.4", "features.6"],
            [0.5, 0.55, 0.05, 0.04],
            strict=True,
        )
    ]
    (tail,) = evaluate(layers, None)
    # a bare index says nothing: the type and its number, with the qualified name
    assert tail.message.startswith(
        "Conv2d #3 (features.4)–Conv2d #4 (features.6) (2 of 4 conv layers)"
    )


# --------------------------------------------------------------------------- a local spec


def build_vgg(
    depth: int = 8,
    kernel_size: int = 3,
    width: int = 8,
    downsamplings: int = 3,
    *,
    num_classes: int,
    in_channels: int,
) -> nn.Module:
    """``depth`` convs, a 2x2 max-pool after conv (j+1)*depth//(downsamplings+1), j < ds."""
    if depth < 1 or not 0 <= downsamplings < depth:
        raise ModelBuildError(f"bad depth={depth}/downsamplings={downsamplings}; fix the knobs")
    pools = {(j + 1) * depth // (downsamplings + 1) for j in range(downsamplings)}
    layers: list[nn.Module] = []
    channels = in_channels
    for i in range(1, depth + 1):
        layers += [nn.Conv2d(channels, width, kernel_size, padding=kernel_size // 2), nn.ReLU()]
        channels = width
        if i in pools:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class FakeSpec:
    build: Callable[..., nn.Module] | None
    knobs: dict[str, Any]
    search_space: dict[str, tuple[Any, ...]] | None = None
    model: nn.Module | None = None

    @property
    def optimisable(self) -> bool:
        return self.build is not None

    def create(self, *, num_classes: int, in_channels: int, **knobs: Any) -> nn.Module:
        if self.build is None:
            assert self.model is not None
            return self.model
        unknown = set(knobs) - set(self.knobs)
        assert not unknown, unknown
        return self.build(
            **{**self.knobs, **knobs}, num_classes=num_classes, in_channels=in_channels
        )


VGG_KNOBS = {"depth": 8, "kernel_size": 3, "width": 8, "downsamplings": 3}


def reference_rf(model: nn.Module, resolution: int, *, in_channels: int) -> ReceptiveFieldAnalysis:
    """Independent receptive-field reference for plain nn.Sequential CNNs (DESIGN.md rules)."""
    r, j, size = 1, 1, resolution
    layers = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            bad = r > resolution or size <= k
            layers.append(
                LayerReceptiveField(
                    name, "Conv2d", k, s, r + (k - 1) * j, None, j * s, r, size,
                    bad, r + (k - 1) * j > resolution and not bad,
                )
            )  # fmt: skip
            r, j, size = r + (k - 1) * j, j * s, (size + 2 * p - k) // s + 1
        elif isinstance(m, nn.MaxPool2d):
            k = int(m.kernel_size)  # type: ignore[arg-type]
            r, j, size = r + (k - 1) * j, j * k, size // k
    return ReceptiveFieldAnalysis(resolution, True, tuple(layers))


def reference_smallest(
    model: nn.Module,
    *,
    in_channels: int,
    candidates: Sequence[int] | None = None,
    max_resolution: int = 1024,
) -> int | None:
    for res in candidates or range(1, max_resolution + 1):
        if not reference_rf(model, res, in_channels=in_channels).unproductive:
            return res
    return None


@pytest.fixture
def reference_receptive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recommendation logic against the reference oracle, independent of receptive.py."""
    monkeypatch.setattr(receptive, "analyze", reference_rf, raising=False)
    monkeypatch.setattr(
        receptive, "smallest_productive_resolution", reference_smallest, raising=False
    )


def parse_set_args(text: str) -> dict[str, Any]:
    words = text.split()
    assert words[::2] == ["--set"] * (len(words) // 2)
    out = {}
    for item in words[1::2]:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def advise(spec: FakeSpec, findings: Sequence[Finding], *, resolution: int = 32) -> list[Any]:
    return recommend(
        findings,
        spec=spec,
        knobs=dict(spec.knobs),
        resolution=resolution,
        num_classes=10,
        in_channels=3,
        rf=reference_rf(spec.create(num_classes=10, in_channels=3), resolution, in_channels=3),
    )


def test_the_local_spec_has_a_receptive_field_tail_at_32px() -> None:
    # By hand: pools after conv2, 4, 6 -> conv7 reads r_min 36 > 32: conv7-conv8 unproductive.
    model = build_vgg(num_classes=10, in_channels=3)
    rf = reference_rf(model, 32, in_channels=3)
    assert rf.unproductive == ["15", "17"]  # Sequential indices of conv7 and conv8
    assert [layer.input_r_min for layer in rf.layers] == [1, 3, 6, 10, 16, 24, 36, 52]


@pytest.mark.usefixtures("reference_receptive")
def test_tail_recommendations_on_the_local_vgg() -> None:
    spec = FakeSpec(build_vgg, VGG_KNOBS)
    findings = evaluate(
        None, reference_rf(build_vgg(num_classes=10, in_channels=3), 32, in_channels=3)
    )
    recs = advise(spec, findings)
    by_title = {r.title: r for r in recs}
    assert [r.kind for r in recs] == ["efficiency", "performance", "performance", "performance"]

    eff = recs[0]
    # Tail of 2 of 8 convs -> at most 6 convs: depth 6 (ints descending, first fit).
    assert eff.changes == {"depth": 6}
    assert eff.knobs == {**VGG_KNOBS, "depth": 6}
    base_macs = count_macs(build_vgg(num_classes=10, in_channels=3), in_channels=3, resolution=32)
    assert eff.cost.macs == count_macs(
        build_vgg(**eff.knobs, num_classes=10, in_channels=3), in_channels=3, resolution=32
    )
    assert eff.cost.macs < base_macs and eff.cost.macs_ratio < 1.0
    assert set_args(eff.settings) == "--set depth=6"

    # Performance: downsamplings 3 -> 2 leaves conv8 unproductive (1 of 2: offered first as the
    # one-step move), 1 is the mildest fix; the baseline's conv8 reads r_min 52, so 52 px is
    # the smallest productive resolution.
    assert [r.title for r in recs[1:]] == [
        "Slow the receptive-field growth: downsamplings 3 → 2",
        "Slow the receptive-field growth: downsamplings 3 → 1",
        "Raise the resolution: 32 → 52 px",
    ]
    assert recs[1].unproductive_after == 1 and "1 of the 2 unproductive" in recs[1].rationale
    for rec in recs:
        assert set(rec.changes) <= set(VGG_KNOBS) | {"resolution"}
        assert parse_set_args(set_args(rec.settings)) == rec.changes
        model = build_vgg(**rec.knobs, num_classes=10, in_channels=3)
        assert rec.cost.macs == count_macs(model, in_channels=3, resolution=rec.resolution)
        assert rec.cost.params == count_parameters(model)
        if rec.kind == "performance" and rec is not recs[1]:
            assert rec.unproductive_after == 0
            assert reference_rf(model, rec.resolution, in_channels=3).unproductive == []
    text = verdict(findings, recs)
    assert text.startswith(
        "The receptive field predicts a tail: Conv2d #7 (15)–Conv2d #8 (17) (2 of 8 conv layers)"
    )
    assert text.endswith(
        f"Suggested: remove the tail: depth 8 → 6 ({eff.cost.macs_ratio:.2f}× MACs) — "
        "--set depth=6; 3 more below."
    )
    assert by_title["Raise the resolution: 32 → 52 px"].cost.macs_ratio == pytest.approx(
        count_macs(build_vgg(num_classes=10, in_channels=3), in_channels=3, resolution=52)
        / base_macs
    )


@pytest.mark.usefixtures("reference_receptive")
def test_findings_and_recommendations_read_back_from_their_json_form() -> None:
    spec = FakeSpec(build_vgg, VGG_KNOBS)
    rf = reference_rf(build_vgg(num_classes=10, in_channels=3), 32, in_channels=3)
    measured = evaluate(profile([0.3, 0.4, 0.45, 0.5, 0.4, 0.35, 0.05, 0.03]), rf)
    provisional = evaluate(profile([0.3, 0.4, 0.45, 0.5, 0.4, 0.35, 0.05, 0.03]), rf,
                           unsettled="still moving")  # fmt: skip
    findings = [*evaluate(None, rf), *measured, *provisional]
    assert {f.basis for f in findings} == {"measured", "receptive_field"}
    assert any(f.provisional == "still moving" for f in findings)
    for f in findings:
        assert Finding.from_dict(json.loads(json.dumps(f.to_dict()))) == f
    recs = advise(spec, measured)
    assert len(recs) >= 3
    for rec in recs:
        d = json.loads(json.dumps(rec.to_dict()))
        assert parse_set_args(d["set_args"]) == rec.changes  # for readers of analysis.json
        assert Recommendation.from_dict(d) == rec
    # A move on another model: the command line applies its pins there, not its changes.
    cost = Cost(macs=10, params=2, macs_ratio=0.5, params_ratio=0.25)
    move = Recommendation(
        "efficiency", "Remove the tail in the vgg family", {"depth": 7},
        {"depth": 7, "width": 64}, 32, "why", cost, 0, "vgg", {"depth": 7, "width": 64},
    )  # fmt: skip
    d = json.loads(json.dumps(move.to_dict()))
    assert parse_set_args(d["set_args"]) == {"depth": 7, "width": 64} == move.settings
    assert Recommendation.from_dict(d) == move and Cost.from_dict(d["cost"]) == cost
    hand = Recommendation("performance", "by hand", {}, dict(VGG_KNOBS), 32, "edit the code")
    assert hand.to_dict()["set_args"] == "" and Recommendation.from_dict(hand.to_dict()) == hand


@pytest.mark.usefixtures("reference_receptive")
def test_search_space_values_are_preferred_and_only_exposed_knobs_change() -> None:
    def fixed_pools(depth: int = 8, kernel_size: int = 5, **kw: Any) -> nn.Module:
        return build_vgg(depth, kernel_size, 8, 3, **kw)

    space = {"depth": (4, 8), "kernel_size": (3, 5), "resolution": (16, 32, 64, 128)}
    spec = FakeSpec(fixed_pools, {"depth": 8, "kernel_size": 5}, space)
    model = spec.create(num_classes=10, in_channels=3)
    recs = advise(spec, evaluate(None, reference_rf(model, 32, in_channels=3)))
    assert recs[0].kind == "efficiency"
    assert recs[0].changes == {"depth": 4}  # 6 would fit, but the search space says 4 or 8
    for rec in recs:
        assert set(rec.changes) <= {"depth", "kernel_size", "resolution"}
    resolution = [r for r in recs if "resolution" in r.changes]
    assert [r.changes for r in resolution] == [{"resolution": 128}]  # from the search space
    assert set_args(resolution[0].settings) == "--set resolution=128"


def build_stem(
    depth: int = 4,
    stem_stride: int = 2,
    stem_pool: bool = True,
    *,
    num_classes: int,
    in_channels: int,
) -> nn.Module:
    """A ResNet-like stem (3x3 conv with stride, optional 2x2 max-pool), then ``depth`` convs."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 8, 3, stem_stride, 1), nn.ReLU()]
    layers += [nn.MaxPool2d(2)] if stem_pool else []
    for _ in range(depth):
        layers += [nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes)]
    return nn.Sequential(*layers)


@pytest.mark.usefixtures("reference_receptive")
def test_stem_stride_and_stem_pool_are_receptive_field_moves() -> None:
    # At 16 px, by hand: stem r=3 j=2, pool r=5 j=4, convs read 5, 13, 21, 29: the last two
    # are unproductive. Stride 1 gives inputs 4, 8, 12, 16 (16 is not > 16); no pool 3, 7, 11, 15.
    spec = FakeSpec(build_stem, {"depth": 4, "stem_stride": 2, "stem_pool": True})
    model = spec.create(num_classes=10, in_channels=3)
    assert [x.input_r_min for x in reference_rf(model, 16, in_channels=3).layers] == [
        1, 5, 13, 21, 29,
    ]  # fmt: skip
    recs = advise(spec, evaluate(None, reference_rf(model, 16, in_channels=3)), resolution=16)
    performance = [r.changes for r in recs if r.kind == "performance"]
    assert performance[:2] == [{"stem_stride": 1}, {"stem_pool": False}]
    assert parse_set_args("--set stem_pool=false") == {"stem_pool": False}
    for rec in recs:
        assert parse_set_args(set_args(rec.settings)) == rec.changes
        if rec.kind == "performance":
            built = spec.create(num_classes=10, in_channels=3, **rec.knobs)
            assert reference_rf(built, rec.resolution, in_channels=3).unproductive == []


@pytest.mark.usefixtures("reference_receptive")
def test_width_recommendations_double_or_halve_the_width() -> None:
    spec = FakeSpec(build_vgg, {**VGG_KNOBS, "depth": 4, "downsamplings": 1})
    base = spec.create(num_classes=10, in_channels=3)
    narrow = advise(spec, evaluate(profile([0.3, 0.97, 0.99, 0.4]), None))
    assert [(r.kind, r.changes) for r in narrow] == [("width", {"width": 16})]
    wide = advise(spec, evaluate(profile([0.3, 0.02, 0.03, 0.4]), None))
    assert [(r.kind, r.changes) for r in wide] == [("width", {"width": 4})]
    wider = build_vgg(**narrow[0].knobs, num_classes=10, in_channels=3)
    assert narrow[0].cost.params == count_parameters(wider) > count_parameters(base)
    assert wide[0].cost.params_ratio < 1.0


@pytest.mark.usefixtures("reference_receptive")
def test_early_underuse_halves_the_resolution_toward_the_productive_floor() -> None:
    # depth 4, 2 pools (after conv1, conv2): conv4 reads r_min 18 -> productive from 18 px.
    spec = FakeSpec(build_vgg, {**VGG_KNOBS, "depth": 4, "downsamplings": 2})
    findings = evaluate(profile([0.01, 0.4, 0.45, 0.5]), None)
    assert kinds(findings) == ["early_underuse"]
    (rec,) = advise(spec, findings, resolution=64)
    assert (rec.kind, rec.changes, rec.resolution) == ("resolution", {"resolution": 32}, 32)
    model = spec.create(num_classes=10, in_channels=3)
    assert rec.cost.macs == count_macs(model, in_channels=3, resolution=32)
    assert rec.cost.macs_ratio == pytest.approx(
        rec.cost.macs / count_macs(model, in_channels=3, resolution=64)
    )
    assert "cannot be computed without training" in rec.rationale
    # At 24 px halving would reach 12 px, below the productive floor: 18 px it is.
    (low,) = advise(spec, findings, resolution=24)
    assert low.changes == {"resolution": 18} and low.unproductive_after == 0


@pytest.mark.usefixtures("reference_receptive")
def test_even_findings_recommend_keeping_the_model() -> None:
    spec = FakeSpec(build_vgg, VGG_KNOBS)
    findings = evaluate(profile(RESNET18[:8]), None)
    (rec,) = advise(spec, findings)
    assert rec.kind == "none" and rec.changes == {} and rec.settings == {}
    assert rec.cost.macs_ratio == 1.0
    assert verdict(findings, [rec]).endswith("no change needed.")


@pytest.mark.usefixtures("reference_receptive")
def test_a_measured_tail_the_receptive_field_does_not_see_gets_unverified_moves() -> None:
    # depth 4, one pool after conv2: conv4 reads r_min 10 at 32 px, nothing is unproductive.
    spec = FakeSpec(build_vgg, {**VGG_KNOBS, "depth": 4, "downsamplings": 1})
    model = spec.create(num_classes=10, in_channels=3)
    rf = reference_rf(model, 32, in_channels=3)
    assert rf.unproductive == []
    findings = evaluate(profile([0.4, 0.5, 0.1, 0.05]), rf)
    assert findings[0].kind == "tail" and findings[0].evidence["rf_agrees"] is False
    recs = advise(spec, findings)
    assert [(r.kind, r.changes) for r in recs] == [
        ("efficiency", {"depth": 2}),  # 4 convs - 2 tail layers
        ("performance", {"downsamplings": 0}),
    ]
    assert "not a verified fix" in recs[1].rationale
    assert recs[1].cost.macs_ratio > 1.0  # no pooling: every conv at 32 px


@pytest.mark.usefixtures("reference_receptive")
def test_candidates_that_fail_to_build_are_skipped() -> None:
    def picky(depth: int = 8, **kw: Any) -> nn.Module:
        if depth != 8:
            raise ModelBuildError("only depth 8 builds; fix the knob")
        return build_vgg(depth, **kw)

    spec = FakeSpec(picky, {"depth": 8, "kernel_size": 3})
    model = spec.create(num_classes=10, in_channels=3)
    recs = advise(spec, evaluate(None, reference_rf(model, 32, in_channels=3)))
    assert [r.kind for r in recs] == ["performance"]
    assert recs[0].changes == {"resolution": 52}


@pytest.mark.usefixtures("reference_receptive")
def test_a_fixed_model_gets_changes_to_make_by_hand() -> None:
    model = build_vgg(num_classes=10, in_channels=3)
    spec = FakeSpec(None, {}, model=model)
    findings = evaluate(profile([0.3, 0.4, 0.45, 0.5, 0.4, 0.35, 0.05, 0.03]), None)
    recs = advise(spec, findings)
    assert [r.kind for r in recs] == ["efficiency", "performance"]
    for rec in recs:
        assert rec.changes == {} and rec.cost is None and rec.settings == {}
    assert "by hand" in recs[0].title


@pytest.mark.usefixtures("reference_receptive")
def test_recommend_leaves_the_global_rng_alone() -> None:
    spec = FakeSpec(build_vgg, VGG_KNOBS)
    rf = reference_rf(build_vgg(num_classes=10, in_channels=3), 32, in_channels=3)
    findings = evaluate(None, rf)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    recs = recommend(
        findings, spec=spec, knobs=VGG_KNOBS, resolution=32, num_classes=10, in_channels=3, rf=rf
    )
    assert len(recs) == 4  # models were built
    assert torch.equal(torch.rand(3), expected)


def test_verdict_names_the_main_finding_and_the_top_move() -> None:
    findings = evaluate(profile(VGG16), rf_flagging(13, 8))
    assert verdict([], []).startswith("Nothing to judge")
    text = verdict(findings, [])
    assert text.startswith("conv8–conv13 (6 of 13 conv layers) form a tail")
    assert "No change of the model's knobs" in text


# --------------------------------------------------------------------------- real receptive.py


def test_performance_moves_remove_the_unproductive_layers_per_receptive_analyze() -> None:
    spec = FakeSpec(build_vgg, VGG_KNOBS)
    model = spec.create(num_classes=10, in_channels=3)
    rf = receptive.analyze(model, 32, in_channels=3)
    assert len(rf.unproductive) == 2  # conv7, conv8 (hand-computed above)
    findings = evaluate(None, rf)
    recs = recommend(
        findings, spec=spec, knobs=VGG_KNOBS, resolution=32, num_classes=10, in_channels=3, rf=rf
    )
    assert recs[0].kind == "efficiency" and recs[0].changes == {"depth": 6}
    performance = [r for r in recs if r.kind == "performance"]
    # The same moves as against the reference oracle above; the one-step move leaves conv8.
    assert [r.changes for r in performance] == [
        {"downsamplings": 2},
        {"downsamplings": 1},
        {"resolution": 52},
    ]
    step = spec.create(num_classes=10, in_channels=3, **performance[0].knobs)
    assert len(receptive.analyze(step, 32, in_channels=3).unproductive) == 1
    for rec in performance[1:]:
        built = spec.create(num_classes=10, in_channels=3, **rec.knobs)
        after = receptive.analyze(built, rec.resolution, in_channels=3)
        assert after.unproductive == [] and rec.unproductive_after == 0
        assert math.isfinite(rec.cost.macs_ratio)


def test_resolution_is_not_raised_past_the_images_own_resolution() -> None:
    spec = FakeSpec(build_vgg, dict(VGG_KNOBS))
    rf = reference_rf(spec.create(num_classes=10, in_channels=3), 32, in_channels=3)
    findings = evaluate(None, rf)
    common = dict(
        findings=findings, spec=spec, knobs=dict(spec.knobs), resolution=32, num_classes=10,
        in_channels=3, rf=rf,
    )  # fmt: skip
    free = recommend(**common)  # type: ignore[arg-type]
    assert [r.changes for r in free if "resolution" in r.changes] == [{"resolution": 52}]
    capped = recommend(**common, source_resolution=32)  # type: ignore[arg-type]
    assert not [r for r in capped if "resolution" in r.changes]
    # the slower-growth move stays: the images' size caps only the upsampling
    assert [r for r in capped if r.kind == "performance"]


def test_unevenly_decaying_measured_tail_starts_at_the_drop() -> None:
    # Measured: VGG16-style, width 32, Fashion-MNIST at 32 px, 5 proxy epochs
    # (benchmarks/results/tail_removal_width32_profile.json). The drop is at conv8, where the
    # receptive field puts the border too; conv9 (0.113) sits just above half the median (0.109).
    values = [
        0.094,
        0.094,
        0.125,
        0.219,
        0.227,
        0.359,
        0.352,
        0.094,
        0.113,
        0.094,
        0.027,
        0.027,
        0.016,
    ]
    assert [n.split(".")[-1] for n in tail_layers(profile(values))] == [
        f"conv{i}" for i in range(8, 14)
    ]
    # a run whose later layer climbs back to the earlier level is no tail
    back_up = [0.3, 0.4, 0.45, 0.5, 0.45, 0.1, 0.12, 0.48]
    assert tail_layers(profile(back_up)) == []


# --------------------------------------------------------------------------- built-in vgg


def _vgg16_stack(**knobs: Any) -> tuple[FakeSpec, dict[str, Any]]:
    """The built-in vgg family at VGG16's conv stack (width 8 keeps it fast)."""
    from satadvisor.models import create_model, model_knobs

    full = {**model_knobs("vgg"), "depth": 13, "downsamplings": 5, "width": 8, **knobs}
    return FakeSpec(lambda **k: create_model("vgg", **k), full), full


def _vgg16_performance(spec: FakeSpec, knobs: dict[str, Any]) -> list[Any]:
    rf = receptive.analyze(spec.create(num_classes=10, in_channels=3), 32, in_channels=3)
    assert len(rf.unproductive) == 6  # conv8-conv13 (DESIGN.md calibration)
    recs = recommend(
        evaluate(None, rf), spec=spec, knobs=knobs, resolution=32, num_classes=10,
        in_channels=3, rf=rf, source_resolution=32,
    )  # fmt: skip
    return [r for r in recs if r.kind == "performance"]


def test_vgg16_at_32px_performance_move_removes_the_first_pool_and_keeps_the_channels() -> None:
    spec, knobs = _vgg16_stack()
    step, fix = _vgg16_performance(spec, knobs)
    # One pool fewer (the earliest), the 5 channel stages pinned: conv10-conv13 stay unproductive.
    assert step.changes == {"downsamplings": 4, "stages": 5}
    assert set_args(step.settings) == "--set downsamplings=4 --set stages=5"
    assert step.unproductive_after == 4
    assert step.title == "Slow the receptive-field growth: downsamplings 5 → 4"
    # The verified fix needs three pools fewer: conv1-conv10 at full resolution.
    assert fix.changes == {"downsamplings": 2, "stages": 5} and fix.unproductive_after == 0
    base = spec.create(num_classes=10, in_channels=3)
    base_params = count_parameters(base)
    base_macs = count_macs(base, in_channels=3, resolution=32)
    for rec in (step, fix):
        built = spec.create(num_classes=10, in_channels=3, **rec.knobs)
        convs = [m.out_channels for m in built.modules() if isinstance(m, nn.Conv2d)]
        assert convs == [m.out_channels for m in base.modules() if isinstance(m, nn.Conv2d)]
        assert rec.cost.params == count_parameters(built)
        assert abs(rec.cost.params_ratio - 1.0) < 0.03  # pools carry no parameters
        assert rec.cost.params == base_params
        assert rec.cost.macs == count_macs(built, in_channels=3, resolution=32) > base_macs
    # Each removed early pool quadruples the compute of the layers after it, roughly.
    assert 3.0 < step.cost.macs_ratio < 4.0 < fix.cost.macs_ratio


def test_explicit_stages_are_not_pinned_again() -> None:
    spec, knobs = _vgg16_stack(stages=5)
    step, fix = _vgg16_performance(spec, knobs)
    assert step.changes == {"downsamplings": 4} and fix.changes == {"downsamplings": 2}
    assert step.cost.params_ratio == 1.0
