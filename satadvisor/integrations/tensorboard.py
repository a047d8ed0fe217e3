"""TensorBoard: per-layer saturation, tail length and settled state, once per epoch.

    from satadvisor.integrations.tensorboard import SaturationWriter

    with SaturationWriter(model, "runs/exp1") as sat:      # tracks model's conv/linear layers
        for epoch in range(epochs):
            for x, y in loader:
                ...                                         # your training step
            state = sat.log_epoch(epoch)                    # scalars + a text line; resets

Scalars: ``saturation/<layer>`` (0-1), ``saturation/tail_length``, ``saturation/settled`` (0/1);
text: ``saturation/summary``. Needs ``pip install 'satadvisor[tensorboard]'``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from satadvisor.errors import UsageError
from satadvisor.integrations._watch import SaturationWatch, WatchState
from satadvisor.saturation import SaturationTracker


def _summary_writer(log_dir: str) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch raises this when the tensorboard package is missing
        raise UsageError(
            "TensorBoard is not installed; pip install 'satadvisor[tensorboard]'"
        ) from exc
    return SummaryWriter(log_dir=log_dir)


class SaturationWriter:
    """Tracks ``model`` and writes its saturation to TensorBoard after every epoch.

    ``writer``: a log directory, or your own ``SummaryWriter`` (left open when given).
    ``tracker_options`` go to :class:`~satadvisor.saturation.SaturationTracker` (``include``,
    ``exclude``, ``threshold``, ``max_positions``…). ``phase``: the statistics logged,
    ``"train"`` (forward passes in training mode) or ``"eval"``.
    """

    def __init__(
        self,
        model: nn.Module,
        writer: Any,
        *,
        phase: str = "train",
        prefix: str = "saturation",
        **tracker_options: Any,
    ) -> None:
        self._own_writer = isinstance(writer, str)
        self.writer = _summary_writer(writer) if isinstance(writer, str) else writer
        self.tracker = SaturationTracker(model, **tracker_options)
        self.watch = SaturationWatch()
        self.phase = phase
        self.prefix = prefix

    def log_epoch(self, step: int) -> WatchState:
        """Write this epoch's profile at ``step``, then start the next epoch's statistics."""
        state = self.watch.update(self.tracker.compute(self.phase))
        for tag, value in state.scalars(self.prefix).items():
            self.writer.add_scalar(tag, value, step)
        tail = ", ".join(state.tail) or "none"
        self.writer.add_text(
            f"{self.prefix}/summary",
            f"epoch {state.epoch}: tail {tail}; {'settled' if state.settled else 'not settled'}",
            step,
        )
        self.writer.flush()
        self.tracker.reset()
        return state

    def close(self) -> None:
        self.tracker.close()
        if self._own_writer:
            self.writer.close()

    def __enter__(self) -> SaturationWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
