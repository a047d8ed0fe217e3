"""Child processes started as a command typed in a terminal would be."""

from __future__ import annotations

import signal


def as_in_a_terminal() -> None:
    """Ctrl-C's default disposition in the child (a ``preexec_fn``): a test run started as a
    background job (``pytest … &`` in a script) ignores SIGINT, and children inherit that, so
    a Ctrl-C test would see its command run on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
