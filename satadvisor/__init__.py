"""satadvisor: an architecture-optimization advisor for PyTorch CNNs."""

from satadvisor.errors import SatAdvisorError

__version__ = "0.1.0"

__all__ = ["SatAdvisorError", "__version__"]
