"""Compute cost of a model: parameters and multiply-accumulates, measured, not estimated."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, *, in_channels: int, resolution: int) -> int:
    """Multiply-accumulates of one forward pass of a single image (B=1) at ``resolution`` px.

    Measured with :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions;
    FLOPs / 2 = MACs) in eval mode on a zero image on the model's own device.
    """
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_channels, resolution, resolution, device=device)
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)
