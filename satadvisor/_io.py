"""Crash-safe output: files and whole directories appear complete or not at all.

- :func:`atomic_write_text` / :func:`atomic_write_bytes` write a temporary file in the target's
  own directory, fsync it and :func:`os.replace` it over the target, so a reader sees either the
  old or the new content, never a torn file.
- :func:`staged_dir` lets a report be written file by file into a hidden sibling directory; only
  when the ``with`` block finishes without an exception does that directory replace the final one
  (old one renamed aside, new one renamed into place, old one deleted). On an exception the
  previous directory stays untouched and the staging directory is removed.

Nothing satadvisor did not write is ever deleted. An existing directory is only replaced when
it is empty, or when it carries the marker file :data:`MARKER` that :func:`staged_dir` writes
(a regular file, not a link or a folder, starting with satadvisor's own line) and holds nothing
but the files that marker lists; so ``--out .`` can never delete a user's project, and a notes
file or a report the user put into a report folder keeps that folder from being replaced. A
report is never written inside another report folder (the next run there would replace it), and
a report folder is never named ``''``, ``.``, ``..`` or :data:`MARKER`.
Every ``OSError`` becomes an :class:`~satadvisor.errors.OutputError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from satadvisor._flags import flag
from satadvisor.errors import OutputError

MARKER = ".satadvisor-output"
"""File name that marks a directory as written (and so replaceable) by :func:`staged_dir`."""

_OUT = flag("out")

_MARKER_TEXT = "This directory was written by satadvisor and is replaced on the next run.\n"
"""The marker's first line. Markers written before the listing below hold only this line."""

_MARKER_LIST_HEAD = "Files it wrote (anything else here keeps it from being replaced):\n"
_MARKER_MAX_BYTES = 1 << 16
#: Attempts at swapping a report into place while other writers swap theirs.
_SWAP_TRIES = 5
_LEGACY = "/legacy"  # stands for "every regular file" (no file name contains '/')


def plain_folder_name(name: str) -> bool:
    """Whether ``name`` names one new folder inside its parent: not '', '.', '..' or the marker,
    no path separator or NUL."""
    return name not in ("", ".", "..", MARKER) and not any(c in name for c in "/\\\0")


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
    a directory written by an earlier :func:`staged_dir` that holds only what that one wrote;
    anything else, a name like ``..`` or the marker's, or a place inside another report folder
    raises :class:`OutputError` before the block runs. An ``OSError`` raised inside the block also
    becomes an :class:`OutputError`; other exceptions propagate unchanged. Either way the
    previous ``final_dir`` is left intact and the staging directory is removed.

    Once the block is done, the marker :data:`MARKER` listing the files the block wrote is
    added; only those files (and the marker) let a later run replace the directory.

    Between the two renames of the swap there is a moment without ``final_dir``; a crash exactly
    there leaves the previous report in a hidden ``.NAME.old-*`` sibling, which the next call
    puts back. Hidden siblings a killed writer left behind (``.NAME.tmp-*`` stages and
    ``.NAME.old-*`` reports, older than :data:`_STALE_SECONDS`) are removed then too.
    """
    final = Path(final_dir)
    if final.is_symlink():  # replace what the link points to, not the link itself
        final = final.resolve()
    final = final.absolute()
    _tidy_leftovers(final)
    _check_replaceable(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700; a report should be readable
    except OSError as exc:
        raise _output_error(final, exc) from exc
    try:
        yield stage
        _write_marker(stage)
        _fsync_tree(stage)
        _swap_into_place(stage, final)
    except OSError as exc:
        raise _output_error(final, exc) from exc
    finally:
        # After a successful swap the stage path no longer exists; otherwise drop the half-write.
        shutil.rmtree(stage, ignore_errors=True)


#: A hidden stage or set-aside report this old belongs to no writer still running (a report
#: is written in seconds).
_STALE_SECONDS = 600.0


def _tidy_leftovers(final: Path) -> None:
    """Put back a report that a crash between the swap's renames left aside, and remove the
    stages and set-aside reports killed writers left (only our own names and, for set-aside
    reports, only folders with our marker)."""
    import time

    try:
        siblings = list(final.parent.iterdir()) if final.parent.is_dir() else []
    except OSError:
        return
    aside = sorted(
        (p for p in siblings if p.name.startswith(f".{final.name}.old-") and p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    aside = [p for p in aside if _marker_listing(p) is not None]
    with contextlib.suppress(OSError):
        if aside and not final.exists():
            os.rename(aside.pop(0), final)  # the newest report set aside: the one to keep
    now = time.time()
    ours = re.compile(rf"\.{re.escape(final.name)}\.tmp-[a-z0-9_]{{8}}")  # mkdtemp's names
    for path in siblings:
        stale = bool(ours.fullmatch(path.name)) or path in aside
        with contextlib.suppress(OSError):
            if stale and path.is_dir() and now - path.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(path)


def check_output_dir(final_dir: str | os.PathLike[str]) -> None:
    """Raise :class:`OutputError` now if :func:`staged_dir` could not write ``final_dir`` later.

    Creates nothing. Checks that ``final_dir`` is missing, empty or an earlier report holding
    only its own files, that it is not inside another report folder, and that its nearest
    existing ancestor is a directory this process may write into. Commands call it
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
            f"pass {_OUT} with a writable directory"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write report to {final}: {ancestor} is not writable; "
            f"pass {_OUT} with a writable directory"
        )


def _check_replaceable(final: Path) -> None:
    """Raise :class:`OutputError` unless writing the report folder ``final`` deletes nothing the
    user made and writes nowhere a later run would delete."""
    if not plain_folder_name(final.name):
        raise OutputError(
            f"cannot write report to {final}: {final.name!r} is not a plain folder name; "
            f"pass {flag('name')} (or {flag('study_name')}) with letters, digits, '-', '_' or '.'"
        )
    try:
        parent = final.parent.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise OutputError(
            f"cannot write report to {final}: {final.parent} cannot be resolved "
            f"({exc.strerror if isinstance(exc, OSError) else 'symlink loop'}); "
            f"pass {_OUT} with a writable directory"
        ) from exc
    for folder in (parent, *parent.parents):
        if _marker_listing(folder) is not None:
            raise OutputError(
                f"cannot write report to {final}: {folder} is a report folder, which its next "
                f"run replaces; pass {_OUT} with a directory outside it"
            )
    if not final.exists():
        return
    if not final.is_dir():
        raise OutputError(
            f"cannot write report to {final}: it exists and is not a directory; "
            f"pass {_OUT} with a directory path"
        )
    try:
        entries = os.listdir(final)
    except OSError as exc:
        raise _output_error(final, exc) from exc
    if not entries:
        return
    listed = _marker_listing(final)
    if listed is None:
        foreign = sorted(entries)
    else:
        foreign = sorted(e for e in entries if e != MARKER and not _is_listed(final / e, listed))
    if foreign:
        shown = ", ".join(repr(e) for e in foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise OutputError(
            f"cannot write report to {final}: it holds files satadvisor did not write "
            f"({shown}); pass {_OUT} with a new or empty directory, or move them out"
        )


def _write_marker(stage: Path) -> None:
    """The marker of a finished stage: satadvisor's line, then every entry it holds
    (folders with a trailing '/')."""
    # A name with a line break cannot be listed; the folder then counts as foreign (safe).
    names = sorted(
        f"{e.name}/" if e.is_dir(follow_symlinks=False) else e.name
        for e in os.scandir(stage)
        if e.name != MARKER and not any(c in e.name for c in "\n\r")
    )
    text = _MARKER_TEXT + _MARKER_LIST_HEAD + "".join(f"{name}\n" for name in names)
    (stage / MARKER).write_text(text, encoding="utf-8")


def _marker_listing(folder: Path) -> set[str] | None:
    """The entries the marker of ``folder`` lists; None when it has no valid marker.

    Valid: a regular file (not a link, folder or device) that starts with satadvisor's own
    line. A marker from before listings (that line alone) lists the regular files only: a
    report is flat, so a folder inside one was put there by someone else.
    """
    path = folder / MARKER
    try:
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size > _MARKER_MAX_BYTES:
        return None
    try:
        with open(path, "rb") as fh:
            text = fh.read(_MARKER_MAX_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith(_MARKER_TEXT):
        return None
    rest = text[len(_MARKER_TEXT) :]
    if not rest:
        return {_LEGACY}  # an earlier satadvisor's marker: its regular files
    if not rest.startswith(_MARKER_LIST_HEAD):
        return None
    return set(rest[len(_MARKER_LIST_HEAD) :].splitlines())


def _is_listed(path: Path, listed: set[str]) -> bool:
    try:
        is_dir = stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return True  # gone meanwhile: nothing to lose
    if _LEGACY in listed:
        return not is_dir
    return (f"{path.name}/" if is_dir else path.name) in listed


def _swap_into_place(stage: Path, final: Path) -> None:
    """Rename ``stage`` to ``final``, the previous ``final`` aside first (then deleted).

    Several workers of one study finish at once and write the same report: another one may
    put its report in place, or move the previous one aside, between our renames. Then the
    swap starts over (a few times); when another's complete report took the place just as ours
    would, ours is dropped: both are the same study's, and the last one stands either way.
    """
    for _ in range(_SWAP_TRIES):
        if not final.exists():
            try:
                os.rename(stage, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                continue  # another writer's report arrived first: swap with it
            _fsync_dir(final.parent)
            return
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(final, old)
        except FileNotFoundError:
            continue  # another writer moved it aside just now
        try:
            os.rename(stage, final)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another's new report is there
                shutil.rmtree(old, ignore_errors=True)
                return
            os.rename(old, final)  # put the previous report back before reporting the failure
            raise
        _fsync_dir(final.parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(errno.EBUSY, "other processes keep replacing it at the same time")


def _output_error(final: Path, exc: OSError) -> OutputError:
    return OutputError(
        f"cannot write report to {final}: {_reason(exc)}; pass {_OUT} with a writable directory"
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
