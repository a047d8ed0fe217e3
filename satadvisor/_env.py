"""What a result records about where and how it was made."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from typing import Any

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → cuda, then mps, then cpu; anything else is passed to :class:`torch.device`."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    """A human name: the GPU model for CUDA, the processor for CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return _cpu_model()
    return device.type


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def versions() -> dict[str, str]:
    import numpy
    import torchvision

    from satadvisor import __version__

    out = {
        "satadvisor": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
    }
    try:
        import optuna

        out["optuna"] = optuna.__version__
    except ImportError:  # pragma: no cover - optuna is a dependency
        pass
    return out


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions, device, platform and the current UTC time, for every result we write."""
    dev = resolve_device(device or "auto")
    return {
        "versions": versions(),
        "device": str(dev),
        "device_name": device_name(dev),
        "platform": platform.platform(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
