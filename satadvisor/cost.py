"""Compute cost of a model: parameters and multiply-accumulates, measured, not estimated."""

from __future__ import annotations

import contextlib
import itertools
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, *, in_channels: int, resolution: int) -> int:
    """Multiply-accumulates of one forward pass of a single image (B=1) at ``resolution`` px.

    Measured with :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions;
    FLOPs / 2 = MACs; bias additions, activations and pooling are not counted) in eval mode on
    a zero image of the model's own device and floating dtype. Every submodule's train/eval
    mode is restored afterwards, so a model with e.g. frozen BatchNorm layers stays as it was.
    Forward hooks (observers such as a :class:`~satadvisor.saturation.SaturationTracker`) are
    suspended meanwhile: their work is not the model's cost, and a dry forward is not data.
    Forward *pre*-hooks still run (``weight_norm`` computes its weight in one).
    """
    reference = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = torch.float32
    if reference is not None and reference.is_floating_point():
        dtype = reference.dtype
    # model.train(mode) would set every submodule to one mode; remember each one instead.
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    x = torch.zeros(1, in_channels, resolution, resolution, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), _forward_hooks_suspended(model), counter:
            model(x)
    finally:
        for module, training in modes:
            module.training = training
    return int(counter.get_total_flops() // 2)


@contextlib.contextmanager
def _forward_hooks_suspended(model: nn.Module) -> Iterator[None]:
    """Every module's forward hooks are set aside for the block and put back afterwards.

    torch has no public switch for this; ``_forward_hooks`` is the per-module dict that
    ``Module.__call__`` reads. The original dicts are restored (not copied), so a hook handle
    removed meanwhile is still removed afterwards.
    """
    saved = [(module, module._forward_hooks) for module in model.modules()]
    try:
        for module, _ in saved:
            module._forward_hooks = OrderedDict()
        yield
    finally:
        for module, hooks in saved:
            module._forward_hooks = hooks
