"""Loading a dataset: :func:`load` -> :class:`DataBundle`, the splits of one run on a device."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from satadvisor._env import resolve_device
from satadvisor._flags import flag
from satadvisor.data import imagefolder as folders
from satadvisor.data import npz
from satadvisor.data.info import (
    IMAGEFOLDER,
    NPZ,
    DatasetInfo,
    canonical_name,
    check_resolution,
    dataset_info,
    default_data_dir,
    npz_pool,
    unreadable_image,
)
from satadvisor.data.plan import SplitOptions, carve_test, choose, make_split, storage_for
from satadvisor.data.sources import (
    TORCHVISION_SETS,
    RawSet,
    failed_integrity,
    make_synthetic,
    make_synthetic_1d,
    read_digits,
    read_torchvision,
    released_files,
)
from satadvisor.data.split import LoaderSplit, Split
from satadvisor.errors import DatasetError, UsageError


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
        raise UsageError(
            f"device {device!r} asked for but CUDA is not available: use {flag('device')} cpu"
        )
    return dev


def _check_options(
    resolution: int | None, val_fraction: float, subset: int | None, max_device_bytes: int
) -> None:
    check_resolution(resolution)
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in (0, 1), got {val_fraction}: 0.1 is usual")
    if subset is not None and subset < 1:
        raise UsageError(
            f"subset must be at least 1 image, got {subset}: pass {flag('subset')} 1 or more"
        )
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
    key = canonical_name(name)
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
            raise DatasetError(f"{key}: {unreadable_image(exc)}") from exc
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
        pool, test = npz_pool(arrays)
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
        f"{flag('dataset')} npz:FILE.npz (arrays x (N, C, H, W) uint8 and y, optional x_test, "
        f"y_test) or {flag('dataset')} imagefolder:DIR; online, {flag('download')} fetches them "
        "again"
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
