"""Datasets at any input resolution, batched on the training device.

``load(name, resolution=…)`` reads a dataset once, splits it (proxy: train / seeded stratified
validation split of the training set; full: training set / test set), resizes it once to the
target resolution and normalises it per channel. A dataset whose float32 copy fits
``max_device_bytes`` lives on the device and is batched by index permutation there; random
crop and flip run on the device over the whole batch (see :mod:`satadvisor._data_split`).

Datasets (``DATASETS``, plus ``imagefolder:PATH`` and ``npz:PATH``):

- ``digits``: scikit-learn's bundled 8×8 digits, the offline default. It has no test split:
  a stratified 20 % of it (seed 0, whatever the run seed) is its test set.
- ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``svhn``: torchvision roots under
  ``data_dir`` (default :func:`default_data_dir`), downloaded by torchvision when
  ``download=True``. MNIST-style roots holding only the released ``.gz`` files are read too.
- ``synthetic``: 1,200 seeded learnable 16×16 RGB images of 10 classes for tests (test split
  carved like digits).
- ``imagefolder:PATH``: one sub-directory of images per class (see
  :mod:`satadvisor._data_imagefolder`).
- ``npz:PATH``: NumPy arrays ``x`` — images (N, C, H, W) or signals (N, C, T) — and ``y``,
  optionally ``x_test`` / ``y_test`` as the test split (see :mod:`satadvisor._data_npz`).
- ``synthetic-1d``: 1,200 seeded learnable 2-channel signals of 64 samples in 10 classes,
  for Conv1d tests.

For signals the *resolution* is the length T: every signal is resized to it (linear
interpolation) and the random crop is a random shift along T.

Normalisation constants are the usual published ones for the torchvision sets and are
computed from the training set (everything but the test split) for the others.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from satadvisor import _data_imagefolder as folders
from satadvisor import _data_npz as npz
from satadvisor._data_plan import SplitOptions, carve_test, choose, make_split, storage_for
from satadvisor._data_sources import (
    _MNIST_FILES,
    TORCHVISION_SETS,
    RawSet,
    failed_integrity,
    make_synthetic,
    make_synthetic_1d,
    prepare_shared_fashion_mnist,
    read_digits,
    read_torchvision,
    released_files,
)
from satadvisor._data_split import LoaderSplit, Split, augment_batch, crop_padding
from satadvisor._env import resolve_device
from satadvisor.config import RESOLUTION_RANGE
from satadvisor.errors import DatasetError, UsageError, reraised_line

__all__ = [
    "DATASETS",
    "DataBundle",
    "DatasetInfo",
    "Split",
    "augment_batch",
    "check_available",
    "crop_padding",
    "dataset_info",
    "default_data_dir",
    "load",
    "prepare_shared_fashion_mnist",
]

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


def _canonical(name: str) -> str:
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
    key = _canonical(name)
    if key.startswith(IMAGEFOLDER):
        try:
            num_classes, native = folders.describe_folder(key[len(IMAGEFOLDER) :])
        except OSError as exc:  # PIL's UnidentifiedImageError is one: a corrupt image
            raise DatasetError(f"{key}: {_unreadable_image(exc)}") from exc
        return DatasetInfo(key, num_classes, 3, native, True, _IMAGENET_MEAN, _IMAGENET_STD)
    if key.startswith(NPZ):
        return _npz_info(key, npz.read(key[len(NPZ) :]))
    return _INFO[key]


def _npz_pool(arrays: npz.NpzSet) -> tuple[Tensor, Tensor]:
    """(training-set indices into x, test-set indices into x_test, or into x when carved)."""
    if arrays.test is None:
        return carve_test(arrays.train.labels)
    return torch.arange(len(arrays.train)), torch.arange(len(arrays.test))


def _npz_info(key: str, arrays: npz.NpzSet) -> DatasetInfo:
    """Classes, channels and size of an npz set; mean/std of its training set (no test split)."""
    pool, _ = _npz_pool(arrays)
    mean, std = folders.channel_stats(arrays.train.images[pool], arrays.train.max_value)
    images = arrays.train.images
    native = npz.native_resolution(images)
    return DatasetInfo(
        key, arrays.num_classes, int(images.shape[1]), native, False, mean, std,
        spatial_dims=arrays.spatial_dims,
    )  # fmt: skip


def _unreadable_image(exc: OSError | DatasetError) -> str:
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
    key = _canonical(name)
    _check_resolution(resolution)
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
        (raw / f"{file}.gz").is_file() for file in _MNIST_FILES
    ):
        return
    raise DatasetError(
        f"{key}: no data in {root} (expected {root / marker}); pass --data-dir with a "
        "torchvision root or --download"
    )


@dataclass
class DataBundle:
    """The splits of one run at ``resolution`` pixels, batched on ``device``: ``train`` and
    ``eval`` (the validation split held out of the training set, scored every epoch; it is what
    selection reads) and, for full runs only, ``test`` (evaluated once at the end, for
    reporting). ``eval_name`` is always ``"val"``; the field stays for the report's labels."""

    name: str
    info: DatasetInfo
    resolution: int
    device: torch.device
    train: Split
    eval: Split
    eval_name: Literal["val", "test"] = "val"
    test: Split | None = None

    @property
    def full(self) -> bool:
        """True when the bundle holds a test split (a full, validation run)."""
        return self.test is not None

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def in_channels(self) -> int:
        return self.info.in_channels

    def describe(self) -> dict[str, Any]:
        """Sizes, resolution, device and storage, for logs and reports (JSON-ready)."""
        splits = [self.train, self.eval] + ([self.test] if self.test is not None else [])
        return {
            "dataset": self.name,
            "resolution": self.resolution,
            "native_resolution": self.info.native_resolution,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "train_size": len(self.train),
            "eval_size": len(self.eval),
            "eval_name": self.eval_name,
            "test_size": len(self.test) if self.test is not None else None,
            "device": str(self.device),
            "storage": self.train.storage,
            "on_device": all(split.on_device for split in splits),
        }


def _resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: cuda, then mps, then cpu; UsageError for names torch does not know or CUDA
    asked for on a machine without it."""
    try:
        dev = resolve_device(device)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asked for but CUDA is not available: use --device cpu")
    return dev


def _check_resolution(resolution: int | None) -> None:
    if resolution is not None and not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise UsageError(
            f"resolution must be {MIN_RESOLUTION} to {MAX_RESOLUTION} pixels, got {resolution}: "
            "pass a --resolution in that range"
        )


def _check_options(
    resolution: int | None, val_fraction: float, subset: int | None, max_device_bytes: int
) -> None:
    _check_resolution(resolution)
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in (0, 1), got {val_fraction}: 0.1 is usual")
    if subset is not None and subset < 1:
        raise UsageError(f"subset must be at least 1 image, got {subset}: pass --subset 1 or more")
    if max_device_bytes < 0:
        raise UsageError(f"max_device_bytes must be >= 0, got {max_device_bytes}")


def load(
    name: str,
    *,
    resolution: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    full: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    subset: int | None = None,
    max_device_bytes: int = 2 * 2**30,
    num_workers: int | None = None,
) -> DataBundle:
    """Load dataset ``name`` at ``resolution`` pixels a side (None: native) on ``device``.

    Every run trains on the training set minus a stratified ``val_fraction`` drawn with
    ``seed`` and evaluates on that validation split; full runs (``full=True``) also carry the
    test set (``bundle.test``), which is evaluated once at the end for reporting and never
    chooses anything. ``subset`` caps every split at that many images (stratified, seeded) for
    fast runs. Splits whose float32 images fit ``max_device_bytes`` (bytes, all splits together) live on ``device``; larger
    ones keep raw uint8 there, or else go through a DataLoader with ``num_workers`` processes
    (default: up to 4). ``device="auto"`` picks cuda, then mps, then cpu.
    """
    key = _canonical(name)
    _check_options(resolution, val_fraction, subset, max_device_bytes)
    dev = _resolve_device(device)
    workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
    info = dataset_info(key)
    res = info.native_resolution if resolution is None else resolution
    options = SplitOptions(full=full, val_fraction=val_fraction, seed=seed, subset=subset)
    if key.startswith(IMAGEFOLDER):
        try:
            return _load_imagefolder(
                key,
                info=info,
                resolution=res,
                device=dev,
                max_device_bytes=max_device_bytes,
                num_workers=workers,
                options=options,
            )
        except (OSError, DatasetError) as exc:  # decoded up front: a corrupt image is met here
            raise DatasetError(f"{key}: {_unreadable_image(exc)}") from exc
    if key in TORCHVISION_SETS:
        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        try:
            train_src, test_src = read_torchvision(key, root=root, download=download)
        except DatasetError as exc:
            marker = root / TORCHVISION_SETS[key][1]
            if download or not marker.is_file():
                raise
            # The files are there but torchvision refused them (checksum, truncation).
            raise DatasetError(_refused(key, root)) from exc
        pool, test = torch.arange(len(train_src)), torch.arange(len(test_src))
    elif key.startswith(NPZ):
        arrays = npz.read(key[len(NPZ) :])
        train_src = arrays.train
        test_src = arrays.test if arrays.test is not None else arrays.train
        pool, test = _npz_pool(arrays)
    else:
        readers = {"digits": read_digits, "synthetic-1d": make_synthetic_1d}
        train_src = test_src = readers.get(key, make_synthetic)()
        pool, test = carve_test(train_src.labels)
    train_idx, eval_idx, test_idx = choose(
        pool, test, train_labels=train_src.labels, test_labels=test_src.labels, options=options
    )
    parts = [(train_src.select(train_idx), train_idx), (train_src.select(eval_idx), eval_idx)]
    if test_idx is not None:
        parts.append((test_src.select(test_idx), test_idx))
    splits = _splits(parts, info, res, dev, max_device_bytes, workers)
    held = splits[2] if len(splits) > 2 else None
    return DataBundle(key, info, res, dev, splits[0], splits[1], "val", held)


def _refused(key: str, root: Path) -> str:
    """Why torchvision refused the files under ``root``, and what works offline instead."""
    archive, files = released_files(key)
    failed = failed_integrity(key, root)
    which = "torchvision's integrity check failed"
    if failed:
        which = (
            f"{len(failed)} of {len(files)} files fail torchvision's MD5 check, e.g. {failed[0]}"
        )
    return (
        f"{key}: the files under {root} are not the released ones ({which}); torchvision reads "
        f"only the files of {archive} unchanged, so put those there, or pass the images as "
        "--dataset npz:FILE.npz (arrays x (N, C, H, W) uint8 and y, optional x_test, y_test) "
        "or --dataset imagefolder:DIR; online, --download fetches them again"
    )


def _splits(
    parts: Sequence[tuple[RawSet, Tensor]],
    info: DatasetInfo,
    resolution: int,
    device: torch.device,
    max_device_bytes: int,
    num_workers: int,
) -> list[Split]:
    """The splits of (raw images, source indices) pairs, in the one storage that fits them all."""
    storage = storage_for(
        tuple(raw for raw, _ in parts),
        channels=info.in_channels,
        resolution=resolution,
        budget=max_device_bytes,
    )
    return [
        make_split(
            raw,
            idx,
            storage=storage,
            resolution=resolution,
            flip=info.flip,
            mean=info.mean,
            std=info.std,
            device=device,
            num_workers=num_workers,
        )
        for raw, idx in parts
    ]


def _load_imagefolder(
    key: str,
    *,
    info: DatasetInfo,
    resolution: int,
    device: torch.device,
    max_device_bytes: int,
    num_workers: int,
    options: SplitOptions,
) -> DataBundle:
    """:func:`load` for ``imagefolder:PATH``: decoded whole when it fits, else a DataLoader."""
    train_dir, test_dir = folders.split_dirs(key[len(IMAGEFOLDER) :])
    train_folder = folders.list_folder(train_dir)
    train_labels = torch.as_tensor(train_folder.targets, dtype=torch.int64)
    if test_dir is None:
        test_folder = train_folder
        pool, test = carve_test(train_labels)
    else:
        test_folder = folders.list_folder(test_dir)
        if test_folder.classes != train_folder.classes:
            raise DatasetError(
                f"imagefolder: the classes of {test_dir} differ from those of {train_dir}; "
                "give both the same sub-directories"
            )
        pool, test = torch.arange(train_labels.numel()), torch.arange(len(test_folder.targets))
    test_labels = torch.as_tensor(test_folder.targets, dtype=torch.int64)
    train_idx, eval_idx, test_idx = choose(
        pool, test, train_labels=train_labels, test_labels=test_labels, options=options
    )
    sources = [(train_folder, train_idx, train_labels), (train_folder, eval_idx, train_labels)]
    if test_idx is not None:
        sources.append((test_folder, test_idx, test_labels))
    uint8_bytes = sum(idx.numel() for _, idx, _ in sources) * 3 * resolution * resolution
    splits: list[Split]
    if uint8_bytes <= max_device_bytes:
        decoded = [
            folders.decode(f, idx, resolution=resolution, num_workers=num_workers)
            for f, idx, _ in sources
        ]
        mean, std = folders.channel_stats(decoded[0], 255.0)
        info = dataclasses.replace(info, mean=mean, std=std)
        parts = [
            (RawSet(images, labels[idx]), idx)
            for images, (_, idx, labels) in zip(decoded, sources, strict=True)
        ]
        splits = _splits(parts, info, resolution, device, max_device_bytes, num_workers)
    else:
        mean, std = folders.sample_stats(
            train_folder, train_idx, resolution=resolution, num_workers=num_workers, seed=0
        )
        info = dataclasses.replace(info, mean=mean, std=std)
        mean_t, std_t = torch.tensor(mean), torch.tensor(std)
        splits = [
            LoaderSplit(
                folders.FolderItems(f, idx, resolution=resolution, mean=mean_t, std=std_t),
                labels[idx],
                indices=idx,
                resolution=resolution,
                flip=info.flip,
                fill=-mean_t / std_t,
                device=device,
                num_workers=num_workers,
            )
            for f, idx, labels in sources
        ]
    held = splits[2] if len(splits) > 2 else None
    return DataBundle(key, info, resolution, device, splits[0], splits[1], "val", held)
