"""npz:PATH datasets (images and signals) and the synthetic-1d set: splits, resizing,
normalisation and augmentation against NumPy references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from satadvisor import data
from satadvisor.data.split import augment_batch
from satadvisor.errors import DatasetError

pytestmark = pytest.mark.usefixtures("one_thread")


def epoch(split: data.Split) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*split.batches(1000, shuffle=False, augment=False, seed=0), strict=True)
    return torch.cat(xs), torch.cat(ys)


def signals(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 2, 40)).astype(np.float32) + y[:, None, None]
    return x, y


def test_images_with_a_test_split_are_read_as_given(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (60, 3, 12, 12), dtype=np.uint8)
    y = np.arange(60) % 4
    x_test = rng.integers(0, 256, (8, 3, 12, 12), dtype=np.uint8)
    y_test = np.arange(8) % 4
    path = tmp_path / "img.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    info = data.dataset_info(f"npz:{path}")
    assert (info.num_classes, info.in_channels, info.native_resolution) == (4, 3, 12)
    assert info.spatial_dims == 2 and not info.flip
    scaled = x.astype(np.float64) / 255
    mean, std = scaled.mean(axis=(0, 2, 3)), scaled.std(axis=(0, 2, 3))
    np.testing.assert_allclose(info.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(info.std, std, rtol=1e-6)
    bundle = data.load(f"npz:{path}", full=True, val_fraction=0.1)
    assert (len(bundle.train), len(bundle.eval), len(bundle.test or [])) == (54, 6, 8)
    assert bundle.test is not None and bundle.test.indices.tolist() == list(range(8))
    xt, yt = epoch(bundle.test)
    reference = (x_test / 255 - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(xt.numpy(), reference, atol=1e-5)
    assert yt.tolist() == y_test.tolist()
    xv, yv = epoch(bundle.eval)
    idx = bundle.eval.indices.numpy()
    np.testing.assert_allclose(
        xv.numpy(), (scaled[idx] - mean[:, None, None]) / std[:, None, None], atol=1e-5
    )
    assert yv.tolist() == y[idx].tolist()


def test_signals_are_resized_along_t_by_linear_interpolation(tmp_path: Path) -> None:
    x, y = signals(200)
    path = tmp_path / "sig.npz"
    np.savez(path, x=x, y=y)
    info = data.dataset_info(f"npz:{path}")
    assert (info.in_channels, info.native_resolution, info.spatial_dims) == (2, 40, 1)
    bundle = data.load(f"npz:{path}", resolution=64, full=True)
    # no x_test: a stratified fifth is the test split, the rest the training pool
    assert len(bundle.train) + len(bundle.eval) == 160 and bundle.test is not None
    assert len(bundle.test) == 40
    pool = np.setdiff1d(np.arange(200), bundle.test.indices.numpy())
    mean, std = x[pool].mean(axis=(0, 2)), x[pool].std(axis=(0, 2))
    np.testing.assert_allclose(bundle.info.mean, mean, rtol=1e-5)
    xs, _ = epoch(bundle.train)
    assert xs.shape == (len(bundle.train), 2, 64)
    # align_corners=False: output sample i sits at input position (i + 0.5) * 40/64 - 0.5
    where = (np.arange(64) + 0.5) * 40 / 64 - 0.5
    first = bundle.train.indices[0].item()
    for c in range(2):
        expected = (np.interp(where, np.arange(40), x[first, c]) - mean[c]) / std[c]
        np.testing.assert_allclose(xs[0, c].numpy(), expected, atol=1e-4)


def test_signal_augmentation_is_a_shift_of_the_padded_signal() -> None:
    x = torch.arange(2 * 3 * 16, dtype=torch.float32).view(2, 3, 16)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    out = augment_batch(x, pad=2, flip=False, fill=fill, generator=torch.Generator().manual_seed(3))
    for b in range(2):
        padded = np.concatenate(
            [np.full((3, 2), fill[:, None]), x[b].numpy(), np.full((3, 2), fill[:, None])], axis=1
        )
        windows = [padded[:, o : o + 16] for o in range(5)]
        assert any(np.array_equal(out[b].numpy(), w) for w in windows)


def test_synthetic_1d_constants_are_its_training_statistics() -> None:
    bundle = data.load("synthetic-1d", full=True)
    info = bundle.info
    assert (info.num_classes, info.in_channels, info.native_resolution) == (10, 2, 64)
    from satadvisor.data.sources import make_synthetic_1d

    raw = make_synthetic_1d()
    assert raw.images.shape == (1200, 2, 64)
    test = bundle.test.indices.numpy() if bundle.test is not None else np.array([])
    pool = np.setdiff1d(np.arange(1200), test)
    values = raw.images.numpy()[pool].astype(np.float64) / 255
    np.testing.assert_allclose(info.mean, values.mean(axis=(0, 2)), atol=1e-4)
    np.testing.assert_allclose(info.std, values.std(axis=(0, 2)), atol=1e-4)


@pytest.mark.parametrize(
    "arrays, expected",
    [
        ({"x": np.zeros((4, 1, 8))}, "no array 'y'"),
        ({"x": np.zeros((4, 8)), "y": np.zeros(4, int)}, "(N, C, T)"),
        ({"x": np.zeros((4, 1, 8)), "y": np.zeros(3, int)}, "one label per example"),
        ({"x": np.zeros((4, 1, 8)), "y": np.zeros(4)}, "integer class labels"),
        (
            {"x": np.zeros((4, 1, 8)), "y": np.zeros(4, int), "x_test": np.zeros((2, 1, 8))},
            "x_test and y_test go together",
        ),
        (
            {"x": np.array([{}] * 4, dtype=object).reshape(4, 1, 1), "y": np.zeros(4, int)},
            "without unpickling",
        ),
    ],
)
def test_bad_npz_files_are_one_line_errors(tmp_path: Path, arrays: dict, expected: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError) as exc:
        data.load(f"npz:{path}")
    assert "\n" not in str(exc.value) and expected in str(exc.value)
    assert str(exc.value).startswith(f"npz:{path}")


def test_missing_npz_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        data.check_available(f"npz:{tmp_path / 'nope.npz'}")
