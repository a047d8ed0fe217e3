"""Raw image sources: the bundled digits, synthetic data, torchvision roots, idx files.

Every reader returns :class:`RawSet` objects: uint8 images (N, C, H, W) at their native size
with values in [0, max_value], and int64 labels. Nothing here resizes or normalises.
"""

from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from satadvisor._flags import flag
from satadvisor.errors import DatasetError

TEST_FRACTION = 0.2
"""Share of a dataset without a test split that is set aside as its test split (seed 0)."""

SYNTHETIC_SIZE = 1200
SYNTHETIC_SEED = 20261121

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# dataset -> (torchvision class, the file whose absence means "no data here")
TORCHVISION_SETS: dict[str, tuple[str, str]] = {
    "mnist": ("MNIST", "MNIST/raw/train-images-idx3-ubyte"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw/train-images-idx3-ubyte"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/data_batch_1"),
    "cifar100": ("CIFAR100", "cifar-100-python/train"),
    "svhn": ("SVHN", "train_32x32.mat"),
}


@dataclass(frozen=True)
class RawSet:
    """Images (N, C, H, W) — or signals (N, C, T) — uint8 in [0, max_value] (float32 for
    real-valued npz arrays) with labels (N,) int64."""

    images: Tensor
    labels: Tensor
    max_value: float = 255.0

    def __len__(self) -> int:
        return int(self.labels.numel())

    def select(self, idx: Tensor) -> RawSet:
        return RawSet(self.images[idx], self.labels[idx], self.max_value)


def stratified_order(labels: Tensor, generator: torch.Generator) -> Tensor:
    """A random order of ``range(len(labels))`` every prefix of which is stratified by class.

    Each class is shuffled and its members get the keys (i + ½) / n_class; sorting by key
    (ties in random order) interleaves the classes in proportion, so the first k positions
    hold round(k · n_class / N) ± 1 members of every class.
    """
    n = labels.numel()
    keys = torch.empty(n, dtype=torch.float64)
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        keys[members] = (torch.arange(members.numel(), dtype=torch.float64) + 0.5) / members.numel()
    tie_break = torch.randperm(n, generator=generator)
    return tie_break[torch.sort(keys[tie_break], stable=True).indices]


def take_stratified(labels: Tensor, count: int, *, seed: int) -> tuple[Tensor, Tensor]:
    """Split ``range(len(labels))`` into a stratified sample of ``count`` and the rest (sorted)."""
    order = stratified_order(labels, torch.Generator().manual_seed(seed))
    return torch.sort(order[:count]).values, torch.sort(order[count:]).values


def read_digits() -> RawSet:
    """scikit-learn's bundled 8×8 digits: 1,797 grey images, values 0..16."""
    from sklearn.datasets import load_digits

    bunch: Any = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.uint8)).unsqueeze(1)
    return RawSet(images, torch.from_numpy(np.asarray(bunch.target, dtype=np.int64)), 16.0)


def make_synthetic() -> RawSet:
    """1,200 learnable 16×16 RGB images of 10 classes, identical on every machine.

    Each class is a fixed random low-frequency pattern (4×4 noise upsampled), each image its
    class pattern circularly shifted by up to ±4 pixels plus white noise, quantised to uint8.
    Hard enough that a linear classifier on the pixels stays below 90 % test accuracy.
    """
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    patterns = F.interpolate(
        torch.randn(10, 3, 4, 4, generator=g), size=(16, 16), mode="bilinear", align_corners=False
    )
    labels = torch.arange(SYNTHETIC_SIZE) % 10
    labels = labels[torch.randperm(SYNTHETIC_SIZE, generator=g)]
    shifts = torch.randint(-4, 5, (SYNTHETIC_SIZE, 2), generator=g)
    noise = torch.randn(SYNTHETIC_SIZE, 3, 16, 16, generator=g)
    images = torch.empty(SYNTHETIC_SIZE, 3, 16, 16)
    for i in range(SYNTHETIC_SIZE):  # once per process and cheap; clarity over vectorising
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        images[i] = torch.roll(patterns[labels[i]], shifts=(dy, dx), dims=(1, 2))
    values = (0.5 + 0.2 * (0.6 * images + noise)).clamp(0.0, 1.0)
    return RawSet((values * 255).round().to(torch.uint8), labels.to(torch.int64))


def make_synthetic_1d() -> RawSet:
    """1,200 learnable 2-channel signals of 64 samples in 10 classes, identical everywhere.

    The 1-D counterpart of :func:`make_synthetic`, for Conv1d models: each class a fixed random
    low-frequency waveform (16 points of noise, linearly upsampled), each signal its class
    waveform circularly shifted by up to ±8 samples plus white noise, quantised to uint8.
    """
    g = torch.Generator().manual_seed(SYNTHETIC_SEED + 1)
    patterns = F.interpolate(
        torch.randn(10, 2, 16, generator=g), size=64, mode="linear", align_corners=False
    )
    labels = torch.arange(SYNTHETIC_SIZE) % 10
    labels = labels[torch.randperm(SYNTHETIC_SIZE, generator=g)]
    shifts = torch.randint(-8, 9, (SYNTHETIC_SIZE,), generator=g)
    noise = torch.randn(SYNTHETIC_SIZE, 2, 64, generator=g)
    signals = torch.stack(
        [torch.roll(patterns[labels[i]], int(shifts[i]), dims=1) for i in range(SYNTHETIC_SIZE)]
    )
    values = (0.5 + 0.2 * (0.6 * signals + noise)).clamp(0.0, 1.0)
    return RawSet((values * 255).round().to(torch.uint8), labels.to(torch.int64))


def parse_idx(data: bytes, *, source: str) -> Tensor:
    """An idx file of unsigned bytes (MNIST format: big-endian magic 0x0000_08_nd, then dims)."""
    if len(data) < 4:
        raise DatasetError(f"{source}: truncated idx file; download the data again")
    (magic,) = struct.unpack(">I", data[:4])
    ndim, dtype_code = magic & 0xFF, (magic >> 8) & 0xFF
    if magic >> 16 != 0 or dtype_code != 0x08 or ndim == 0:
        raise DatasetError(f"{source}: not an idx file of unsigned bytes (magic {magic})")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    if len(data) - offset != math.prod(dims):
        raise DatasetError(f"{source}: truncated idx file; download the data again")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=offset).reshape(dims)


def _mnist_raw_dir(root: Path, class_name: str) -> Path:
    return root / class_name / "raw"


def _read_mnist_gz(raw_dir: Path) -> tuple[RawSet, RawSet] | None:
    """Read the four ``.gz`` idx files of an MNIST-style raw dir directly; None if any is missing."""
    paths = [raw_dir / f"{name}.gz" for name in MNIST_FILES]
    if not all(p.is_file() for p in paths):
        return None
    try:
        tensors = [parse_idx(gzip.decompress(p.read_bytes()), source=str(p)) for p in paths]
    except (OSError, EOFError) as exc:
        raise DatasetError(
            f"{raw_dir}: unreadable .gz file ({exc}); download the data again"
        ) from exc
    train_x, train_y, test_x, test_y = tensors
    return (
        RawSet(train_x.unsqueeze(1), train_y.to(torch.int64)),
        RawSet(test_x.unsqueeze(1), test_y.to(torch.int64)),
    )


def _to_raw(dataset: Any) -> RawSet:
    """uint8 NCHW images and int64 labels of a loaded torchvision dataset object."""
    data = dataset.data
    images = torch.as_tensor(np.asarray(data)) if not isinstance(data, Tensor) else data
    if images.ndim == 3:  # MNIST family: (N, H, W)
        images = images.unsqueeze(1)
    elif not hasattr(dataset, "labels"):  # CIFAR: (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    labels = dataset.labels if hasattr(dataset, "labels") else dataset.targets  # SVHN: NCHW
    return RawSet(images.contiguous(), torch.as_tensor(np.asarray(labels), dtype=torch.int64))


def read_torchvision(name: str, *, root: Path, download: bool) -> tuple[RawSet, RawSet]:
    """Training and test set of a torchvision dataset stored under ``root``.

    ``download=True`` lets torchvision fetch missing files. Without it, an MNIST-style root
    holding only the ``.gz`` files (as released) is read directly.
    """
    import torchvision.datasets as tvd

    class_name, marker = TORCHVISION_SETS[name]
    cls = getattr(tvd, class_name)
    try:
        if name == "svhn":
            train, test = (cls(str(root), split=s, download=download) for s in ("train", "test"))
        else:
            train, test = (cls(str(root), train=t, download=download) for t in (True, False))
    except ImportError as exc:
        raise DatasetError(
            f"{name}: reading it needs {exc.name or 'scipy'}; pip install scipy"
        ) from exc
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        if not download and class_name in ("MNIST", "FashionMNIST"):
            found = _read_mnist_gz(_mnist_raw_dir(root, class_name))
            if found is not None:
                return found
        if download:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatasetError(
                f"{name}: download to {root} failed ({reason}); check the network or pass "
                f"{flag('data_dir')} with an existing torchvision root"
            ) from exc
        raise DatasetError(
            f"{name}: no data in {root} (expected {root / marker}); pass {flag('data_dir')} "
            f"with a torchvision root or {flag('download')}"
        ) from exc
    return _to_raw(train), _to_raw(test)


def released_files(name: str) -> tuple[str, tuple[str, ...]]:
    """(the release archive, the files torchvision checks under the root) of a torchvision set."""
    import torchvision.datasets as tvd

    class_name, _ = TORCHVISION_SETS[name]
    cls = getattr(tvd, class_name)
    if class_name in ("CIFAR10", "CIFAR100"):
        files = [f for f, _ in (*cls.train_list, *cls.test_list)] + [cls.meta["filename"]]
        return cls.filename, tuple(f"{cls.base_folder}/{f}" for f in files)
    if class_name == "SVHN":
        return "train_32x32.mat and test_32x32.mat", ("train_32x32.mat", "test_32x32.mat")
    return f"the four {class_name} .gz files", tuple(f"{class_name}/raw/{f}" for f in MNIST_FILES)


def failed_integrity(name: str, root: Path) -> list[str]:
    """The files under ``root`` that are missing or fail torchvision's MD5 check (CIFAR, SVHN;
    empty for the MNIST family, whose unpacked files torchvision does not check)."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import check_integrity

    class_name, _ = TORCHVISION_SETS[name]
    cls = getattr(tvd, class_name)
    if class_name in ("CIFAR10", "CIFAR100"):
        listed = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
        checks = [(f"{cls.base_folder}/{f}", md5) for f, md5 in listed]
    elif class_name == "SVHN":
        checks = [(cls.split_list[s][1], cls.split_list[s][2]) for s in ("train", "test")]
    else:
        return []
    return [f for f, md5 in checks if not check_integrity(str(root / f), md5)]
