"""Ctrl-C during a search stops at the next training step, never in the middle of an import.

A KeyboardInterrupt raised wherever the main thread happens to be can land inside a lazy import
(leaving half-initialised modules behind that fail later with odd errors), inside a weakref
callback or ``__del__`` (where Python prints it and carries on, so the search does not stop),
or inside ``exec`` (after which Python kills itself with SIGINT at exit whatever exit code the
program chose). While a search runs, the first SIGINT therefore only sets a flag; the worker
loop and the training-step and epoch callbacks call :func:`checkpoint`, which raises
KeyboardInterrupt there. A second SIGINT raises at once, as usual.

Only the main thread can own signal handlers, and a handler other than Python's default (one of
the host program's, or SIGINT ignored as under ``nohup``) is left alone; :func:`checkpoint` is
then a no-op and interrupts behave as they did.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class _Deferred:
    """The SIGINT handler while a search runs: remember the first, raise on the second."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


_active: _Deferred | None = None


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Defer Ctrl-C to :func:`checkpoint` calls while the block runs (re-entrant)."""
    global _active
    usable = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if _active is not None or not usable:
        yield
        return
    handler = _Deferred()
    previous = signal.signal(signal.SIGINT, handler)
    _active = handler
    try:
        yield
        checkpoint()  # a Ctrl-C after the last checkpoint still ends the command as one
    finally:
        _active = None
        signal.signal(signal.SIGINT, previous)


def checkpoint() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed since the search started."""
    if _active is not None and _active.requested:
        raise KeyboardInterrupt


def interrupt_requested() -> bool:
    return _active is not None and _active.requested
