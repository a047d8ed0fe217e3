"""What the commands share on their command lines: click options, parameter types, and the
checks of option values that need more than a type (a device this machine has, a storage that
outlives the run)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from satadvisor._flags import flag
from satadvisor._io import plain_folder_name
from satadvisor.config import RESOLUTION_RANGE
from satadvisor.errors import UsageError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def folder_name(param: click.Parameter, value: str | None) -> str | None:
    """A name that becomes one folder under --out: no separators, not '', '.', '..' or the
    marker file's name.

    Anything else could make the report replace --out itself or a folder above it, or make
    --out look like a report folder.
    """
    if value is None:
        return None
    if not plain_folder_name(value):
        raise click.BadParameter(
            f"{value!r} is not a plain folder name; use letters, digits, '-', '_' or '.', "
            "e.g. vgg16-run2",
            param=param,
        )
    return value


def single_file_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--single-file",
        is_flag=True,
        help="Inline plotly.js into index.html (about 5 MB) instead of writing plotly.min.js "
        "beside it: that one file is the whole report, to share or open anywhere.",
    )(f)


def debug_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--debug", is_flag=True, help="Show the full traceback on errors.")(f)


class Positions(click.ParamType):
    """``--positions``: ``auto``, ``all`` or a positive number of rows."""

    name = "auto|all|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip().lower()
        if text in ("auto", "all"):
            return text
        if text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"{value!r} is not auto, all or a positive number of rows", param, ctx)


class Epochs(click.ParamType):
    """``--epochs``: a whole number of epochs, or ``auto`` (until learned and settled)."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int) or value == "auto":
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            number = int(text)
        except ValueError:
            self.fail(f"{value!r} is neither a number of epochs nor 'auto'", param, ctx)
        if not 1 <= number <= 10_000:
            self.fail(f"{number} is not in the range 1 to 10000 (or 'auto')", param, ctx)
        return number


def epochs_config(epochs: int | str | None, max_epochs: int) -> dict[str, Any]:
    """TrainConfig arguments for ``--epochs N|auto`` (default auto) and ``--max-epochs``."""
    if epochs is None or epochs == "auto":
        return {"epochs": max_epochs, "auto_epochs": True}
    return {"epochs": int(epochs)}


def training_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by `analyze` and `optimize` (dataset, resolution, proxy training)."""
    options = [
        click.option(
            "--dataset",
            default=None,
            metavar="NAME",
            help="digits, mnist, fashion-mnist, cifar10, cifar100, svhn, imagefolder:PATH or "
            "synthetic. Default: the model file's DATASET, else digits.",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Root of the torchvision datasets. Default: ~/.cache/satadvisor/data.",
        ),
        click.option(
            "--download/--no-download",
            default=False,
            show_default=True,
            help="Let torchvision download a missing dataset.",
        ),
        click.option(
            "--resolution",
            type=click.IntRange(*RESOLUTION_RANGE),
            default=None,
            help="Input resolution in px. Default: RESOLUTION of the model file, else native.",
        ),
        click.option(
            "--epochs",
            type=Epochs(),
            default=None,
            help="Epochs of each proxy training, or 'auto': train until the proxy has learned "
            "and its saturation profile has settled (at most --max-epochs). Default: auto for "
            "analyze, 5 for optimize (a search compares proxies at one fixed length).",
        ),
        click.option(
            "--max-epochs",
            type=click.IntRange(2, 10_000),
            default=20,
            show_default=True,
            help="Cap of --epochs auto.",
        ),
        click.option(
            "--subset",
            type=click.IntRange(1, None),
            default=None,
            metavar="N",
            help="Cap each split of the proxy training at N images (stratified by class, "
            "seeded). Default: all.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1, 65_536),
            default=64,
            show_default=True,
            help="Mini-batch size.",
        ),
        click.option(
            "--lr",
            type=click.FloatRange(0, 100, min_open=True),
            default=0.05,
            show_default=True,
            help="Peak learning rate (SGD with Nesterov momentum, cosine schedule).",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            metavar="DEVICE",
            help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps.",
        ),
        click.option(
            "--seed",
            type=click.IntRange(0, 2**31 - 1),
            default=0,
            show_default=True,
            help="Seed of weights, data split, batch order and augmentation.",
        ),
        click.option(
            "--positions",
            type=Positions(),
            default="auto",
            show_default=True,
            help="Rows per batch and layer the saturation tracker reads: auto (a sample sized "
            "from the layer's width, at the error stated in docs/saturation.md), all (every "
            "position), or a number N.",
        ),
        click.option(
            "--set",
            "set_items",
            multiple=True,
            metavar="KNOB=VALUE",
            help="Pin a knob of build_model (repeatable), e.g. --set depth=6 --set resolution=32.",
        ),
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("reports"),
            show_default=True,
            help="Directory the report folder is written into.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def check_device(device: str) -> None:
    """A device this machine has: cpu, cuda (with an index below the device count) or mps."""
    import torch

    usage = "use auto, cpu, cuda, cuda:N or mps"
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {device!r}: {usage}") from exc
    option = f"{flag('device')} {device}"
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"{option}: satadvisor does not run on {dev.type}; {usage}")
    other = f"use {flag('device')} cpu or auto"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{option}: CUDA is not available here; {other}")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(
                f"{option}: this machine has {count} CUDA device"
                f"{'' if count == 1 else 's'} (cuda:0 to cuda:{count - 1}); use one of them"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{option}: MPS is not available here; {other}")


def in_memory_storage(url: str | None) -> bool:
    """Whether ``url`` is an SQLite database that lives in memory only (``sqlite://``,
    ``sqlite:///:memory:``, ``file::memory:`` or ``mode=memory`` URIs)."""
    if url is None or "://" not in url:
        return False
    scheme, rest = url.split("://", 1)
    if scheme.lower().split("+", 1)[0] != "sqlite":
        return False
    path, _, query = rest.partition("?")
    database = path[1:] if path.startswith("/") else path
    if database in ("", ":memory:"):
        return True
    params = {k.lower(): v.lower() for k, _, v in (p.partition("=") for p in query.split("&"))}
    uri = params.get("uri") in ("true", "1")
    return uri and (database.startswith("file::memory:") or params.get("mode") == "memory")
