"""Crash-safe output: files and whole directories appear complete or not at all.

- :func:`atomic_write_text` / :func:`atomic_write_bytes` write a temporary file in the target's
  own directory, fsync it and :func:`os.replace` it over the target, so a reader sees either the
  old or the new content, never a torn file.
- :func:`staged_dir` lets a report be written file by file into a hidden sibling directory; only
  when the ``with`` block finishes without an exception does that directory replace the final one
  (old one renamed aside, new one renamed into place, old one deleted). On an exception the
  previous directory stays untouched and the staging directory is removed.

An existing directory is only ever replaced when it is empty or carries the marker file
:data:`MARKER` that :func:`staged_dir` writes, so ``--out .`` can never delete a user's project.
Every ``OSError`` becomes an :class:`~satadvisor.errors.OutputError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from satadvisor.errors import OutputError

MARKER = ".satadvisor-output"
"""File name that marks a directory as written (and so replaceable) by :func:`staged_dir`."""

_MARKER_TEXT = "This directory was written by satadvisor and is replaced on the next run.\n"


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    Raises :class:`OutputError` when the file cannot be written; the previous file, if any,
    is then left as it was.
    """
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; see :func:`atomic_write_text`."""
    target = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
        tmp = None
        _fsync_dir(target.parent)
    except OSError as exc:
        raise OutputError(
            f"cannot write {target}: {_reason(exc)}; choose a writable location"
        ) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def staged_dir(final_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``final_dir`` when the block succeeds.

    The staging directory is a hidden sibling of ``final_dir`` (same file system, so the final
    rename is atomic). ``final_dir`` may be missing (it and its parents are created), empty, or
    a directory written by an earlier :func:`staged_dir`; anything else raises
    :class:`OutputError` before the block runs. An ``OSError`` raised inside the block also
    becomes an :class:`OutputError`; other exceptions propagate unchanged. Either way the
    previous ``final_dir`` is left intact and the staging directory is removed.

    Between the two renames of the swap there is a moment without ``final_dir``; a crash exactly
    there leaves the previous report in a hidden ``.NAME.old-*`` sibling.
    """
    final = Path(final_dir)
    if final.is_symlink():  # replace what the link points to, not the link itself
        final = final.resolve()
    final = final.absolute()
    _check_replaceable(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; a report should be readable
    except OSError as exc:
        raise _output_error(final, exc) from exc
    try:
        (stage / MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
        yield stage
        _fsync_tree(stage)
        _swap_into_place(stage, final)
    except OSError as exc:
        raise _output_error(final, exc) from exc
    finally:
        # After a successful swap the stage path no longer exists; otherwise drop the half-write.
        shutil.rmtree(stage, ignore_errors=True)


def check_output_dir(final_dir: str | os.PathLike[str]) -> None:
    """Raise :class:`OutputError` now if :func:`staged_dir` could not write ``final_dir`` later.

    Creates nothing. Checks that ``final_dir`` is missing, empty or an earlier report, and that
    its nearest existing ancestor is a directory this process may write into. Commands call it
    before long work, so a bad ``--out`` is reported before the training, not after it.
    """
    final = Path(final_dir)
    if final.is_symlink():
        final = final.resolve()
    final = final.absolute()
    _check_replaceable(final)
    # staged_dir writes into final.parent (the stage is a sibling), so that must be creatable.
    ancestor = final.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(
            f"cannot write report to {final}: {ancestor} is not a directory; "
            "pass --out with a writable directory"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write report to {final}: {ancestor} is not writable; "
            "pass --out with a writable directory"
        )


def _check_replaceable(final: Path) -> None:
    if not final.exists():
        return
    if not final.is_dir():
        raise OutputError(
            f"cannot write report to {final}: it exists and is not a directory; "
            "pass --out with a directory path"
        )
    try:
        entries = os.listdir(final)
    except OSError as exc:
        raise _output_error(final, exc) from exc
    if entries and MARKER not in entries:
        raise OutputError(
            f"cannot write report to {final}: it holds files satadvisor did not write; "
            "pass --out with a new or empty directory"
        )


def _swap_into_place(stage: Path, final: Path) -> None:
    if not final.exists():
        os.rename(stage, final)
        _fsync_dir(final.parent)
        return
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(final, old)
    try:
        os.rename(stage, final)
    except OSError:
        os.rename(old, final)  # put the previous report back before reporting the failure
        raise
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _output_error(final: Path, exc: OSError) -> OutputError:
    return OutputError(
        f"cannot write report to {final}: {_reason(exc)}; pass --out with a writable directory"
    )


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _umask() -> int:
    # There is no way to read the umask without setting it; set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    """Persist a directory entry (rename/create); a no-op where directories cannot be opened."""
    if os.name != "posix":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
