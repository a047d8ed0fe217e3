"""Checking a built model: a dry forward pass whose output must be (batch, num_classes) logits."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from satadvisor.errors import ModelBuildError, SatAdvisorError
from satadvisor.models import input_dims
from satadvisor.spec._modelfile import one_line


def check_output(
    model: nn.Module,
    *,
    num_classes: int,
    in_channels: int,
    resolution: int,
    source: str,
    spatial_dims: int | None = None,
) -> None:
    """Dry forward of a (2, in_channels, resolution, resolution) zero batch in eval mode
    ((2, in_channels, resolution) for signals: ``spatial_dims=1``; None reads it from the
    model's first convolution or pooling layer, see :func:`satadvisor.models.input_dims`).

    Raises :class:`ModelBuildError` when the forward fails or the output is not a tensor of
    shape (2, num_classes). The model's training mode is restored afterwards.
    """
    dims = input_dims(model) if spatial_dims is None else spatial_dims
    reference = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = torch.float32
    if reference is not None and reference.is_floating_point():
        dtype = reference.dtype
    shape = (2, in_channels, *(resolution,) * dims)
    batch = torch.zeros(shape, device=device, dtype=dtype)
    unit = "samples" if dims == 1 else "px"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(batch)
    except SatAdvisorError:
        raise
    except Exception as exc:
        raise ModelBuildError(
            f"{source}: the model fails on a {tuple(shape)} input with {type(exc).__name__}: "
            f"{one_line(exc)}; make it accept in_channels={in_channels} at {resolution} {unit}"
        ) from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ModelBuildError(
            f"{source}: the model outputs a {type(out).__name__}, not a tensor; return the "
            "logits of shape (batch, num_classes)"
        )
    got = tuple(out.shape)
    if got == (2, num_classes):
        return
    if len(got) == 2 and got[0] == 2:
        raise ModelBuildError(
            f"{source}: the model outputs shape {got} but the dataset has {num_classes} "
            "classes; make build_model use num_classes"
        )
    raise ModelBuildError(
        f"{source}: the model outputs shape {got}, expected (2, {num_classes}) for a batch "
        "of 2; flatten the output to (batch, num_classes) logits"
    )
