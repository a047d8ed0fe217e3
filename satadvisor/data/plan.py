"""Which images go into which split, and in which storage the splits are held."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from satadvisor.data.sources import TEST_FRACTION, RawSet, take_stratified
from satadvisor.data.split import (
    LoaderSplit,
    RawImageDataset,
    Split,
    Storage,
    TensorSplit,
    to_model_input,
)
from satadvisor.errors import DatasetError


@dataclass(frozen=True)
class SplitOptions:
    """How :func:`choose` splits: full run or proxy run, and the options of :func:`~satadvisor.data.load`."""

    full: bool
    val_fraction: float
    seed: int
    subset: int | None


def carve_test(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(training-set indices, test-set indices) of a dataset that ships without a test split.

    The test set is a stratified :data:`TEST_FRACTION` drawn with seed 0, whatever the run
    seed, so every run of every seed holds out the same images.
    """
    test, pool = take_stratified(labels, round(TEST_FRACTION * labels.numel()), seed=0)
    return pool, test


def choose(
    pool: Tensor,
    test: Tensor,
    *,
    train_labels: Tensor,
    test_labels: Tensor,
    options: SplitOptions,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Indices of the train split, of the validation split (both into the training source) and
    of the test split (into the test source; None for proxy runs).

    ``pool`` indexes the training set in the training source, ``test`` the test set in the
    test source; ``*_labels`` are the labels of the whole sources. Every run trains on the pool
    minus a stratified ``val_fraction`` drawn with ``seed`` and scores that validation split;
    full runs also return the test set, evaluated once for reporting. The validation split of
    a full run is the proxy runs' one, so selection never sees the test set. ``subset`` caps
    every split (stratified).
    """
    full, val_fraction, seed, subset = (
        options.full,
        options.val_fraction,
        options.seed,
        options.subset,
    )
    n_val = round(val_fraction * pool.numel())
    if not 1 <= n_val < pool.numel():
        raise DatasetError(
            f"{pool.numel()} training images leave no validation split at "
            f"val_fraction={val_fraction}; use a larger dataset or another val_fraction"
        )
    val_pos, train_pos = take_stratified(train_labels[pool], n_val, seed=seed)
    train, evaluation = pool[train_pos], pool[val_pos]
    held: Tensor | None = test if full else None
    if subset is not None:

        def cap(idx: Tensor, labels: Tensor) -> Tensor:
            return idx[take_stratified(labels[idx], min(subset, idx.numel()), seed=seed)[0]]

        train, evaluation = cap(train, train_labels), cap(evaluation, train_labels)
        held = cap(held, test_labels) if held is not None else None
    return train, evaluation, held


def storage_for(
    parts: tuple[RawSet, ...], *, channels: int, resolution: int, budget: int
) -> Storage:
    """``"tensor"`` if the float32 model inputs fit ``budget`` bytes, else ``"tensor-uint8"``
    if the raw images do, else ``"loader"``."""
    n = sum(len(raw) for raw in parts)
    dims = parts[0].images.dim() - 2 if parts else 2  # 1 for signals (N, C, T)
    if n * channels * resolution**dims * 4 <= budget:
        return "tensor"
    if sum(raw.images.numel() * raw.images.element_size() for raw in parts) <= budget:
        return "tensor-uint8"
    return "loader"


def prepare(
    images: Tensor,
    *,
    device: torch.device,
    resolution: int,
    max_value: float,
    mean: Tensor,
    std: Tensor,
) -> Tensor:
    """Model inputs of all ``images``, computed on ``device`` in chunks of about 256 MiB."""
    n, c, *spatial = images.shape
    size = (resolution,) * len(spatial)  # (R, R) for images, (R,) for signals
    out = torch.empty(n, c, *size, dtype=torch.float32, device=device)
    step = max(1, 2**26 // (c * max(math.prod(spatial), math.prod(size))))
    mean, std = mean.to(device), std.to(device)
    for start in range(0, n, step):
        chunk = images[start : start + step].to(device)
        out[start : start + step] = to_model_input(
            chunk, resolution=resolution, max_value=max_value, mean=mean, std=std
        )
    return out


def make_split(
    raw: RawSet,
    indices: Tensor,
    *,
    storage: Storage,
    resolution: int,
    flip: bool,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    num_workers: int,
) -> Split:
    """One split of ``raw`` (whose images are those at ``indices`` of their source) in ``storage``."""
    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32)
    if storage == "loader":
        items = RawImageDataset(
            raw.images,
            raw.labels,
            resolution=resolution,
            max_value=raw.max_value,
            mean=mean_t,
            std=std_t,
        )
        return LoaderSplit(
            items,
            raw.labels,
            indices=indices,
            resolution=resolution,
            flip=flip,
            fill=-mean_t / std_t,
            device=device,
            num_workers=num_workers,
        )
    images = raw.images
    if storage == "tensor":
        images = prepare(
            images,
            device=device,
            resolution=resolution,
            max_value=raw.max_value,
            mean=mean_t,
            std=std_t,
        )
    return TensorSplit(
        images,
        raw.labels,
        indices=indices,
        resolution=resolution,
        flip=flip,
        mean=mean_t,
        std=std_t,
        device=device,
        prepared=storage == "tensor",
        max_value=raw.max_value,
    )
