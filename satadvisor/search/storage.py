"""Optuna storages by URL, with one-line errors for the ways they fail.

- ``sqlite:///studies/NAME.db`` — the default; one machine, a few processes.
- ``postgresql://user:pw@host/db``, ``mysql://…`` — several machines join one study.
- ``journal:PATH`` (or a path ending in ``.log``/``.journal``) — a journal file, several
  processes on one machine (NFS-safe locking).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import sqlite3
import time
import warnings
from pathlib import Path

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from satadvisor._flags import flag
from satadvisor.errors import StorageError

#: Seconds between a running trial's heartbeats on RDB storages, and after how long without
#: one Optuna fails the trial as stale (its worker stopped) so it runs again.
HEARTBEAT_INTERVAL = 15
GRACE_PERIOD = 120
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
STUDIES_DIR = Path("studies")


def default_url(study_name: str, *, directory: Path | str = STUDIES_DIR) -> str:
    """SQLite file ``studies/<study_name>.db`` (openable with optuna-dashboard)."""
    return f"sqlite:///{Path(directory) / f'{study_name}.db'}"


def _scheme(url: str) -> str:
    head = url.split(":", 1)[0].lower() if ":" in url else ""
    return head.split("+", 1)[0]


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_sqlite_file(path: Path, url: str) -> None:
    """Refuse a file that is not SQLite, or an SQLite database of another program."""
    if not path.exists() or path.stat().st_size == 0:
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.exists():
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create {parent} for {url}: {exc.strerror}; pass {flag('storage')} "
                    "with a writable location"
                ) from exc
        return
    # Read-write where we may: a writer killed mid-transaction leaves a hot journal
    # that only a writable connection can roll back (read-only reads then fail).
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    try:
        uri = f"file:{path}?mode={'rw' if writable else 'ro'}"
        # (waiting for the lock: another worker may be creating a fresh file's tables)
        connection = sqlite3.connect(uri, uri=True, timeout=120)
        with contextlib.closing(connection) as conn:  # closed before Optuna
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
    except sqlite3.DatabaseError as exc:
        if not writable and "readonly" in str(exc):
            raise StorageError(
                f"{path} holds an unfinished transaction of a killed writer, which needs write "
                "access to roll back; make the file and its folder writable or pass another "
                f"{flag('storage')}"
            ) from exc
        raise StorageError(
            f"{path} is not an SQLite database ({exc}); it may be corrupt — move it aside or "
            f"pass another {flag('storage')}"
        ) from exc
    if tables and "studies" not in tables:
        raise StorageError(
            f"{path} is an SQLite database of another program (no Optuna tables); "
            f"pass another {flag('storage')} or {flag('study_name')}"
        )


def _is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith((".log", ".journal"))


def storage_file(url: str) -> Path | None:
    """The local file behind a journal or SQLite URL (None for servers and in-memory SQLite)."""
    if _is_journal(url):
        return Path(url.removeprefix("journal:")).expanduser()
    if _scheme(url) == "sqlite" and ":///" in url:
        db = url.split(":///", 1)[1].split("?", 1)[0]
        return Path(db).expanduser() if db not in ("", ":memory:") else None
    return None


def _check_journal_file(path: Path) -> None:
    """Refuse a file that is not an Optuna journal, before Optuna appends to it.

    Every complete line must be a JSON object with an ``op_code``; a last line without its
    newline is a write cut short by a crash, which Optuna itself skips.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise StorageError(
            f"cannot read journal file {path}: {_first_line(exc)}; check its permissions"
        ) from exc
    lines = text.split(b"\n")[:-1]  # the part after the last newline may be a torn write
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or "op_code" not in entry:
            raise StorageError(
                f"{path} is not an Optuna journal file (line {number} is not a journal entry); "
                "it may be corrupt or of another program — move it aside or pass another "
                f"{flag('storage')}"
            )


def _repair_torn_tail(path: Path) -> Path | None:
    """Set aside a last line cut short (a crash or a full disk mid-append) and end the file at
    the last complete entry; returns where the cut bytes went (None: nothing was cut).

    Optuna would append its next entry onto the cut line, making that line unreadable and the
    whole journal with it ("not an Optuna journal file" on every later run). The check runs
    under the journal's own lock (Optuna's writers hold it while they append), so a line a
    live worker is writing is never taken for a torn one. The cut bytes are kept beside the
    journal, never deleted.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut == len(data):
            return None
        aside = path.with_name(f"{path.name}.torn-{int(time.time())}")
        aside.write_bytes(data[cut:])
        with open(path, "r+b") as f:
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
        return aside
    finally:
        lock.release()


def _open_journal(path: Path) -> BaseStorage:
    _check_journal_file(path)
    try:
        torn = _repair_torn_tail(path)
    except OSError as exc:
        raise StorageError(
            f"cannot repair journal file {path} (its last line was cut): {_first_line(exc)}; "
            f"free some disk space or pass another {flag('storage')}"
        ) from exc
    if torn is not None:
        warnings.warn(
            f"{path}: its last entry was cut short (a crash or a full disk); it was moved to "
            f"{torn.name} and the journal goes on from the last complete entry",
            stacklevel=2,
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return JournalStorage(backend)
    except OSError as exc:
        raise StorageError(
            f"cannot open journal file {path}: {_first_line(exc)}; pass {flag('storage')} with a "
            "writable location"
        ) from exc
    except Exception as exc:  # entries Optuna cannot replay: another version, hand-edited
        raise StorageError(
            f"cannot read journal file {path} ({type(exc).__name__}: {_first_line(exc)}); it may "
            "be corrupt or of another Optuna version — move it aside or pass another "
            f"{flag('storage')}"
        ) from exc


def open_storage(url: str, *, heartbeat: bool = False) -> BaseStorage:
    """An Optuna storage for ``url``; unknown schemes and unreachable servers raise StorageError.

    ``heartbeat`` (workers): on RDB storages, running trials record a heartbeat every
    :data:`HEARTBEAT_INTERVAL` seconds and trials silent for :data:`GRACE_PERIOD` seconds are
    failed by ``optuna.storages.fail_stale_trials`` when a worker starts its next trial (the
    sampler then runs their configuration again). Journal files have no heartbeat.
    """
    if _is_journal(url):
        return _open_journal(Path(url.removeprefix("journal:")).expanduser())
    scheme = _scheme(url)
    if scheme not in RDB_SCHEMES:
        raise StorageError(
            f"unknown storage scheme in {url!r}: use sqlite:///file.db, postgresql://user@host/db, "
            "mysql://user@host/db or journal:file.log"
        )
    engine_kwargs: dict[str, object] = {}
    if scheme == "sqlite":
        db = Path(url.split(":///", 1)[1]) if ":///" in url else None
        if db is not None and str(db) not in ("", ":memory:"):
            _check_sqlite_file(db, url)
        # Several local workers share the file: wait for the lock instead of failing.
        engine_kwargs["connect_args"] = {"timeout": 120}
    else:
        engine_kwargs["pool_pre_ping"] = True
        if scheme in ("postgresql", "postgres"):
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        return _rdb_storage(url, engine_kwargs, heartbeat=heartbeat)
    except ImportError as exc:
        fix = (
            "pip install 'satadvisor[mysql]' and use mysql+pymysql://user@host/db"
            if scheme == "mysql"
            else "pip install 'satadvisor[postgres]'"
        )
        raise StorageError(
            f"the driver for {scheme} is not installed ({_first_line(exc)}); {fix}"
        ) from exc
    except Exception as exc:  # sqlalchemy errors of every kind: unreachable, auth, corrupt
        fix = (
            f"move the file aside or pass another {flag('storage')}"
            if scheme == "sqlite"
            else "check the URL and that the database server is running"
        )
        raise StorageError(f"cannot open storage {redact(url)}: {_first_line(exc)}; {fix}") from exc


#: Errors of workers that create a fresh storage's tables at the same moment (SQLite: "table
#: studies already exists", "UNIQUE constraint failed: version_info…"; PostgreSQL: "duplicate
#: key value violates unique constraint …", "relation … already exists"; "database is locked").
_CREATION_RACE = re.compile(
    r"already exists|duplicate key value|UNIQUE constraint failed|database is locked", re.I
)
#: How often a storage whose tables another worker is creating is opened again.
CREATION_TRIES = 8


def _rdb_storage(url: str, engine_kwargs: dict[str, object], *, heartbeat: bool) -> RDBStorage:
    """Optuna's RDBStorage, opened again when its table creation raced another worker's.

    Optuna creates a fresh database's tables (and stamps its schema version) when it opens
    it; several workers starting at once on a new file or database collide there, and all
    but one fail. What they collided on was made by the winner, so opening again succeeds.
    """
    for attempt in range(CREATION_TRIES):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=dict(engine_kwargs),
                    heartbeat_interval=HEARTBEAT_INTERVAL if heartbeat else None,
                    grace_period=GRACE_PERIOD if heartbeat else None,
                )
        except Exception as exc:
            if attempt + 1 == CREATION_TRIES or not _CREATION_RACE.search(_first_line(exc)):
                raise
            time.sleep(0.05 * (attempt + 1) * (1 + random.random()))  # let the winner finish
    raise AssertionError("unreachable")


_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|pass)=)[^&\s'\"]*")


def redact(url: str) -> str:
    """The URL without its password (``user:***@host``, ``?password=***``), for messages,
    reports and the stored command."""
    out = _QUERY_SECRET.sub(r"\1***", url)
    if "://" not in out or "@" not in out:
        return out
    scheme, rest = out.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if "/" in creds:  # an @ in the path or query, not credentials
        return out
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else out


def redact_command(command: str) -> str:
    """A command line with every storage URL in it redacted (``--storage URL`` and
    ``--storage=URL`` alike): the stored command is shown in reports and kept in the study."""
    return " ".join(redact(word) if "://" in word else word for word in command.split(" "))


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine with ``pid`` still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
