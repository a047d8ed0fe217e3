"""Throughput of a proxy epoch: satadvisor's loop (+ saturation tracking) vs a plain DataLoader loop.

For each model (ResNet-18 with the CIFAR stem and VGG16 from ``satadvisor.models`` by
default) at 32 px on Fashion-MNIST (``../shared/data`` when present, else ``synthetic``):

- ``plain``: torchvision dataset + transforms (Resize, RandomCrop(padding=4), flip,
  ToTensor, Normalize) + DataLoader, and a plain SGD loop without tracking;
- ``satadvisor``: ``satadvisor.train.run`` on ``satadvisor.data.load`` (data held on the
  device, augmentation on the device), without a tracker;
- ``satadvisor+tracker``: the same with a ``SaturationTracker`` on every conv/linear layer.

All three see the same training images, batch size, optimiser (SGD, Nesterov, lr 0.05),
precision (bf16 autocast and channels-last on CUDA only) and epochs. Reported: training
images per second over the training passes (evaluation excluded), the best of ``--repeats``
interleaved runs after one untimed warm-up pass per model. Prints a table and writes
JSON (default ``benchmarks/results/proxy_throughput.json``)::

    .venv/bin/python benchmarks/proxy_throughput.py --subset 1024 --epochs 1     # CPU, reduced
    .venv/bin/python benchmarks/proxy_throughput.py --epochs 3 --batch-size 256   # GPU, full set
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import prepare_shared_fashion_mnist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from satadvisor import data
from satadvisor._env import device_name, resolve_device, versions
from satadvisor.config import TrainConfig
from satadvisor.data.sources import make_synthetic
from satadvisor.models import create_model
from satadvisor.saturation import SaturationTracker
from satadvisor.train import run

HERE = Path(__file__).resolve().parent
SHARED_FASHION = HERE.parents[1] / "shared" / "data" / "FashionMNIST"


class _PilImages(Dataset[tuple[Any, int]]):
    """uint8 NCHW images as PIL images (what a torchvision dataset hands its transforms)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from torchvision.transforms.functional import to_pil_image

        return self.transform(to_pil_image(self.images[i])), int(self.labels[i])


def plain_dataset(name: str, root: Path | None, info: data.DatasetInfo, resolution: int) -> Any:
    """The training set the usual way: a torchvision dataset with per-item transforms."""
    from torchvision import datasets
    from torchvision import transforms as T

    steps: list[Any] = [T.Resize(resolution), T.RandomCrop(resolution, padding=resolution // 8)]
    if info.flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(info.mean, info.std)]
    transform = T.Compose(steps)
    if name == "fashion-mnist":
        return datasets.FashionMNIST(str(root), train=True, download=False, transform=transform)
    raw = make_synthetic()
    return _PilImages(raw.images, raw.labels, transform)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def plain_loop(
    model: nn.Module, dataset: Any, *, config: TrainConfig, device: torch.device, workers: int
) -> tuple[int, float]:
    """(training images, seconds) of ``config.epochs`` plain epochs; no tracking, no evaluation."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    pin = device.type == "cuda"
    loader = DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, num_workers=workers, pin_memory=pin
    )
    images, seconds = 0, 0.0
    for _ in range(config.epochs):
        model.train()
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device):
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += y.numel()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
    return images, seconds


def data_only(
    bundle: data.DataBundle, plain: Any, args: argparse.Namespace, device: torch.device
) -> dict[str, float]:
    """Images per second of the two input pipelines alone (one augmented epoch, no model)."""
    pin = device.type == "cuda"
    best = {"plain DataLoader": 0.0, "satadvisor": 0.0}
    for _ in range(args.repeats):
        loader = DataLoader(
            plain,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            pin_memory=pin,
        )
        batches = {
            "plain DataLoader": ((x.to(device, non_blocking=pin), y) for x, y in loader),
            "satadvisor": bundle.train.batches(args.batch_size, shuffle=True, augment=True, seed=0),
        }
        for pipeline, iterator in batches.items():
            start, images = time.perf_counter(), 0
            for x, _ in iterator:
                images += x.shape[0]
            if pin:
                torch.cuda.synchronize(device)
            best[pipeline] = max(best[pipeline], images / (time.perf_counter() - start))
    return best


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    root: Path | None = None
    name = "synthetic"
    tmp = tempfile.TemporaryDirectory()
    if SHARED_FASHION.is_dir() and not args.synthetic:
        name, root = "fashion-mnist", prepare_shared_fashion_mnist(SHARED_FASHION, tmp.name)
    bundle = data.load(
        name, resolution=args.resolution, data_dir=root, subset=args.subset, device=device, seed=0
    )
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=str(device), seed=0)
    plain = Subset(
        plain_dataset(name, root, bundle.info, args.resolution), bundle.train.indices.tolist()
    )
    rows = [_row("(data only)", k, v) for k, v in data_only(bundle, plain, args, device).items()]
    for model_name in args.models.split(","):

        def build(model_name: str = model_name) -> nn.Module:
            torch.manual_seed(0)
            knobs = {"width": args.width} if args.width else {}
            return create_model(
                model_name, num_classes=bundle.num_classes, in_channels=bundle.in_channels, **knobs
            )

        # Untimed warm-up: the first passes of an architecture pay for kernel selection.
        warm = Subset(plain, list(range(min(len(plain), 2 * args.batch_size))))
        plain_loop(build(), warm, config=config.replace(epochs=1), device=device, workers=0)
        best: dict[str, float] = {}
        for _ in range(args.repeats):  # interleaved, best of n: robust to a busy machine
            images, seconds = plain_loop(
                build(), plain, config=config, device=device, workers=args.workers
            )
            rates = {"plain DataLoader": images / seconds}
            for tracked in (False, True):
                model = build()
                tracker = SaturationTracker(model) if tracked else None
                result = run(model, bundle, config=config, tracker=tracker)
                if tracker is not None:
                    tracker.close()
                rates["satadvisor+tracker" if tracked else "satadvisor"] = result.images_per_second
            best = {k: max(v, best.get(k, 0.0)) for k, v in rates.items()}
        rows += [_row(model_name, pipeline, rate) for pipeline, rate in best.items()]
    tmp.cleanup()
    return {
        "date": dt.date.today().isoformat() if args.date is None else args.date,
        "device": str(device),
        "device_name": device_name(device),
        "versions": versions(),
        "settings": {
            "dataset": name,
            "resolution": args.resolution,
            "train_images": len(bundle.train),
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "width": args.width,
            "plain_workers": args.workers,
            "storage": bundle.train.storage,
            "torch_threads": torch.get_num_threads(),
            "repeats": args.repeats,
        },
        "rows": rows,
    }


def _row(model: str, pipeline: str, rate: float) -> dict[str, Any]:
    return {"model": model, "pipeline": pipeline, "images_per_second": round(rate, 1)}


def table(result: dict[str, Any]) -> str:
    lines = ["| model | pipeline | images/s | vs plain |", "|---|---|---:|---:|"]
    base: dict[str, float] = {}
    for row in result["rows"]:
        rate = row["images_per_second"]
        if row["pipeline"] == "plain DataLoader":  # the first row of every model
            base[row["model"]] = rate
        ratio = rate / base[row["model"]] if base.get(row["model"]) else float("nan")
        lines.append(f"| {row['model']} | {row['pipeline']} | {rate:,.1f} | {ratio:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18_cifar,vgg16")
    parser.add_argument("--width", type=int, default=None, help="override the models' width")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--subset", type=int, default=None, help="training images (default all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--workers", type=int, default=4, help="DataLoader workers of the plain loop"
    )
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs")
    parser.add_argument("--synthetic", action="store_true", help="ignore ../shared/data")
    parser.add_argument("--date", default=None, help="date to record (default today)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "proxy_throughput.json")
    args = parser.parse_args()
    result = measure(args)
    print(table(result))
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
