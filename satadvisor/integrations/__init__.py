"""Saturation in your own training loop: per-epoch profiles, the tail, and whether it settled.

- :class:`SaturationWatch` (no extra dependency): feed it each epoch's profile (from a
  :class:`~satadvisor.saturation.SaturationTracker`); it says which layers form the tail and
  whether the profile has settled, with the same rules ``satadvisor analyze`` uses.
- :class:`~satadvisor.integrations.tensorboard.SaturationWriter` (``pip install
  'satadvisor[tensorboard]'``): writes the profile, tail length and settled state to TensorBoard.
- :class:`~satadvisor.integrations.lightning.SaturationCallback` (``pip install
  'satadvisor[lightning]'``): a PyTorch Lightning callback that tracks the module it trains
  and logs the same through the trainer's loggers.

The optional modules are imported on first use, so ``import satadvisor.integrations`` needs
neither library.
"""

from __future__ import annotations

from satadvisor.integrations._watch import SaturationWatch, WatchState

__all__ = ["SaturationWatch", "WatchState"]
