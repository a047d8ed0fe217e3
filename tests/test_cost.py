"""count_macs / count_parameters against MAC and parameter counts worked out by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from satadvisor.cost import count_macs, count_parameters


def conv_macs(c_in: int, c_out: int, k: int, positions: int, groups: int = 1) -> int:
    """MACs of a 2-d convolution: one (c_in/groups)·k² dot product per output value."""
    return c_out * (c_in // groups) * k * k * positions


def test_conv_then_linear_matches_the_hand_count() -> None:
    # Conv2d(3, 8, 3, padding=1) keeps 8×8: 8·3·9·64 MACs; Linear(512, 10): 512·10 MACs.
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    )
    assert count_macs(model, in_channels=3, resolution=8) == 8 * 3 * 9 * 64 + 512 * 10 == 18944


def test_stride_groups_and_bias_free_layers_match_the_hand_count() -> None:
    # 9×9 -> Conv(3→4, k3, s2, no padding): 4×4 outputs; depthwise Conv(4→4, k3, pad 1,
    # groups 4): 1 input channel per output; Conv 1×1 (4→6); Linear(96, 5) without bias.
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 4, 3, padding=1, groups=4),
        nn.Conv2d(4, 6, 1, bias=False),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 5, bias=False),
    )
    expected = conv_macs(3, 4, 3, 16) + conv_macs(4, 4, 3, 16, groups=4) + conv_macs(4, 6, 1, 16)
    expected += 24 * 5
    assert count_macs(model, in_channels=3, resolution=9) == expected == 1728 + 576 + 384 + 120


def test_conv_macs_scale_with_the_number_of_positions() -> None:
    # A fully convolutional net with a global pool: conv MACs grow with resolution², the
    # Linear after the pool does not.
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    per_position = conv_macs(1, 4, 3, 1) + conv_macs(4, 4, 3, 1)
    for resolution in (4, 8, 16):
        macs = count_macs(model, in_channels=1, resolution=resolution)
        assert macs == per_position * resolution**2 + 4 * 3


def test_parameter_count_is_the_sum_of_numel_of_trainable_parameters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 4))
    # By hand: conv 8·3·9 + 8, BatchNorm 8 + 8 (running stats are buffers), Linear 8·4 + 4.
    assert count_parameters(model) == 224 + 16 + 36 == sum(p.numel() for p in model.parameters())
    model[0].weight.requires_grad_(False)  # frozen weights are not trained: not counted
    assert count_parameters(model) == 276 - 216


def test_tied_parameters_are_counted_once() -> None:
    first, second = nn.Linear(6, 6), nn.Linear(6, 6)
    second.weight = first.weight
    assert count_parameters(nn.Sequential(first, second)) == 36 + 6 + 6


@pytest.mark.parametrize("training", [True, False])
def test_each_module_keeps_its_train_or_eval_mode(training: bool) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten())
    model.train(training)
    model[1].train(not training)  # e.g. a frozen BatchNorm inside a model in training mode
    before = [m.training for m in model.modules()]
    count_macs(model, in_channels=1, resolution=5)
    assert [m.training for m in model.modules()] == before


def test_measuring_changes_neither_weights_nor_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, in_channels=1, resolution=6)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_a_float64_model_is_measured_in_its_own_dtype() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).double()
    assert count_macs(model, in_channels=2, resolution=6) == conv_macs(2, 3, 3, 16) + 48 * 2


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
def test_forward_hooks_are_not_counted_but_pre_hooks_run() -> None:
    # A SaturationTracker-like observer doing a 64×64 matmul per call is not the model's cost.
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2))
    calls: list[int] = []

    def observer(module: nn.Module, args: object, out: torch.Tensor) -> None:
        calls.append(1)
        out.T @ out

    handle = model[1].register_forward_hook(observer)
    assert count_macs(model, in_channels=1, resolution=2) == 4 * 64 + 64 * 2
    assert calls == []
    model(torch.zeros(3, 1, 2, 2))
    assert calls == [1]  # the hook is back afterwards
    handle.remove()
    # The old weight_norm computes the weight in a forward pre-hook: it must still run.
    normed = nn.Sequential(nn.Flatten(), nn.utils.weight_norm(nn.Linear(4, 3)))
    assert count_macs(normed, in_channels=1, resolution=2) == 4 * 3


def test_a_model_without_parameters_costs_nothing() -> None:
    assert count_macs(nn.Sequential(nn.Flatten()), in_channels=1, resolution=4) == 0
    assert count_parameters(nn.Flatten()) == 0


# --------------------------------------------------------------------------- attention


class Tokens(nn.Module):
    """(1, C, H, W) image -> (1, heads, H·W, C / heads) tokens, attended with itself."""

    def __init__(self, heads: int, weights: bool | None) -> None:
        super().__init__()
        self.heads, self.weights = heads, weights
        self.mha = nn.MultiheadAttention(8, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.flatten(2).transpose(1, 2)  # (1, HW, C)
        if self.weights is None:  # functional scaled-dot-product attention, no projections
            q = t.unflatten(-1, (self.heads, -1)).transpose(1, 2)
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)
        return self.mha(t, t, t, need_weights=self.weights)[0]


def attention_macs(tokens: int, dim: int) -> int:
    """q·kᵀ and attn·v summed over heads: tokens² · (dim per head) · heads, twice."""
    return 2 * tokens * tokens * dim


def test_scaled_dot_product_attention_is_counted_on_the_cpu() -> None:
    # 4×4 image, 8 channels: 16 tokens of width 8 in 2 heads of 4.
    macs = count_macs(Tokens(2, None), in_channels=8, resolution=4)
    assert macs == attention_macs(16, 8) == 2 * (16 * 16 * 4) * 2 == 4096


@pytest.mark.parametrize("weights", [False, True])
def test_multihead_attention_counts_projections_and_attention(weights: bool) -> None:
    # in_proj 16·8·24, out_proj 16·8·8, attention 2·16²·8; the same with or without the
    # attention weights returned (bmm path vs scaled-dot-product path); eval + no_grad would
    # take the fused fast path, whose single op torch does not count: it is switched off.
    before = torch.backends.mha.get_fastpath_enabled()
    macs = count_macs(Tokens(2, weights), in_channels=8, resolution=4)
    assert macs == 16 * 8 * 24 + 16 * 8 * 8 + attention_macs(16, 8) == 8192
    assert torch.backends.mha.get_fastpath_enabled() == before


def test_tiny_vision_transformer_matches_the_hand_count() -> None:
    import torchvision

    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    )
    tokens = 16 + 1  # (32 / 8)² patches and the class token
    patch = conv_macs(3, 32, 8, 16)  # 8×8/8 conv: 16 positions
    block = tokens * 32 * 96 + attention_macs(tokens, 32) + tokens * 32 * 32  # qkv, attn, out
    block += tokens * 32 * 64 + tokens * 64 * 32  # MLP
    head = 32 * 1000  # the class token only
    assert count_macs(vit, in_channels=3, resolution=32) == patch + 2 * block + head == 445824
