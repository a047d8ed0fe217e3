"""Rule-guided + Optuna architecture search with full-run validation."""

from satadvisor.search.progress import SearchClock, SearchProgress
from satadvisor.search.pruner import SaturationPruner
from satadvisor.search.record import TrialRecord
from satadvisor.search.sampler import StudySampler
from satadvisor.search.settings import SearchSettings, TrialEvent
from satadvisor.search.space import SearchSpace, derive_space
from satadvisor.search.storage import default_url, open_storage
from satadvisor.search.study import load_summary, optimize
from satadvisor.search.summary import evenness, spearman, study_summary

__all__ = [
    "SaturationPruner",
    "SearchClock",
    "SearchProgress",
    "SearchSettings",
    "SearchSpace",
    "StudySampler",
    "TrialEvent",
    "TrialRecord",
    "default_url",
    "derive_space",
    "evenness",
    "load_summary",
    "open_storage",
    "optimize",
    "spearman",
    "study_summary",
]
