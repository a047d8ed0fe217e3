"""Running a model file: once per process for each version of the file.

:func:`execute` runs the file as a module (its directory first on ``sys.path`` meanwhile) and
keeps it, keyed by the file's resolved path: loading the same file again while its
modification time, size and content are unchanged returns the same module without running it
again, so a command that loads the file in several places (the CLI, the search, its worker,
the validation) runs the user's code once. A changed file is run again. The module is
registered in ``sys.modules`` under one name per file (derived from its path, so a worker
process that loads the same file uses the same name: dataclasses and pickled objects defined
in the file resolve there too); running a new version replaces that one entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from satadvisor.errors import ModelFileError


@dataclass(frozen=True)
class _Version:
    """What identifies one version of a file: (mtime_ns, size) and a hash of the content
    (mtime's granularity is coarse on some filesystems, so a same-size rewrite within one tick
    still counts as a change)."""

    mtime_ns: int
    size: int
    digest: str


_loaded: dict[str, tuple[_Version, ModuleType]] = {}


def execute(path: Path, shown: str) -> ModuleType:
    """The module of the model file at ``path`` (absolute), run now unless this version of the
    file already ran in this process. Every failure is a one-line :class:`ModelFileError`."""
    try:
        with open(path, "rb") as handle:
            status = os.fstat(handle.fileno())
            content = handle.read()
    except OSError as exc:
        raise ModelFileError(
            f"{shown}: cannot be read ({exc.strerror or type(exc).__name__}); check the file's "
            "permissions"
        ) from exc
    key = os.path.realpath(path)
    version = _Version(status.st_mtime_ns, status.st_size, hashlib.sha256(content).hexdigest())
    cached = _loaded.get(key)
    if cached is not None and cached[0] == version:
        return cached[1]
    _loaded.pop(key, None)
    module = _run(path, shown, module_name(key))
    _loaded[key] = (version, module)
    return module


def module_name(key: str) -> str:
    """The ``sys.modules`` name of the file at resolved path ``key``: its stem and a hash of
    the path (the same in every process)."""
    stem = "".join(c if c.isalnum() else "_" for c in Path(key).stem)
    return f"_satadvisor_model_{stem}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _run(path: Path, shown: str, name: str) -> ModuleType:
    """Run the file as a fresh module ``name`` (its directory on sys.path meanwhile)."""
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    module_spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    if module_spec is None:  # pragma: no cover - only for exotic paths
        raise ModelFileError(f"{shown}: cannot be loaded as Python; pass a .py file")
    module = importlib.util.module_from_spec(module_spec)
    # Registered while it runs, so dataclasses and pickling inside the file work; it replaces
    # the entry of an earlier version of the same file.
    sys.modules[name] = module
    try:
        with on_sys_path(str(path.parent)):
            loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        line = f":{exc.lineno}" if exc.lineno is not None else ""
        where = f"{shown}{line}"
        if exc.filename and os.path.abspath(exc.filename) != str(path):
            where = f"{shown}: in {exc.filename}{line}"
        raise ModelFileError(f"{where}: syntax error: {exc.msg}; fix the model file") from None
    except SystemExit:
        sys.modules.pop(name, None)
        raise ModelFileError(
            f"{_line(path, shown, sys.exc_info()[2])}: the file exits when loaded; put script "
            'code under `if __name__ == "__main__":`'
        ) from None
    except Exception as exc:
        sys.modules.pop(name, None)
        where = _line(path, shown, exc.__traceback__)
        if isinstance(exc, ImportError):
            raise ModelFileError(
                f"{where}: import failed: {one_line(exc)}; install the package or fix the import"
            ) from exc
        raise ModelFileError(
            f"{where}: loading the file raised {type(exc).__name__}: {one_line(exc)}; "
            "fix the model file"
        ) from exc
    return module


def _line(path: Path, shown: str, tb: Any) -> str:
    """``shown:LINE`` of the deepest traceback frame inside the model file, else ``shown``."""
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if os.path.abspath(frame.f_code.co_filename) == str(path):
            line = lineno
    return f"{shown}:{line}" if line is not None else shown


def source_of(path: Path) -> str:
    """The path relative to the working directory when it lies under it, else absolute."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith(os.pardir) else relative


@contextlib.contextmanager
def on_sys_path(directory: str | None) -> Iterator[None]:
    """Put ``directory`` first on sys.path while the block runs (sibling imports work)."""
    if directory is None or directory in sys.path:
        yield
        return
    sys.path.insert(0, directory)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(directory)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (whitespace collapsed, at most 300 characters)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
