"""satadvisor: an architecture-optimization advisor for PyTorch CNNs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from satadvisor.errors import SatAdvisorError

if TYPE_CHECKING:
    from satadvisor.saturation import SaturationTracker

__version__ = "0.1.0"

__all__ = ["SatAdvisorError", "SaturationTracker", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import satadvisor` (and `satadvisor --help`) stays free of torch.
    if name == "SaturationTracker":
        from satadvisor.saturation import SaturationTracker

        return SaturationTracker
    raise AttributeError(f"module 'satadvisor' has no attribute {name!r}")
