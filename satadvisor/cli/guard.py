"""How a command ends: library errors as one line and exit 2, warnings held for one invocation,
Ctrl-C deferred to the command's checkpoints (exit 130), stdout kept for ``--json``.

Each command runs its body inside :func:`errors` and :func:`deferred_interrupts`; the command
group (:class:`Main`) catches a Ctrl-C that reaches it outside any command.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any

import click

from satadvisor._flags import flag
from satadvisor.errors import SatAdvisorError


class Fail(click.ClickException):
    """A one-line error on stderr and exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"satadvisor: error: {self.format_message()}", err=True)


class HeldWarnings:
    """The warnings of one command, each as one line on stderr: satadvisor's own at once;
    other libraries' (torch, PIL, the model file…) held, shown when the command succeeds and
    dropped when it ends in an error line (which then stands alone)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def show(self) -> None:
        for line in dict.fromkeys(self.lines):  # once each, in order
            click.echo(line, err=True)
        self.lines.clear()

    def showwarning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        """A :func:`warnings.showwarning` replacement, installed for the command only."""
        parts = filename.replace("\\", "/").split("/")
        if "satadvisor" in parts:
            click.echo(f"satadvisor: warning: {message}", err=True)
            return
        text = str(message).strip().splitlines()
        where = "/".join(parts[-2:])
        self.lines.append(
            f"satadvisor: warning: {text[0] if text else ''} ({category.__name__}, {where}:{lineno})"
        )


@contextmanager
def errors(debug: bool) -> Iterator[None]:
    """Turn library errors into one line and exit code 2 (the traceback only with --debug);
    warnings are shown as :class:`HeldWarnings` says while the command runs (the process's
    warning display and filters are put back afterwards)."""
    import warnings

    held = HeldWarnings()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = held.showwarning
            yield
    except SatAdvisorError as exc:
        if debug:
            held.show()
            raise
        raise Fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    except KeyboardInterrupt:
        click.echo("satadvisor: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug or not out_of_memory(exc):
            held.show()
            raise
        raise Fail(
            f"out of device memory; pass a smaller {flag('batch_size')} or "
            f"{flag('resolution')}, or {flag('device')} cpu"
        ) from exc
    held.show()


@contextmanager
def stdout_kept_for(as_json: bool) -> Iterator[Any]:
    """With ``--json``, what the model file prints goes to stderr while the command runs, so
    stdout holds the JSON alone; yields the real stdout to print it to."""
    stdout = sys.stdout
    if not as_json:
        yield stdout
        return
    with redirect_stdout(sys.stderr):
        yield stdout


def out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, checked without importing torch (it is loaded when it ran)."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(exc, oom)


class Interrupts:
    """Ctrl-C outside the search: the first one stops the command at its next checkpoint.

    A KeyboardInterrupt raised wherever the main thread happens to be can be swallowed (in a
    weakref callback or ``__del__``: the command then runs on and exits 0), or pass through an
    import (Python then kills itself with SIGINT at exit, exit code -2, whatever the command
    chose). So, as in the search (``satadvisor.search._signals``), the first SIGINT only sets a
    flag; :meth:`checkpoint` (each training step, between the phases of a command, at the end)
    raises KeyboardInterrupt there, which :func:`errors` turns into exit 130. A second SIGINT
    raises at once. A handler other than Python's default (SIGINT ignored under ``nohup``, a
    host program's) is left alone.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        usable = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        if usable and not self._installed:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def checkpoint(self, *_: Any) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed (usable as a progress callback)."""
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Python's own handling while the block runs (the search defers Ctrl-C itself)."""
        self.checkpoint()
        self.uninstall()
        try:
            yield
        finally:
            self.install()


@contextmanager
def deferred_interrupts() -> Iterator[Interrupts]:
    """:class:`Interrupts` installed while the command runs."""
    guard = Interrupts()
    guard.install()
    try:
        yield guard
        guard.checkpoint()  # a Ctrl-C after the last checkpoint still ends the command as one
    finally:
        guard.uninstall()


class Main(click.Group):
    """The command group: a Ctrl-C that reaches it (outside any command's own handling)
    exits 130 with ``satadvisor: interrupted``, like one inside a command, not click's
    ``Aborted!`` with exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("satadvisor: interrupted", err=True)
            sys.exit(130)
