"""``npz:PATH`` datasets: NumPy arrays of images (N, C, H, W) or signals (N, C, T).

The file holds ``x`` and ``y`` (integer labels 0..K-1), and optionally ``x_test`` / ``y_test``
as the test split (otherwise one is carved like the digits' one). ``x`` is uint8 (values
0..255) or any real type (taken as it is: the per-channel normalisation rescales it). Nothing
is unpickled: object arrays are refused. Images need not be square: they are resized to the
resolution on both sides; signals are resized along T (linear interpolation, antialiased when
shrinking).
"""

from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from satadvisor.data.sources import RawSet
from satadvisor.errors import DatasetError

PREFIX = "npz:"


@dataclass(frozen=True)
class NpzSet:
    """The arrays of an npz dataset: the training source, the test source (None: carve one)."""

    train: RawSet
    test: RawSet | None
    num_classes: int

    @property
    def spatial_dims(self) -> int:
        return self.train.images.dim() - 2


def read(path: str | os.PathLike[str]) -> NpzSet:
    """The arrays of ``path`` (cached while the file is unchanged); DatasetError naming the fix."""
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError:
        raise DatasetError(
            f"npz:{path}: no such file; pass npz:PATH of a .npz file with arrays x and y"
        ) from None
    if not file.is_file():
        raise DatasetError(f"npz:{path}: not a file; pass npz:PATH of a .npz file")
    return _read(str(file.resolve()), stat.st_mtime_ns, stat.st_size, str(path))


@functools.lru_cache(maxsize=2)
def _read(path: str, mtime: int, size: int, shown: str) -> NpzSet:
    del mtime, size  # part of the cache key only
    where = f"npz:{shown}"
    try:
        with np.load(path) as arrays:  # numpy refuses pickled (object) arrays by default
            names = set(arrays.files)
            missing = [k for k in ("x", "y") if k not in names]
            if missing:
                raise DatasetError(
                    f"{where}: no array {missing[0]!r} (it holds {', '.join(sorted(names)) or 'none'}); "
                    "save x (N, C, H, W) or (N, C, T) and y (N,) labels, e.g. np.savez(PATH, x=x, y=y)"
                )
            if ("x_test" in names) != ("y_test" in names):
                raise DatasetError(f"{where}: x_test and y_test go together; save both or neither")
            x, y = arrays["x"], arrays["y"]
            pair = (arrays["x_test"], arrays["y_test"]) if "x_test" in names else None
    except DatasetError:
        raise
    except ValueError as exc:
        text = str(exc).splitlines()[0] if str(exc) else "not readable"
        raise DatasetError(
            f"{where}: cannot be read without unpickling ({text}); save plain numeric arrays"
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(
            f"{where}: not a readable .npz file ({type(exc).__name__}); write it with np.savez"
        ) from exc
    train = _raw(x, y, where, "x", "y")
    test = _raw(*pair, where, "x_test", "y_test") if pair is not None else None
    if test is not None and test.images.shape[1:2] != train.images.shape[1:2]:
        raise DatasetError(
            f"{where}: x_test has shape {tuple(test.images.shape)} but x {tuple(train.images.shape)}; "
            "give both the same channels and dimensions"
        )
    if test is not None and test.images.dim() != train.images.dim():
        raise DatasetError(f"{where}: x_test and x differ in dimensions; give both the same")
    top = max(int(train.labels.max()), int(test.labels.max()) if test is not None else 0)
    return NpzSet(train, test, top + 1)


def _raw(x: np.ndarray, y: np.ndarray, where: str, xname: str, yname: str) -> RawSet:
    if x.ndim not in (3, 4):
        raise DatasetError(
            f"{where}: {xname} has shape {x.shape}; give images (N, C, H, W) or signals (N, C, T) "
            "(add the channel axis, e.g. x[:, None])"
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DatasetError(
            f"{where}: {yname} has shape {y.shape} for {x.shape[0]} examples in {xname}; "
            "give one label per example"
        )
    if x.shape[0] == 0 or min(x.shape[1:]) < 1:
        raise DatasetError(f"{where}: {xname} has shape {x.shape}, with nothing in it")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DatasetError(
            f"{where}: {yname} must hold integer class labels 0..K-1 (found {y.dtype}, min "
            f"{y.min()}); map the classes to 0..K-1"
        )
    if x.dtype == np.uint8:
        images, max_value = torch.from_numpy(np.ascontiguousarray(x)), 255.0
    elif np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating):
        values = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(values).all():
            raise DatasetError(f"{where}: {xname} holds NaN or infinite values; clean them first")
        images, max_value = torch.from_numpy(values), 1.0
    else:
        raise DatasetError(f"{where}: {xname} is {x.dtype}; give uint8 or real numbers")
    labels: Tensor = torch.from_numpy(y.astype(np.int64))
    return RawSet(images, labels, max_value)


def native_resolution(images: Tensor) -> int:
    """The side of square images, the shorter side of others, the length T of signals."""
    return int(min(images.shape[2:]))
