"""Datasets at any input resolution, batched on the training device.

``load(name, resolution=…)`` reads a dataset once, splits it (proxy: train / seeded stratified
validation split of the training set; full: training set / test set), resizes it once to the
target resolution and normalises it per channel. A dataset whose float32 copy fits
``max_device_bytes`` lives on the device and is batched by index permutation there; random
crop and flip run on the device over the whole batch (see :mod:`satadvisor.data.split`).

Datasets (``DATASETS``, plus ``imagefolder:PATH`` and ``npz:PATH``):

- ``digits``: scikit-learn's bundled 8×8 digits, the offline default. It has no test split:
  a stratified 20 % of it (seed 0, whatever the run seed) is its test set.
- ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``svhn``: torchvision roots under
  ``data_dir`` (default :func:`default_data_dir`), downloaded by torchvision when
  ``download=True``. MNIST-style roots holding only the released ``.gz`` files are read too.
- ``synthetic``: 1,200 seeded learnable 16×16 RGB images of 10 classes for tests (test split
  carved like digits).
- ``imagefolder:PATH``: one sub-directory of images per class (see
  :mod:`satadvisor.data.imagefolder`).
- ``npz:PATH``: NumPy arrays ``x`` — images (N, C, H, W) or signals (N, C, T) — and ``y``,
  optionally ``x_test`` / ``y_test`` as the test split (see :mod:`satadvisor.data.npz`).
- ``synthetic-1d``: 1,200 seeded learnable 2-channel signals of 64 samples in 10 classes,
  for Conv1d tests.

For signals the *resolution* is the length T: every signal is resized to it (linear
interpolation) and the random crop is a random shift along T.

Normalisation constants are the usual published ones for the torchvision sets and are
computed from the training set (everything but the test split) for the others.

Modules: :mod:`~satadvisor.data.info` (names and :class:`DatasetInfo`, without loading),
:mod:`~satadvisor.data.bundle` (:func:`load`), :mod:`~satadvisor.data.sources` (raw readers),
:mod:`~satadvisor.data.plan` (which indices go to which split, and in which storage),
:mod:`~satadvisor.data.split` (batching and augmentation), :mod:`~satadvisor.data.imagefolder`
and :mod:`~satadvisor.data.npz`. A new dataset is a reader in ``sources`` (or a module like
``npz``) plus its :class:`DatasetInfo` in ``info``.
"""

from __future__ import annotations

from satadvisor.data.bundle import DataBundle, load
from satadvisor.data.info import (
    DATASETS,
    IMAGEFOLDER,
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    NPZ,
    DatasetInfo,
    check_available,
    dataset_info,
    default_data_dir,
)
from satadvisor.data.split import Split

__all__ = [
    "DATASETS",
    "IMAGEFOLDER",
    "MAX_RESOLUTION",
    "MIN_RESOLUTION",
    "NPZ",
    "DataBundle",
    "DatasetInfo",
    "Split",
    "check_available",
    "dataset_info",
    "default_data_dir",
    "load",
]
