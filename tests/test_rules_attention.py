"""Rules on a model with attention: the verdict reads the Linear blocks, not only the convs."""

from __future__ import annotations

import pytest
import torchvision

from satadvisor.receptive import ReceptiveFieldAnalysis, analyze
from satadvisor.rules import evaluate, pattern, tail_layers
from satadvisor.saturation._result import LayerSaturation


@pytest.fixture(scope="module")
def vit_rf() -> ReceptiveFieldAnalysis:
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    )
    return analyze(vit, 32)


def profile(rf: ReceptiveFieldAnalysis, values: list[float]) -> list[LayerSaturation]:
    assert len(values) == len(rf.layers)  # conv_proj, 2 × (mlp.0, mlp.3), heads.head
    return [
        LayerSaturation(x.name, x.module_type, 32, 1000, v, max(1, round(v * 32)))
        for x, v in zip(rf.layers, values, strict=True)
    ]


def test_even_verdict_counts_the_linear_blocks_and_says_what_the_field_covers(
    vit_rf: ReceptiveFieldAnalysis,
) -> None:
    (finding,) = evaluate(profile(vit_rf, [0.30, 0.40, 0.35, 0.45, 0.38, 0.20]), vit_rf)
    assert finding.kind == "even"
    # The feature layers: conv_proj and the four MLP Linears (the head is the output).
    assert finding.layers == tuple(x.name for x in vit_rf.layers[:-1])
    assert "over the 5 layers (0.30–0.45" in finding.message
    assert "does not apply to the 5 layers after attention (it covers only conv_proj)" in (
        finding.message
    )
    assert "unproductive" not in finding.message  # no receptive-field verdict is quoted


def test_a_tail_in_the_linear_blocks_is_found(vit_rf: ReceptiveFieldAnalysis) -> None:
    values = [0.40, 0.45, 0.50, 0.05, 0.04, 0.30]
    found = evaluate(profile(vit_rf, values), vit_rf)
    tail = next(f for f in found if f.kind == "tail")
    assert tail.layers == (vit_rf.layers[3].name, vit_rf.layers[4].name)
    assert "does not apply to attention" in tail.message and tail.evidence["rf_agrees"] is None
    # Without the receptive field's word on attention, only the single conv would be read.
    assert tail_layers(profile(vit_rf, values), rf=vit_rf) == list(tail.layers)
    assert pattern(profile(vit_rf, values)) == ((), ())


def test_without_a_profile_nothing_is_predicted_for_attention(
    vit_rf: ReceptiveFieldAnalysis,
) -> None:
    assert evaluate(None, vit_rf) == []
