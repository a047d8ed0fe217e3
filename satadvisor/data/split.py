"""Splits of a dataset, batched on the training device, with vectorised on-device augmentation.

Three storages share one batching contract (:class:`Split`):

- ``"tensor"``: the split lives on the device as normalised float32 at the target resolution;
  a batch is one index-select.
- ``"tensor-uint8"``: the split lives on the device as raw uint8 at its native resolution and
  every batch is resized and normalised there (the float copy would not fit the byte budget).
- ``"loader"``: a :class:`torch.utils.data.DataLoader` prepares items on the CPU (workers,
  pinned memory on CUDA); only the augmentation runs on the device.

All three draw the order and the augmentation from one CPU :class:`torch.Generator` in the
same sequence, so the same seed gives the same batches whatever the storage or the device.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from satadvisor.errors import DatasetError, UsageError, reraised_line

Batch = tuple[Tensor, Tensor]
Storage = Literal["tensor", "tensor-uint8", "loader"]


def crop_padding(resolution: int) -> int:
    """Padding of the random crop in pixels: an eighth of the resolution, at least 1."""
    return max(1, resolution // 8)


def to_model_input(
    images: Tensor, *, resolution: int, max_value: float, mean: Tensor, std: Tensor
) -> Tensor:
    """Raw images (B, C, H, W) with values in [0, max_value] -> normalised float32 (B, C, R, R).

    Bilinear resize (antialiased when shrinking, as PIL does) to ``resolution`` pixels a side,
    then ``(x / max_value - mean) / std`` per channel; ``mean``/``std`` are (C,) tensors on
    the device of ``images``. Signals (B, C, T) become (B, C, R) the same way: linear
    interpolation along T (antialiased when shrinking: the bilinear kernel on a 1-row image).
    """
    x = images.to(torch.float32) / max_value
    signal = x.dim() == 3
    if signal:
        x = x.unsqueeze(2)  # (B, C, 1, T): the height axis is left as it is
    height, width = x.shape[-2:]
    target = (height if signal else resolution, resolution)
    if (height, width) != target:
        shrink = target[0] < height or resolution < width
        x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=shrink)
    if signal:
        x = x.squeeze(2)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.view(shape)) / std.view(shape)


def augment_batch(
    x: Tensor, *, pad: int, flip: bool, fill: Tensor, generator: torch.Generator
) -> Tensor:
    """Random crop with ``pad`` pixels of padding and, if ``flip``, a random horizontal flip.

    The whole batch at once on ``x.device``: the batch is padded once with the per-channel
    ``fill`` value (shape (C,): normalised black, as a raw zero padding would give), then one
    gather takes each sample's crop at its own offset in [0, 2·pad]² with the column order
    reversed for the mirrored samples. The random numbers come from the CPU ``generator``
    (offsets y, offsets x, then flip coins), so they do not depend on the device.
    """
    if x.dim() == 3:
        return _augment_signals(x, pad=pad, flip=flip, fill=fill, generator=generator)
    b, c, h, w = x.shape
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    no_flip = torch.zeros(b, dtype=torch.bool)
    mirror = torch.rand(b, generator=generator) < 0.5 if flip else no_flip
    padded = fill.to(x.device, x.dtype).view(1, c, 1, 1).repeat(b, 1, h + 2 * pad, w + 2 * pad)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    forward = torch.arange(w)
    rows = oy[:, None] + torch.arange(h)  # (B, H)
    cols = ox[:, None] + torch.where(mirror[:, None], forward.flip(0), forward)  # (B, W)
    dev = x.device
    bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
    ci = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[bi, ci, rows.to(dev).view(b, 1, h, 1), cols.to(dev).view(b, 1, 1, w)]


def _augment_signals(
    x: Tensor, *, pad: int, flip: bool, fill: Tensor, generator: torch.Generator
) -> Tensor:
    """:func:`augment_batch` for signals (B, C, T): a random shift of each signal within
    ``pad`` samples of ``fill`` padding on both ends, and, if ``flip``, a random time reversal
    (offsets, then flip coins, from the CPU ``generator``)."""
    b, c, t = x.shape
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    no_flip = torch.zeros(b, dtype=torch.bool)
    mirror = torch.rand(b, generator=generator) < 0.5 if flip else no_flip
    padded = fill.to(x.device, x.dtype).view(1, c, 1).repeat(b, 1, t + 2 * pad)
    padded[:, :, pad : pad + t] = x
    forward = torch.arange(t)
    cols = ox[:, None] + torch.where(mirror[:, None], forward.flip(0), forward)  # (B, T)
    dev = x.device
    bi = torch.arange(b, device=dev).view(b, 1, 1)
    ci = torch.arange(c, device=dev).view(1, c, 1)
    return padded[bi, ci, cols.to(dev).view(b, 1, t)]


class Split(abc.ABC):
    """One split of a dataset (train, val or test), batched on ``device``.

    ``labels`` (int64, CPU) are the class of each image; ``indices`` (int64, CPU) the position
    of each image in the source set it was drawn from (the training file, the test file, or
    the whole set for datasets that ship without a test split); ``fill`` the normalised value
    of black per channel (the padding of the random crop).
    """

    storage: Storage

    def __init__(
        self,
        *,
        labels: Tensor,
        indices: Tensor,
        resolution: int,
        flip: bool,
        fill: Tensor,
        device: torch.device,
    ) -> None:
        self.labels = labels.to("cpu", torch.int64)
        self.indices = indices.to("cpu", torch.int64)
        self.resolution = resolution
        self.flip = flip
        self.pad = crop_padding(resolution)
        self.fill = fill.to(device, torch.float32)
        self.device = device

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def on_device(self) -> bool:
        """True when the images are held on the device (no DataLoader involved)."""
        return self.storage != "loader"

    def batches(
        self, batch_size: int, *, shuffle: bool, augment: bool, seed: int
    ) -> Iterator[Batch]:
        """One epoch of batches ``(x, y)``: x float32 (B, C, R, R) normalised ((B, C, R) for
        signals), y int64 (B,).

        Both on ``device``. The last partial batch is included. ``shuffle`` draws a random order
        and ``augment`` a random crop (+ flip where the dataset allows it) per image; both come
        from ``seed``, so the same seed gives the same batches.
        """
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        generator = torch.Generator().manual_seed(seed)
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for x, y in self._fetch(order, batch_size):
            if augment:
                x = augment_batch(
                    x, pad=self.pad, flip=self.flip, fill=self.fill, generator=generator
                )
            yield x, y

    @abc.abstractmethod
    def _fetch(self, order: Tensor, batch_size: int) -> Iterator[Batch]:
        """Un-augmented batches of the images at ``order`` (CPU int64), in that order."""


class TensorSplit(Split):
    """A split held on the device: normalised float32 at the resolution, or raw uint8.

    With ``prepared=True`` ``images`` are already model inputs (B, C, R, R); otherwise they
    are raw values in [0, max_value] at any size, resized and normalised per batch.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        indices: Tensor,
        resolution: int,
        flip: bool,
        mean: Tensor,
        std: Tensor,
        device: torch.device,
        prepared: bool,
        max_value: float = 255.0,
    ) -> None:
        super().__init__(
            labels=labels,
            indices=indices,
            resolution=resolution,
            flip=flip,
            fill=-mean / std,
            device=device,
        )
        self.storage = "tensor" if prepared else "tensor-uint8"
        self.images = images.to(device)
        self._labels_on_device = self.labels.to(device)
        self._max_value = max_value
        self._mean = mean.to(device, torch.float32)
        self._std = std.to(device, torch.float32)

    def _fetch(self, order: Tensor, batch_size: int) -> Iterator[Batch]:
        for idx in order.to(self.device).split(batch_size):
            x = self.images[idx]
            if self.storage == "tensor-uint8":
                x = to_model_input(
                    x,
                    resolution=self.resolution,
                    max_value=self._max_value,
                    mean=self._mean,
                    std=self._std,
                )
            yield x, self._labels_on_device[idx]


class LoaderSplit(Split):
    """A split read through a DataLoader; ``dataset[i]`` is (normalised (C, R, R) float32, label).

    The order comes from the seeded generator (as a sampler), so batches match a
    :class:`TensorSplit` of the same data. ``num_workers`` processes prepare the items; pinned
    memory and non-blocking copies are used on CUDA.
    """

    storage: Storage = "loader"

    def __init__(
        self,
        dataset: Dataset[tuple[Tensor, int]],
        labels: Tensor,
        *,
        indices: Tensor,
        resolution: int,
        flip: bool,
        fill: Tensor,
        device: torch.device,
        num_workers: int,
    ) -> None:
        super().__init__(
            labels=labels,
            indices=indices,
            resolution=resolution,
            flip=flip,
            fill=fill,
            device=device,
        )
        self.dataset = dataset
        self.num_workers = num_workers

    def _fetch(self, order: Tensor, batch_size: int) -> Iterator[Batch]:
        pin = self.device.type == "cuda"
        loader = DataLoader(
            self.dataset,
            batch_size=batch_size,
            sampler=order.tolist(),
            num_workers=self.num_workers,
            pin_memory=pin,
        )
        try:
            for x, y in loader:
                yield x.to(self.device, non_blocking=pin), y.to(self.device, non_blocking=pin)
        except DatasetError as exc:  # e.g. a corrupt file met mid-epoch, maybe in a worker
            raise DatasetError(reraised_line(exc)) from exc


class RawImageDataset(Dataset[tuple[Tensor, int]]):
    """Items of raw image tensors (N, C, H, W) prepared one at a time with :func:`to_model_input`."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        resolution: int,
        max_value: float,
        mean: Tensor,
        std: Tensor,
    ) -> None:
        self.images = images
        self.labels = labels
        self.resolution = resolution
        self.max_value = max_value
        self.mean = mean
        self.std = std

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = to_model_input(
            self.images[i : i + 1],
            resolution=self.resolution,
            max_value=self.max_value,
            mean=self.mean,
            std=self.std,
        )
        return x[0], int(self.labels[i])
