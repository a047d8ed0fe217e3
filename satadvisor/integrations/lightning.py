"""PyTorch Lightning: a callback that logs per-layer saturation of the module it trains.

    from satadvisor.integrations.lightning import SaturationCallback

    trainer = lightning.Trainer(callbacks=[SaturationCallback()], ...)
    trainer.fit(module, data)

After every training epoch it logs ``saturation/<layer>``, ``saturation/tail_length`` and
``saturation/settled`` through the trainer's loggers (TensorBoard, CSV, W&B…), and keeps every
epoch's :class:`~satadvisor.integrations.WatchState` in :attr:`SaturationCallback.states`.
Needs ``pip install 'satadvisor[lightning]'``.
"""

from __future__ import annotations

from typing import Any

from satadvisor.errors import UsageError
from satadvisor.integrations._watch import SaturationWatch, WatchState
from satadvisor.saturation import SaturationTracker

try:
    from lightning.pytorch import Callback
except ImportError as exc:
    raise UsageError(
        "PyTorch Lightning is not installed; pip install 'satadvisor[lightning]'"
    ) from exc


class SaturationCallback(Callback):
    """See the module docstring. ``tracker_options`` go to the tracker (``include`` …)."""

    def __init__(self, *, prefix: str = "saturation", **tracker_options: Any) -> None:
        super().__init__()
        self.prefix = prefix
        self.tracker_options = tracker_options
        self.tracker: SaturationTracker | None = None
        self.watch = SaturationWatch()
        self.states: list[WatchState] = []

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.tracker = SaturationTracker(pl_module, **self.tracker_options)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is not None:
            self.tracker.reset()  # the sanity check's and validation's passes are not training

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is None:
            return
        state = self.watch.update(self.tracker.compute("train"))
        self.states.append(state)
        if trainer.loggers:
            for logger in trainer.loggers:
                logger.log_metrics(state.scalars(self.prefix), step=trainer.current_epoch)
        self.tracker.reset()

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
