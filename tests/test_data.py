"""satadvisor.data: splits, resizing, normalisation, on-device augmentation, dataset sources."""

from __future__ import annotations

import gzip
import hashlib
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from satadvisor import data
from satadvisor.data.split import augment_batch, crop_padding
from satadvisor.errors import DatasetError, UsageError

SHARED_FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "FashionMNIST"


def epoch(
    split: data.Split, batch_size: int = 1000, **kw: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """All batches of one epoch concatenated (defaults: in order, not augmented)."""
    opts = {"shuffle": False, "augment": False, "seed": 0, **kw}
    xs, ys = zip(*split.batches(batch_size, **opts), strict=True)  # type: ignore[arg-type]
    return torch.cat(xs), torch.cat(ys)


def sk_digits() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    return bunch.images.astype(np.float64), bunch.target.astype(np.int64)


# ---------------------------------------------------------------- digits: splits and sizes


@pytest.fixture(scope="module")
def digits_proxy() -> data.DataBundle:
    return data.load("digits")


@pytest.fixture(scope="module")
def digits_full() -> data.DataBundle:
    return data.load("digits", full=True)


def test_digits_sizes(digits_proxy: data.DataBundle, digits_full: data.DataBundle) -> None:
    # 1797 images: test = round(0.2·1797) = 359, training set 1438, val = round(0.1·1438) = 144
    assert (len(digits_full.train), len(digits_full.eval), len(digits_full.test or [])) == (
        1294,
        144,
        359,
    )
    assert (len(digits_proxy.train), len(digits_proxy.eval)) == (1294, 144)
    assert digits_proxy.test is None and not digits_proxy.full and digits_full.full
    assert digits_proxy.eval_name == "val" and digits_full.eval_name == "val"
    described = {
        "dataset": "digits",
        "resolution": 8,
        "native_resolution": 8,
        "num_classes": 10,
        "in_channels": 1,
        "train_size": 1294,
        "eval_size": 144,
        "eval_name": "val",
        "test_size": None,
        "device": "cpu",
        "storage": "tensor",
        "on_device": True,
    }
    assert digits_proxy.describe() == described
    assert digits_full.describe() == {**described, "test_size": 359}


def test_digits_splits_disjoint_and_test_only_in_full_mode(
    digits_proxy: data.DataBundle, digits_full: data.DataBundle
) -> None:
    # digits carries its own test split: all three index the same source (sklearn's order)
    assert digits_full.test is not None
    test = set(digits_full.test.indices.tolist())
    train, val = set(digits_full.train.indices.tolist()), set(digits_full.eval.indices.tolist())
    assert not train & val and not test & (train | val) and len(test | train | val) == 1797
    pool = train | val
    for seed in range(4):
        proxy = digits_proxy if seed == 0 else data.load("digits", seed=seed)
        full = digits_full if seed == 0 else data.load("digits", seed=seed, full=True)
        train, val = set(proxy.train.indices.tolist()), set(proxy.eval.indices.tolist())
        assert not train & val
        assert train | val == pool  # the proxy run never sees a test image
        # the full run selects on the proxy's validation split, never on the test split
        assert torch.equal(full.eval.indices, proxy.eval.indices)
        assert torch.equal(full.train.indices, proxy.train.indices)
        for got, want in zip(epoch(full.eval), epoch(proxy.eval), strict=True):
            assert torch.equal(got, want)
        assert full.test is not None  # the test split does not depend on the seed
        assert torch.equal(full.test.indices, digits_full.test.indices)
    other = data.load("digits", seed=1)
    assert set(other.eval.indices.tolist()) != set(digits_proxy.eval.indices.tolist())


def test_digits_splits_stratified(
    digits_proxy: data.DataBundle, digits_full: data.DataBundle
) -> None:
    _, target = sk_digits()
    per_class = np.bincount(target, minlength=10)
    assert digits_full.test is not None
    test_counts = np.bincount(target[digits_full.test.indices.numpy()], minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * per_class) <= 1)
    pool = torch.cat([digits_full.train.indices, digits_full.eval.indices]).numpy()
    pool_counts = np.bincount(target[pool], minlength=10)
    assert np.array_equal(pool_counts + test_counts, per_class)
    for bundle in (digits_proxy, digits_full):
        val_counts = np.bincount(target[bundle.eval.indices.numpy()], minlength=10)
        assert np.all(np.abs(val_counts - 0.1 * pool_counts) <= 1)
        train_counts = np.bincount(target[bundle.train.indices.numpy()], minlength=10)
        assert np.array_equal(train_counts + val_counts, pool_counts)


def test_digits_content_matches_sklearn(
    digits_proxy: data.DataBundle, digits_full: data.DataBundle
) -> None:
    images, target = sk_digits()
    assert digits_full.test is not None
    for split in (digits_proxy.train, digits_proxy.eval, digits_full.test):
        x, y = epoch(split)
        idx = split.indices.numpy()
        np.testing.assert_array_equal(y.numpy(), target[idx])
        np.testing.assert_array_equal(split.labels.numpy(), target[idx])
        ref = (images[idx] / 16.0 - 0.3059) / 0.3765
        np.testing.assert_allclose(x[:, 0].numpy(), ref, atol=1e-5)


def test_normalisation_constants_are_training_set_statistics() -> None:
    # The constants are those of the whole training set (train + val, never the test split).
    images, _ = sk_digits()
    digits = data.load("digits", full=True)
    pool = torch.cat([digits.train.indices, digits.eval.indices]).numpy()
    assert pool.size == 1438 and digits.test is not None
    assert not set(pool.tolist()) & set(digits.test.indices.tolist())
    pixels = images[pool] / 16.0
    info = data.dataset_info("digits")
    assert info.mean[0] == pytest.approx(pixels.mean(), abs=1e-4)
    assert info.std[0] == pytest.approx(pixels.std(), abs=1e-4)
    x = torch.cat([epoch(digits.train)[0], epoch(digits.eval)[0]])
    assert abs(float(x.mean())) < 1e-3 and float(x.std()) == pytest.approx(1.0, abs=1e-3)

    synthetic = data.load("synthetic", full=True)
    x = torch.cat([epoch(synthetic.train)[0], epoch(synthetic.eval)[0]])
    assert len(x) == 960  # 1200 - 240 test
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-3)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3)).numpy(), 1.0, atol=1e-3)


# ---------------------------------------------------------------- resolution


@pytest.mark.parametrize("resolution", [16, 32])
def test_resize_matches_torch_interpolate(digits_full: data.DataBundle, resolution: int) -> None:
    images, _ = sk_digits()
    bundle = data.load("digits", full=True, resolution=resolution)
    assert bundle.resolution == resolution
    assert bundle.test is not None and digits_full.test is not None
    for split, ref_split in (
        (bundle.train, digits_full.train),
        (bundle.eval, digits_full.eval),
        (bundle.test, digits_full.test),
    ):
        x, _ = epoch(split)
        assert x.shape == (len(ref_split), 1, resolution, resolution) and x.dtype == torch.float32
        raw = torch.from_numpy(images[split.indices.numpy()]).float().unsqueeze(1) / 16.0
        ref = F.interpolate(
            raw, size=(resolution, resolution), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(x, (ref - 0.3059) / 0.3765, atol=1e-5, rtol=0)


def test_shrinking_is_antialiased() -> None:
    native = data.load("synthetic", full=True)
    small = data.load("synthetic", full=True, resolution=8)
    raw = epoch(native.train)[0] * torch.tensor(native.info.std).view(1, 3, 1, 1)
    raw = raw + torch.tensor(native.info.mean).view(1, 3, 1, 1)
    mean, std = (
        torch.tensor(native.info.mean).view(1, 3, 1, 1),
        torch.tensor(native.info.std).view(1, 3, 1, 1),
    )
    x, _ = epoch(small.train)
    smooth = F.interpolate(raw, size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(x, (smooth - mean) / std, atol=1e-4, rtol=0)
    sharp = F.interpolate(raw, size=(8, 8), mode="bilinear", align_corners=False)
    assert (x - (sharp - mean) / std).abs().max() > 0.1


@pytest.mark.parametrize("resolution", [3, 1025, 0])
def test_resolution_out_of_range(resolution: int) -> None:
    with pytest.raises(UsageError, match="resolution"):
        data.load("synthetic", resolution=resolution)


# ---------------------------------------------------------------- batching and augmentation


@pytest.fixture(scope="module")
def synthetic() -> data.DataBundle:
    return data.load("synthetic")


def test_every_image_once_per_epoch_with_partial_last_batch(synthetic: data.DataBundle) -> None:
    n = len(synthetic.train)
    assert n == 864  # 1200 - 240 test - 96 val
    sizes = [len(y) for _, y in synthetic.train.batches(100, shuffle=True, augment=False, seed=3)]
    assert sizes == [100] * 8 + [64]
    ordered, labels = epoch(synthetic.train)
    shuffled, shuffled_labels = epoch(synthetic.train, batch_size=100, shuffle=True, seed=3)
    assert not torch.equal(shuffled, ordered)
    weights = torch.randn(
        ordered[0].numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    key_ordered, key_shuffled = (
        ordered.flatten(1).double() @ weights,
        shuffled.flatten(1).double() @ weights,
    )
    assert key_ordered.unique().numel() == n  # images are distinct, so the keys identify them
    sort_o, sort_s = key_ordered.argsort(), key_shuffled.argsort()
    torch.testing.assert_close(shuffled[sort_s], ordered[sort_o], atol=0, rtol=0)
    assert torch.equal(shuffled_labels[sort_s], labels[sort_o])


def test_same_seed_same_batches(synthetic: data.DataBundle) -> None:
    a = list(synthetic.train.batches(128, shuffle=True, augment=True, seed=7))
    b = list(synthetic.train.batches(128, shuffle=True, augment=True, seed=7))
    c = list(synthetic.train.batches(128, shuffle=True, augment=True, seed=8))
    assert all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )
    assert not torch.equal(a[0][1], c[0][1])
    fixed = (
        epoch(synthetic.train, augment=True, seed=1)[0],
        epoch(synthetic.train, augment=True, seed=2)[0],
    )
    assert not torch.equal(*fixed)  # same order, different crops


def padded_views(
    x: torch.Tensor, pad: int, fill: torch.Tensor
) -> Iterator[tuple[int, int, bool, torch.Tensor]]:
    """Every crop (and mirrored crop) of one image padded with ``fill``: (dy, dx, mirrored, crop)."""
    c, h, w = x.shape
    padded = fill.view(c, 1, 1).expand(c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, pad : pad + h, pad : pad + w] = x
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            yield dy, dx, False, crop
            yield dy, dx, True, crop.flip(-1)


def match_translations(
    plain: torch.Tensor, augmented: torch.Tensor, pad: int, fill: torch.Tensor
) -> list[tuple[int, int, bool]]:
    found = []
    for image, aug in zip(plain, augmented, strict=True):
        hits = [
            (dy, dx, m)
            for dy, dx, m, crop in padded_views(image, pad, fill)
            if torch.equal(crop, aug)
        ]
        assert hits, "augmented image is not a crop of the padded image"
        found.append(hits[0])
    return found


def test_crop_is_a_translation_of_the_padded_image(synthetic: data.DataBundle) -> None:
    split = synthetic.train
    assert split.pad == 2 and not split.flip  # 16 px // 8; synthetic patterns are not mirror-safe
    plain = next(split.batches(200, shuffle=False, augment=False, seed=0))[0]
    aug = next(split.batches(200, shuffle=False, augment=True, seed=0))[0]
    fill = -torch.tensor(synthetic.info.mean) / torch.tensor(synthetic.info.std)
    hits = match_translations(plain, aug, 2, fill)
    assert not any(m for _, _, m in hits)
    assert {dy for dy, _, _ in hits} == set(range(5)) and {dx for _, dx, _ in hits} == set(range(5))


def test_flip_only_where_allowed() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 12, 12, generator=g)
    fill = torch.tensor([-1.0, 0.0, 2.0])
    flipped = augment_batch(
        x, pad=1, flip=True, fill=fill, generator=torch.Generator().manual_seed(5)
    )
    hits = match_translations(x, flipped, 1, fill)
    mirrored = sum(m for _, _, m in hits)
    assert 16 < mirrored < 48  # a fair coin per image
    plain = augment_batch(
        x, pad=1, flip=False, fill=fill, generator=torch.Generator().manual_seed(5)
    )
    assert not any(m for _, _, m in match_translations(x, plain, 1, fill))


def test_padding_is_one_eighth_of_the_resolution() -> None:
    assert [crop_padding(r) for r in (4, 8, 16, 32, 224)] == [1, 1, 2, 4, 28]
    assert data.load("synthetic", resolution=32).train.pad == 4


@pytest.mark.parametrize("budget, storage", [(2_000_000, "tensor-uint8"), (0, "loader")])
def test_storages_give_identical_batches(
    synthetic: data.DataBundle, budget: int, storage: str
) -> None:
    # full bundles: one storage for all three splits, the test split included
    reference = data.load("synthetic", resolution=24, full=True)
    other = data.load("synthetic", resolution=24, full=True, max_device_bytes=budget, num_workers=0)
    assert other.test is not None and reference.test is not None
    assert reference.train.storage == "tensor" and other.train.storage == storage
    assert {s.storage for s in (other.train, other.eval, other.test)} == {storage}
    assert other.describe()["on_device"] is (storage != "loader")
    for split, ref_split in (
        (other.train, reference.train),
        (other.eval, reference.eval),
        (other.test, reference.test),
    ):
        got = list(split.batches(100, shuffle=True, augment=True, seed=4))
        want = list(ref_split.batches(100, shuffle=True, augment=True, seed=4))
        assert len(got) == len(want)
        for (x, y), (xr, yr) in zip(got, want, strict=True):
            assert torch.equal(y, yr)
            torch.testing.assert_close(x, xr, atol=1e-5, rtol=0)


def test_subset_is_stratified_and_capped() -> None:
    bundle = data.load("synthetic", subset=200)
    assert (len(bundle.train), len(bundle.eval), bundle.test) == (200, 96, None)  # val: only 96
    counts = np.bincount(bundle.train.labels.numpy(), minlength=10)
    assert counts.min() >= 19 and counts.max() <= 21
    uncapped = data.load("synthetic", full=True)
    assert set(bundle.train.indices.tolist()) <= set(uncapped.train.indices.tolist())
    full = data.load("synthetic", subset=200, full=True)  # the cap holds for every split
    assert full.test is not None and uncapped.test is not None
    assert (len(full.train), len(full.eval), len(full.test)) == (200, 96, 200)  # test had 240
    assert torch.equal(full.train.indices, bundle.train.indices)
    assert torch.equal(full.eval.indices, bundle.eval.indices)
    assert set(full.test.indices.tolist()) <= set(uncapped.test.indices.tolist())
    assert np.bincount(full.test.labels.numpy(), minlength=10).tolist() == [20] * 10
    assert full.describe()["test_size"] == 200
    with pytest.raises(UsageError, match="subset"):
        data.load("synthetic", subset=0)


# ---------------------------------------------------------------- names and info


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(DatasetError) as exc:
        data.load("imagenet")
    message = str(exc.value)
    assert "\n" not in message and all(name in message for name in data.DATASETS)


def test_dataset_info_and_options() -> None:
    assert data.dataset_info("CIFAR10") == data.DatasetInfo(
        "cifar10", 10, 3, 32, True, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    )
    assert data.dataset_info("fashion_mnist").native_resolution == 28
    assert [data.dataset_info(n).flip for n in ("digits", "mnist", "svhn")] == [False] * 3
    assert data.dataset_info("cifar100").num_classes == 100
    with pytest.raises(UsageError, match="val_fraction"):
        data.load("synthetic", val_fraction=1.0)
    with pytest.raises(UsageError, match="device"):
        data.load("synthetic", device="warp-drive")


# ---------------------------------------------------------------- torchvision roots


def idx_bytes(array: np.ndarray) -> bytes:
    """The MNIST idx encoding of a uint8 array: big-endian magic 0x0000_08_nd, dims, data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fake_fashion(
    root: Path, *, n_train: int = 50, n_test: int = 20, gz: bool = False
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name, array in arrays.items():
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (raw / name).write_bytes(idx_bytes(array))
    return arrays


def fashion_reference(images: np.ndarray, resolution: int) -> torch.Tensor:
    raw = torch.from_numpy(images).float().unsqueeze(1) / 255.0
    raw = F.interpolate(raw, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return (raw - 0.2860) / 0.3530


@pytest.mark.parametrize("gz", [False, True])
def test_offline_torchvision_root(tmp_path: Path, gz: bool) -> None:
    arrays = write_fake_fashion(tmp_path, gz=gz)
    full = data.load("fashion-mnist", data_dir=tmp_path, full=True, resolution=32)
    assert full.test is not None and full.eval_name == "val"
    assert (len(full.train), len(full.eval), len(full.test)) == (45, 5, 20)
    # train and val index the training file, test the t10k file
    train, val = set(full.train.indices.tolist()), set(full.eval.indices.tolist())
    assert not train & val and train | val == set(range(50))
    assert full.test.indices.tolist() == list(range(20))
    for split in (full.train, full.eval):
        x, y = epoch(split)
        idx = split.indices.numpy()
        torch.testing.assert_close(
            x, fashion_reference(arrays["train-images-idx3-ubyte"][idx], 32), atol=1e-5, rtol=0
        )
        assert y.tolist() == arrays["train-labels-idx1-ubyte"][idx].tolist()
    x, y = epoch(full.test)
    torch.testing.assert_close(
        x, fashion_reference(arrays["t10k-images-idx3-ubyte"], 32), atol=1e-5, rtol=0
    )
    assert y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    proxy = data.load("fashion-mnist", data_dir=tmp_path)
    assert (len(proxy.train), len(proxy.eval), proxy.resolution) == (45, 5, 28)
    assert proxy.test is None and torch.equal(proxy.eval.indices, full.eval.indices)
    assert proxy.train.flip and proxy.info.num_classes == 10


@pytest.mark.parametrize(
    "name, expected",
    [
        ("fashion-mnist", "FashionMNIST/raw/train-images-idx3-ubyte"),
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
    ],
)
def test_missing_root_names_the_files_and_the_fix(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(DatasetError) as exc:
        data.load(name, data_dir=tmp_path / "nothing")
    message = str(exc.value)
    assert "\n" not in message
    assert str(tmp_path / "nothing" / expected) in message
    assert "--data-dir" in message and "--download" in message


def test_corrupt_idx_file_is_a_dataset_error(tmp_path: Path) -> None:
    write_fake_fashion(tmp_path, gz=True)
    path = tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 28), np.uint8))[:-10]))
    with pytest.raises(DatasetError, match="truncated"):
        data.load("fashion-mnist", data_dir=tmp_path)


# ---------------------------------------------------------------- image folders


def write_folder(root: Path, per_class: int = 12) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


def test_imagefolder_in_memory_and_loader_agree(tmp_path: Path) -> None:
    write_folder(tmp_path)
    name = f"imagefolder:{tmp_path}"
    info = data.dataset_info(name)
    assert (info.num_classes, info.in_channels, info.native_resolution) == (2, 3, 20)
    memory = data.load(name, resolution=16, full=True, num_workers=0)
    loader = data.load(name, resolution=16, full=True, num_workers=0, max_device_bytes=0)
    assert memory.test is not None and loader.test is not None
    assert {s.storage for s in (memory.train, memory.eval, memory.test)} == {"tensor"}
    assert {s.storage for s in (loader.train, loader.eval, loader.test)} == {"loader"}
    # 24 - 5 test = 19, val = round(1.9) = 2; the test split is carved from the same folder
    assert (len(memory.train), len(memory.eval), len(memory.test)) == (17, 2, 5)
    train, val = set(memory.train.indices.tolist()), set(memory.eval.indices.tolist())
    test = set(memory.test.indices.tolist())
    assert not train & val and not test & (train | val) and len(train | val | test) == 24
    np.testing.assert_allclose(memory.info.mean, loader.info.mean, atol=1e-6)
    np.testing.assert_allclose(memory.info.std, loader.info.std, atol=1e-6)
    for split, other in (
        (memory.train, loader.train),
        (memory.eval, loader.eval),
        (memory.test, loader.test),
    ):
        assert torch.equal(split.indices, other.indices)
        x, y = epoch(split)
        assert x.shape == (len(split), 3, 16, 16)
        xl, yl = epoch(other)
        assert torch.equal(y, yl)
        torch.testing.assert_close(x, xl, atol=1e-5, rtol=0)
    x, _ = epoch(memory.train)  # the statistics are those of the train split
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-4)
    proxy = data.load(name, resolution=16, num_workers=0)
    assert (len(proxy.train), len(proxy.eval), proxy.test) == (17, 2, None)
    assert torch.equal(proxy.eval.indices, memory.eval.indices)


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("where", ["train", "test"])
def test_corrupt_image_met_mid_epoch_is_a_one_line_dataset_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, where: str
) -> None:
    # Streamed from disk (too large for the device), an image outside the statistics sample is
    # first read during training, or (test split) when the test split is evaluated at the end
    # of a full run: the error must still name the file, on one line, also when a DataLoader
    # worker process raised it.
    from satadvisor.data import imagefolder as folders

    write_folder(tmp_path / "train", per_class=6)
    write_folder(tmp_path / "test", per_class=2)
    monkeypatch.setattr(folders, "STATS_SAMPLE", 1)
    decoded: list[list[int]] = []
    real_decode = folders.decode

    def spy(folder: object, indices: torch.Tensor, **kw: int) -> torch.Tensor:
        decoded.append(indices.tolist())
        return real_decode(folder, indices, **kw)

    monkeypatch.setattr(folders, "decode", spy)
    name = f"imagefolder:{tmp_path}"
    clean = data.load(name, resolution=8, full=True, num_workers=0, max_device_bytes=0)
    assert clean.test is not None and len(decoded) == 1  # only the statistics sample, read now
    split = clean.train if where == "train" else clean.test
    unread = [i for i in split.indices.tolist() if where == "test" or i not in decoded[0]]
    bad = Path(folders.list_folder(tmp_path / where).samples[unread[-1]][0])
    bad.write_bytes(b"not a png")

    bundle = data.load(name, resolution=8, full=True, num_workers=workers, max_device_bytes=0)
    assert bundle.test is not None
    assert {s.storage for s in (bundle.train, bundle.eval, bundle.test)} == {"loader"}
    epoch(bundle.eval, batch_size=4)  # the validation split never holds the bad image
    if where == "test":
        epoch(bundle.train, batch_size=4)  # training never reads the test split
    with pytest.raises(DatasetError) as info:
        epoch(bundle.train if where == "train" else bundle.test, batch_size=4)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot read an image (") and str(bad) in message
    assert message.endswith("remove or replace that file")


def test_imagefolder_train_test_layout(tmp_path: Path) -> None:
    write_folder(tmp_path / "train", per_class=6)
    write_folder(tmp_path / "test", per_class=3)
    name = f"imagefolder:{tmp_path}"
    bundle = data.load(name, resolution=8, full=True, num_workers=0)
    assert bundle.test is not None
    # train/ holds train + val (12 images, val = round(1.2) = 1), test/ the test split
    assert (len(bundle.train), len(bundle.eval), len(bundle.test)) == (11, 1, 6)
    train, val = set(bundle.train.indices.tolist()), set(bundle.eval.indices.tolist())
    assert not train & val and train | val == set(range(12))
    assert bundle.test.indices.tolist() == list(range(6))
    assert bundle.test.labels.tolist() == [0, 0, 0, 1, 1, 1]
    proxy = data.load(name, resolution=8, num_workers=0)
    assert proxy.test is None and torch.equal(proxy.eval.indices, bundle.eval.indices)


def test_full_run_needs_a_validation_split(tmp_path: Path) -> None:
    # full runs select on a validation split too: 4 training images leave none at 0.1
    write_folder(tmp_path / "train", per_class=2)
    write_folder(tmp_path / "test", per_class=2)
    with pytest.raises(DatasetError, match="no validation split"):
        data.load(f"imagefolder:{tmp_path}", resolution=8, full=True, num_workers=0)


def test_imagefolder_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a directory"):
        data.load(f"imagefolder:{tmp_path / 'missing'}")
    with pytest.raises(DatasetError, match="no images"):
        data.load(f"imagefolder:{tmp_path}")


# ---------------------------------------------------------------- real data and devices


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_FASHION.is_dir(), reason="no ../shared/data/FashionMNIST")
def test_real_fashion_mnist(tmp_path: Path) -> None:
    root = tmp_path
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for packed in (SHARED_FASHION / "raw").glob("*.gz"):  # a torchvision root, unpacked
        (raw / packed.stem).write_bytes(gzip.decompress(packed.read_bytes()))
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in raw.iterdir()}
    assert md5["train-images-idx3-ubyte"] == "f4a8712d7a061bf5bd6d2ca38dc4d50a"
    assert md5["t10k-labels-idx1-ubyte"] == "15d484375f8d13e6eb1aabb0c3f46965"
    proxy = data.load("fashion-mnist", data_dir=root)
    assert (len(proxy.train), len(proxy.eval), proxy.test) == (54000, 6000, None)
    full = data.load("fashion-mnist", data_dir=root, full=True)
    assert full.test is not None
    assert (len(full.train), len(full.eval), len(full.test)) == (54000, 6000, 10000)
    assert torch.equal(full.eval.indices, proxy.eval.indices)
    assert not set(full.train.indices.tolist()) & set(full.eval.indices.tolist())
    x, y = epoch(full.train, batch_size=10000)
    assert abs(float(x.mean())) < 0.01 and float(x.std()) == pytest.approx(1.0, abs=0.01)
    assert np.bincount(y.numpy()).tolist() == [5400] * 10
    assert np.bincount(full.eval.labels.numpy()).tolist() == [600] * 10
    assert np.bincount(full.test.labels.numpy()).tolist() == [1000] * 10
    direct = data.load("fashion-mnist", data_dir=SHARED_FASHION.parent, full=True)  # .gz only
    assert direct.test is not None
    assert torch.equal(direct.test.labels, full.test.labels)
    torch.testing.assert_close(epoch(direct.test)[0], epoch(full.test)[0], atol=0, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_match_cpu() -> None:
    cpu = data.load("synthetic", resolution=32)
    gpu = data.load("synthetic", resolution=32, device="cuda")
    assert gpu.train.on_device and gpu.describe()["device"].startswith("cuda")
    for (x, y), (xg, yg) in zip(
        cpu.train.batches(128, shuffle=True, augment=True, seed=2),
        gpu.train.batches(128, shuffle=True, augment=True, seed=2),
        strict=True,
    ):
        assert xg.is_cuda and yg.dtype == torch.int64
        assert torch.equal(y, yg.cpu())
        torch.testing.assert_close(x, xg.cpu(), atol=1e-5, rtol=0)


def test_cifar_files_failing_the_checksum_say_what_works_offline(tmp_path: Path) -> None:
    """Rebuilt CIFAR batches fail torchvision's MD5 check: the one-line error names the
    failing files and the offline alternatives (the released files, npz:, imagefolder:)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    for name in names:
        (folder / name).write_bytes(b"rebuilt, not the release")
    with pytest.raises(DatasetError) as exc:
        data.load("cifar10", data_dir=tmp_path)
    message = str(exc.value)
    assert "\n" not in message
    assert "7 of 7 files fail torchvision's MD5 check, e.g. cifar-10-batches-py/data_batch_1" in (
        message
    )
    assert "cifar-10-python.tar.gz" in message
    assert "npz:" in message and "imagefolder:" in message and "--download" in message
