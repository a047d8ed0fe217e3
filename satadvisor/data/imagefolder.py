"""``imagefolder:PATH`` datasets: one sub-directory of images per class (torchvision ImageFolder).

``PATH/train`` (with ``PATH/test`` or ``PATH/val`` as the test split, if present) is used when
it exists; otherwise the whole of ``PATH`` is the training set. Images are read as RGB, their
shorter side resized to the resolution (antialiased) and centre-cropped to a square.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from satadvisor.errors import DatasetError, reraised_line

STATS_SAMPLE = 512
"""Training images decoded to estimate mean/std when the set is too large to decode whole."""


def split_dirs(path: str | Path) -> tuple[Path, Path | None]:
    """The training directory and the test directory (None: carve one) of an image folder."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"imagefolder: {root} is not a directory; pass imagefolder:PATH with one "
            "sub-directory of images per class"
        )
    if (root / "train").is_dir():
        test = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
        return root / "train", test
    return root, None


def check_links(directory: Path) -> None:
    """Refuse a folder whose links lead back into itself (DatasetError).

    torchvision lists an image folder following links to directories and does not notice
    cycles: a link up the tree (``cat/up -> ..``) makes it walk ~40 levels deep (until the OS
    gives up, ELOOP) and list the images there again, under the wrong class, for every level
    and branch, so the listing grows exponentially with the links. Each real directory is
    visited once here; one that is reached a second time is the error. Links to directories
    outside the folder, and links to files, are fine.
    """
    root = directory.resolve()
    seen = {root}
    stack = [directory]
    while stack:
        current = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            continue  # unreadable: torchvision's listing skips it too
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                continue  # a dangling link or a link loop to itself: not a directory
            if not is_dir:
                continue
            real = Path(entry.path).resolve()
            if real in seen:
                shown = directory / Path(entry.path).relative_to(directory)
                raise DatasetError(
                    f"imagefolder: {shown} links back into the image folder (to {real}), so its "
                    "images would be listed again, under another class; remove the link"
                )
            seen.add(real)
            stack.append(Path(entry.path))


def list_folder(directory: Path) -> Any:
    """A torchvision ImageFolder listing of ``directory`` (nothing decoded)."""
    from torchvision.datasets import ImageFolder

    check_links(directory)
    try:
        return ImageFolder(str(directory))
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(
            f"imagefolder: no images in {directory} ({str(exc).splitlines()[0]}); put the images "
            "of each class in their own sub-directory"
        ) from exc


def describe_folder(path: str | Path) -> tuple[int, int]:
    """(number of classes, native resolution) of an image folder, from its listing and one image.

    The native resolution is the shorter side of the first image, clipped to [4, 1024].
    """
    from PIL import Image

    train_dir, _ = split_dirs(path)
    folder = list_folder(train_dir)
    first = folder.samples[0][0]
    try:
        with _bombs_refused(first), Image.open(first) as image:
            side = min(image.size)
    except DatasetError as exc:
        raise DatasetError(f"imagefolder:{path}: {exc}") from exc
    return len(folder.classes), min(max(side, 4), 1024)


@contextmanager
def _bombs_refused(path: str) -> Iterator[None]:
    """An image whose header declares more pixels than PIL decodes without warning
    (``Image.MAX_IMAGE_PIXELS``, ~89 M: a decompression bomb, or a photo far larger than any
    input resolution) is a DatasetError naming the file, not PIL's warning (over the limit)
    or traceback (over twice the limit)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DatasetError(
                f"cannot read an image ({path}: {reraised_line(exc)}); remove it, or replace it "
                "with a smaller copy"
            ) from exc


def _load_rgb(path: str) -> Any:
    """The image at ``path`` as an RGB PIL image (torchvision's default loader, with
    decompression bombs refused)."""
    from PIL import Image

    with _bombs_refused(path), open(path, "rb") as fh, Image.open(fh) as image:
        return image.convert("RGB")


def _transform(resolution: int) -> Callable[[Any], Tensor]:
    from torchvision.transforms import v2

    return v2.Compose(
        [v2.PILToTensor(), v2.Resize(resolution, antialias=True), v2.CenterCrop(resolution)]
    )


class FolderItems(Dataset[tuple[Tensor, int]]):
    """Images ``indices`` of an ImageFolder as (C, R, R) tensors: uint8, or normalised float32.

    With ``mean``/``std`` (per channel, for values in [0, 1]) the items are model inputs;
    without them they are the uint8 pixels after resize and crop.
    """

    def __init__(
        self,
        folder: Any,
        indices: Tensor,
        *,
        resolution: int,
        mean: Tensor | None = None,
        std: Tensor | None = None,
    ) -> None:
        self.folder = folder
        self.indices = indices.tolist()
        self.transform = _transform(resolution)
        self.mean = mean
        self.std = std

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.folder.samples[self.indices[i]]
        try:
            x = self.transform(_load_rgb(path))
        except OSError as exc:  # PIL: not an image, truncated, unreadable
            raise DatasetError(
                f"cannot read an image ({path}: {reraised_line(exc)}); remove or replace that file"
            ) from exc
        if self.mean is not None and self.std is not None:
            x = (x.to(torch.float32) / 255.0 - self.mean.view(-1, 1, 1)) / self.std.view(-1, 1, 1)
        return x, label


def decode(folder: Any, indices: Tensor, *, resolution: int, num_workers: int) -> Tensor:
    """uint8 (N, 3, R, R) images ``indices`` of ``folder``, decoded by ``num_workers`` processes."""
    items = FolderItems(folder, indices, resolution=resolution)
    loader = DataLoader(items, batch_size=256, num_workers=num_workers)
    chunks = [x for x, _ in loader]
    if not chunks:
        return torch.empty(0, 3, resolution, resolution, dtype=torch.uint8)
    return torch.cat(chunks)


def channel_stats(images: Tensor, max_value: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of images (N, C, H, W) scaled to [0, 1]."""
    x = images.to(torch.float64).transpose(0, 1).reshape(images.shape[1], -1) / max_value
    std = x.std(dim=1, correction=0).clamp_min(1e-6)
    return tuple(float(v) for v in x.mean(dim=1)), tuple(float(v) for v in std)


def sample_stats(
    folder: Any, indices: Tensor, *, resolution: int, num_workers: int, seed: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std estimated from a seeded sample of at most :data:`STATS_SAMPLE` of ``indices``."""
    g = torch.Generator().manual_seed(seed)
    sample = indices[torch.randperm(indices.numel(), generator=g)[:STATS_SAMPLE]]
    return channel_stats(
        decode(folder, sample, resolution=resolution, num_workers=num_workers), 255.0
    )
