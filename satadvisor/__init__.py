"""satadvisor: an architecture-optimization advisor for PyTorch CNNs.

Public names are imported on first use, so ``import satadvisor`` (and ``satadvisor --help``)
stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from satadvisor.errors import SatAdvisorError

if TYPE_CHECKING:
    from satadvisor.advisor import Analysis, analyze
    from satadvisor.config import TrainConfig
    from satadvisor.models import create_model, list_models
    from satadvisor.report import write_report
    from satadvisor.saturation import LayerSaturation, SaturationTracker
    from satadvisor.search import optimize
    from satadvisor.spec import ModelSpec

__version__ = "0.1.0"

_LAZY = {
    "Analysis": "satadvisor.advisor",
    "analyze": "satadvisor.advisor",
    "TrainConfig": "satadvisor.config",
    "create_model": "satadvisor.models",
    "list_models": "satadvisor.models",
    "LayerSaturation": "satadvisor.saturation",
    "SaturationTracker": "satadvisor.saturation",
    "optimize": "satadvisor.search",
    "ModelSpec": "satadvisor.spec",
    "write_report": "satadvisor.report",
}

__all__ = [
    "Analysis",
    "LayerSaturation",
    "ModelSpec",
    "SatAdvisorError",
    "SaturationTracker",
    "TrainConfig",
    "__version__",
    "analyze",
    "create_model",
    "list_models",
    "optimize",
    "write_report",
]


def __dir__() -> list[str]:
    """The public names too (they are imported on first use, so not yet in the module)."""
    return sorted({*__all__, *(n for n in globals() if n.startswith("__"))})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'satadvisor' has no attribute {name!r}")
