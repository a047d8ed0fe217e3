"""What a dataset is, without loading it: names, :class:`DatasetInfo`, availability checks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from satadvisor._flags import flag
from satadvisor.config import RESOLUTION_RANGE
from satadvisor.data import imagefolder as folders
from satadvisor.data import npz
from satadvisor.data.plan import carve_test
from satadvisor.data.sources import MNIST_FILES, TORCHVISION_SETS
from satadvisor.errors import DatasetError, UsageError, reraised_line

DATASETS: tuple[str, ...] = (
    "digits",
    "mnist",
    "fashion-mnist",
    "cifar10",
    "cifar100",
    "svhn",
    "synthetic",
    "synthetic-1d",
)
IMAGEFOLDER = "imagefolder:"
NPZ = npz.PREFIX
MIN_RESOLUTION, MAX_RESOLUTION = RESOLUTION_RANGE


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset, without loading it.

    ``native_resolution`` is the side of its images in pixels (the length T of signals);
    ``flip`` whether a horizontal flip keeps the label (used by augmentation); ``mean``/``std``
    per channel, for pixel values scaled to [0, 1]; ``spatial_dims`` 2 for images (N, C, H, W),
    1 for signals (N, C, T).
    """

    name: str
    num_classes: int
    in_channels: int
    native_resolution: int
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    spatial_dims: int = 2


_INFO: dict[str, DatasetInfo] = {
    # digits and synthetic: computed from their training set (tests/test_data.py checks them)
    "digits": DatasetInfo("digits", 10, 1, 8, False, (0.3059,), (0.3765,)),
    "synthetic": DatasetInfo(
        "synthetic", 10, 3, 16, False, (0.5128, 0.5064, 0.4922), (0.2135, 0.2140, 0.2168)
    ),
    "synthetic-1d": DatasetInfo(
        "synthetic-1d", 10, 2, 64, False, (0.4848, 0.5035), (0.2164, 0.2197), spatial_dims=1
    ),
    "mnist": DatasetInfo("mnist", 10, 1, 28, False, (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, True, (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, True, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, True, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    "svhn": DatasetInfo(
        "svhn", 10, 3, 32, False, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    ),
}
# Placeholders until load() computes the statistics of an image folder's training split.
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_data_dir() -> Path:
    """``$SATADVISOR_DATA_DIR`` if set, else ``~/.cache/satadvisor/data``."""
    env = os.environ.get("SATADVISOR_DATA_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/satadvisor/data").expanduser()


def canonical_name(name: str) -> str:
    """The registry key of a dataset name (case and ``_`` tolerant); DatasetError if unknown."""
    if name.startswith(IMAGEFOLDER):
        if not name[len(IMAGEFOLDER) :]:
            raise DatasetError("imagefolder: no path given; use imagefolder:PATH")
        return name
    if name.startswith(NPZ):
        if not name[len(NPZ) :]:
            raise DatasetError("npz: no path given; use npz:PATH of a .npz file")
        return name
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        known = ", ".join((*DATASETS, "imagefolder:PATH", "npz:PATH"))
        raise DatasetError(f"unknown dataset {name!r}: use one of {known}")
    return key


def dataset_info(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> DatasetInfo:
    """Classes, channels, native resolution, flip and normalisation of a dataset.

    Loads no data; ``imagefolder:PATH`` lists its directories and opens one image header (its
    mean/std are ImageNet's until :func:`load` computes them). ``data_dir`` is accepted for
    symmetry with :func:`load` and not needed by the built-in sets.
    """
    key = canonical_name(name)
    if key.startswith(IMAGEFOLDER):
        try:
            num_classes, native = folders.describe_folder(key[len(IMAGEFOLDER) :])
        except OSError as exc:  # PIL's UnidentifiedImageError is one: a corrupt image
            raise DatasetError(f"{key}: {unreadable_image(exc)}") from exc
        return DatasetInfo(key, num_classes, 3, native, True, _IMAGENET_MEAN, _IMAGENET_STD)
    if key.startswith(NPZ):
        return _npz_info(key, npz.read(key[len(NPZ) :]))
    return _INFO[key]


def npz_pool(arrays: npz.NpzSet) -> tuple[Tensor, Tensor]:
    """(training-set indices into x, test-set indices into x_test, or into x when carved)."""
    if arrays.test is None:
        return carve_test(arrays.train.labels)
    return torch.arange(len(arrays.train)), torch.arange(len(arrays.test))


def _npz_info(key: str, arrays: npz.NpzSet) -> DatasetInfo:
    """Classes, channels and size of an npz set; mean/std of its training set (no test split)."""
    pool, _ = npz_pool(arrays)
    mean, std = folders.channel_stats(arrays.train.images[pool], arrays.train.max_value)
    images = arrays.train.images
    native = npz.native_resolution(images)
    return DatasetInfo(
        key, arrays.num_classes, int(images.shape[1]), native, False, mean, std,
        spatial_dims=arrays.spatial_dims,
    )  # fmt: skip


def unreadable_image(exc: OSError | DatasetError) -> str:
    text = reraised_line(exc)
    if isinstance(exc, DatasetError):
        return text  # FolderItems' own message names the file and the fix
    return f"cannot read an image ({text}); remove or replace that file"


def check_available(
    name: str,
    *,
    resolution: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> None:
    """Raise :class:`DatasetError` / :class:`UsageError` now for a dataset :func:`load` could
    not read, without reading it: unknown names, an image folder without class directories, a
    torchvision root without the expected files (unless ``download``), a resolution outside
    4–1024 px. For a search this runs before the study is created, so bad input writes nothing.
    """
    key = canonical_name(name)
    check_resolution(resolution)
    if key.startswith(IMAGEFOLDER):
        dataset_info(key)  # lists the class directories, opens one image header
        return
    if key.startswith(NPZ):
        dataset_info(key)  # reads and checks the arrays
        return
    if key not in TORCHVISION_SETS or download:
        return
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    class_name, marker = TORCHVISION_SETS[key]
    if (root / marker).is_file():
        return
    raw = root / class_name / "raw"
    if class_name in ("MNIST", "FashionMNIST") and all(
        (raw / f"{file}.gz").is_file() for file in MNIST_FILES
    ):
        return
    raise DatasetError(
        f"{key}: no data in {root} (expected {root / marker}); pass {flag('data_dir')} with a "
        f"torchvision root or {flag('download')}"
    )


def check_resolution(resolution: int | None) -> None:
    if resolution is not None and not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise UsageError(
            f"resolution must be {MIN_RESOLUTION} to {MAX_RESOLUTION} pixels, got {resolution}: "
            f"pass a {flag('resolution')} in that range"
        )
