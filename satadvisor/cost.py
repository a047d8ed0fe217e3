"""Compute cost of a model: parameters and multiply-accumulates, measured, not estimated."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, *, in_channels: int, resolution: int) -> int:
    """Multiply-accumulates of one forward pass of a single image (B=1) at ``resolution`` px
    (a signal of length ``resolution`` for a Conv1d model).

    Measured with :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and
    scaled-dot-product attention; FLOPs / 2 = MACs; bias additions, activations, softmax and
    pooling are not counted) in eval mode on a zero image of the model's own device and
    floating dtype. Attention counts ``q·kᵀ`` and ``attn·v``: per query head ``s_q·s_k·d`` +
    ``s_q·s_k·d_v`` MACs, on every device (torch's counter knows only the CUDA kernels; the CPU
    and other back ends get a formula here), and ``nn.MultiheadAttention`` /
    ``nn.TransformerEncoderLayer`` run their ordinary path (the fused inference fast path is
    switched off meanwhile: its single op is not counted by torch), which computes the same. Every submodule's train/eval
    mode is restored afterwards, so a model with e.g. frozen BatchNorm layers stays as it was.
    Forward hooks (observers such as a :class:`~satadvisor.saturation.SaturationTracker`) are
    suspended meanwhile: their work is not the model's cost, and a dry forward is not data.
    Forward *pre*-hooks still run (``weight_norm`` computes its weight in one).
    """
    return int(_counted(model, in_channels, resolution).get_total_flops() // 2)


def macs_by_module(model: nn.Module, *, in_channels: int, resolution: int) -> dict[str, int]:
    """:func:`count_macs` per module: qualified module name → MACs of its calls ('' = the
    whole model; a parent's count includes its children's)."""
    counter = _counted(model, in_channels, resolution)
    root = type(model).__name__
    out = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        out["" if key == root else key.removeprefix(root + ".")] = int(sum(ops.values()) // 2)
    return out


def _counted(model: nn.Module, in_channels: int, resolution: int) -> FlopCounterMode:
    """One forward pass of a zero input under the flop counter (see :func:`count_macs`)."""
    from satadvisor.models import input_dims

    reference = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = torch.float32
    if reference is not None and reference.is_floating_point():
        dtype = reference.dtype
    # model.train(mode) would set every submodule to one mode; remember each one instead.
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    dims = input_dims(model)  # 1 for Conv1d models: (1, C, T)
    x = torch.zeros(1, in_channels, *(resolution,) * dims, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False, custom_mapping=_attention_formulas())
    try:
        with torch.no_grad(), _forward_hooks_suspended(model), _no_fastpath(), counter:
            model(x)
    finally:
        for module, training in modes:
            module.training = training
    return counter


def _attention_flops(
    query_shape: tuple[int, ...],
    key_shape: tuple[int, ...],
    value_shape: tuple[int, ...],
    *args: Any,
    **kwargs: Any,
) -> int:
    """FLOPs of ``softmax(q·kᵀ)·v`` by its shapes: q (…, s_q, d), k (…, s_k, d), v (…, s_k, d_v).

    The leading dimensions of q (batch × query heads) count once each; grouped-query attention
    (fewer key/value heads) reads the shared keys once per query head, as the kernels do.
    """
    *lead, s_q, d = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * math.prod(lead) * s_q * s_k * (d + d_v)


def _attention_formulas() -> dict[Any, Callable[..., int]]:
    """Flop formulas for the attention kernels torch's counter has none for (CPU and others)."""
    names = (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_fused_attention_overrideable",
        "_scaled_dot_product_attention_math_for_mps",
    )
    packets = [getattr(torch.ops.aten, name, None) for name in names]
    return {packet: _attention_flops for packet in packets if packet is not None}


@contextlib.contextmanager
def _no_fastpath() -> Iterator[None]:
    """Switch off the fused MultiheadAttention/TransformerEncoderLayer inference path.

    The fast path runs a whole attention block as one op (``_native_multi_head_attention``)
    that the flop counter cannot see into; the ordinary path computes the same with counted
    matmuls and scaled-dot-product attention. The global flag is put back afterwards.
    """
    mha = getattr(torch.backends, "mha", None)
    getter = getattr(mha, "get_fastpath_enabled", None)
    setter = getattr(mha, "set_fastpath_enabled", None)
    if getter is None or setter is None:
        yield
        return
    before = getter()
    setter(False)
    try:
        yield
    finally:
        setter(before)


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
