"""Frozen configuration dataclasses shared by the layers of the package."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from satadvisor._flags import flag
from satadvisor.errors import UsageError

#: Input resolutions (px) accepted everywhere: --resolution, --set resolution=, RESOLUTION and
#: SEARCH_SPACE['resolution'] in a model file. 4 px is the smallest map a 3x3 conv stack can
#: use; above 1024 px the activations of a proxy run no longer fit a GPU's memory.
RESOLUTION_RANGE = (4, 1024)

Optimizer = Literal["sgd", "adam"]
Phase = Literal["train", "eval"]


@dataclass(frozen=True)
class TrainConfig:
    """How one proxy or full training run is done.

    ``epochs`` whole passes over the training split; ``lr`` is the peak learning rate of a
    cosine schedule (SGD with Nesterov momentum) or the constant rate of Adam; ``device`` is
    ``"auto"`` (cuda, then mps, then cpu) or a torch device string; ``amp`` uses bf16 autocast on
    CUDA only; ``full`` trains on the whole training set and evaluates the test set (validation
    run), otherwise a seeded ``val_fraction`` of the training set is held out (proxy run).
    ``positions``: the rows per batch and layer the saturation tracker reads: ``"auto"`` (a
    sample sized from the layer's width, see :class:`~satadvisor.saturation.SaturationTracker`),
    ``"all"`` (every position of every example) or a positive int (at most that many rows).
    ``auto_epochs``: ``epochs`` is a cap, and :func:`~satadvisor.advisor.analyze` stops as soon
    as the proxy has learned and its saturation profile has settled (:mod:`satadvisor.trust`);
    the learning-rate schedule spans the cap.
    """

    epochs: int = 5
    batch_size: int = 64
    optimizer: Optimizer = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    full: bool = False
    val_fraction: float = 0.1
    augment: bool = True
    positions: int | Literal["auto", "all"] = "auto"
    threshold: float = 0.99
    auto_epochs: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError(
                f"epochs must be at least 1, got {self.epochs}: pass {flag('epochs')} 1 or more"
            )
        if self.batch_size < 1:
            raise UsageError(
                f"batch size must be at least 1, got {self.batch_size}: pass {flag('batch_size')} 1 or more"
            )
        if not self.lr > 0:
            raise UsageError(
                f"learning rate must be positive, got {self.lr}: pass {flag('lr')} > 0"
            )
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"unknown optimizer {self.optimizer!r}: use 'sgd' or 'adam'")
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.auto_epochs and self.epochs < 2:
            raise UsageError(
                f"{flag('epochs')} auto needs a cap of at least 2 epochs (a settled profile "
                f"compares two), got {self.epochs}: pass {flag('max_epochs')} 2 or more"
            )
        if self.positions not in ("auto", "all") and not (
            isinstance(self.positions, int)
            and not isinstance(self.positions, bool)
            and self.positions >= 1
        ):
            raise UsageError(
                f"positions must be 'auto', 'all' or a positive number of rows, got "
                f"{self.positions!r}: pass {flag('positions')} auto"
            )
        if not 0.0 < self.threshold < 1.0:
            raise UsageError(f"threshold must be in (0, 1), got {self.threshold}: 0.99 is usual")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
