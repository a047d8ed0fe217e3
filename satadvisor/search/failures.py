"""How a trial or the study's storage fails: :class:`TrialFailed` (a trial's own failure, recorded
and told as failed), :func:`storage_error` / :func:`storage_writes` (a storage that stopped
taking writes ends the command with one StorageError), and :func:`failure_reason` (the one line
recorded for an exception)."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

import optuna
import sqlalchemy.exc

from satadvisor.errors import SatAdvisorError, StorageError


def storage_error(exc: BaseException) -> bool:
    """An error of the storage itself: SQLAlchemy's (wrapped or not by Optuna), or a disk that
    is full or read-only (a journal file's append) — also as the cause or context of what
    escaped (Optuna's own "Should not reach" after a failed journal write)."""
    return storage_cause(exc) is not None


def storage_cause(exc: BaseException) -> BaseException | None:
    """The storage error in ``exc`` or its chain of causes and contexts (None: there is none)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(
            seen, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)
        ):
            return seen
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def storage_writes() -> Iterator[None]:
    """A storage that stops taking writes (a full disk, a lost server) ends the command with
    one StorageError: what is stored stays, and the rerun resumes from it."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        cause = storage_cause(exc)
        if cause is None:
            raise
        raise StorageError(
            f"the study's storage stopped taking writes ({failure_reason(cause)}); free disk space or "
            "check the database server, then rerun the same command to resume"
        ) from exc


class TrialFailed(Exception):
    """Raised by the objective for a trial that failed for a reason of its own (recorded)."""


def failure_reason(exc: BaseException) -> str:
    """The one line recorded for ``exc``: satadvisor's own message, else its type and first line."""
    if isinstance(exc, SatAdvisorError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["TrialFailed", "failure_reason", "storage_cause", "storage_error", "storage_writes"]
