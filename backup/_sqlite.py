"""The SQLite backend of the backup catalog (one host): ``SQLiteCatalog``.

One file in WAL mode, so readers (``list``, ``show``) never wait for a writer; one
connection, used from worker threads one call at a time, so the event loop never blocks on
the database. The schema is versioned (``PRAGMA user_version``); opening an older catalog
migrates it. Another process's lock is waited for in short steps (``_BUSY_STEP``), the
caller's cancellation checked between them, so Ctrl-C acts at once even then. A path that is
not a catalog (a directory, another file, another program's database) is refused before a
byte is written. The schema, its migrations and that refusal are backup/_sqlite_schema.py's.
The API and its rules are QueryCatalog's (backup/_catalog.py);
PostgresCatalog (backup/_postgres.py) is the backend several hosts share.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio.from_thread
import anyio.to_thread

from ._catalog import (
    _COLUMNS,
    PARENT_STATUSES,
    WORKER_FIELDS,
    BackupRecord,
    BackupStatus,
    QueryCatalog,
    _from_row,
    _now,
    check_transition,
    list_filter,
    refuse_lost_race,
    reset_record,
)
from ._errors import BackupError, BackupNotFoundError, CatalogLockedError, InvalidStatusTransitionError
from ._sqlite_schema import SCHEMA_VERSION, migrate, refuse_a_foreign_file

__all__ = ["LOCK_TIMEOUT", "SCHEMA_VERSION", "SQLiteCatalog"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

#: How long one call waits for another process's lock on the file before giving up.
LOCK_TIMEOUT = 30.0
# SQLite's own busy wait per try; between tries the caller's cancellation is checked.
_BUSY_STEP = 0.1


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock this statement needs (SQLITE_BUSY or SQLITE_LOCKED)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _check_cancelled() -> None:
    """The host task's cancellation, raised in its worker thread (nothing outside one)."""
    try:
        anyio.from_thread.check_cancelled()
    except anyio.NoEventLoopError:
        pass


def _param(value: Any) -> Any:
    """A Python value as SQLite stores it; text that is not valid UTF-8 (lone surrogates
    from ``surrogateescape``) is stored as a BLOB of its original bytes."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BackupStatus):
        return value.value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape")
    return value


def _to_row(record: BackupRecord) -> tuple[Any, ...]:
    return tuple(_param(getattr(record, name)) for name in _COLUMNS)


# SQLite's queries: blocking functions of the connection, each run in a worker thread with
# the catalog's lock held (``in_worker_thread``); every write is one BEGIN IMMEDIATE … COMMIT.


def _sqlite_rows(conn: sqlite3.Connection, where: str, args: Sequence[Any]) -> list[BackupRecord]:
    rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM backups{where} ORDER BY created_at, id",
                        [_param(a) for a in args])
    return [_from_row(r) for r in rows]


def _sqlite_select(conn: sqlite3.Connection, backup_id: str) -> BackupRecord:
    found = _sqlite_rows(conn, " WHERE id = ?", [backup_id])
    if not found:
        raise BackupNotFoundError(f"backup {backup_id!r} not found")
    return found[0]


def _sqlite_select_many(conn: sqlite3.Connection, project_id: str | None, include_deleted: bool,
                        volume_id: str | None) -> list[BackupRecord]:
    return _sqlite_rows(conn, *list_filter(project_id, include_deleted, volume_id, "?"))


def _sqlite_dependents(conn: sqlite3.Connection, backup_id: str) -> list[BackupRecord]:
    return _sqlite_rows(conn, " WHERE parent_id = ? AND status != ?", [backup_id, BackupStatus.DELETED.value])


def _sqlite_existed_between(conn: sqlite3.Connection, start: datetime, end: datetime) -> list[BackupRecord]:
    # ISO 8601 in UTC with the same offset sorts as text; compare parsed values anyway,
    # so a catalog written with another offset stays right.
    return [r for r in _sqlite_rows(conn, "", []) if r.created_at < end
            and (r.deleted_at is None or r.deleted_at > start)]


def _sqlite_write(conn: sqlite3.Connection, record: BackupRecord, guard: str = "", guard_args: Sequence[Any] = ()) -> int:
    """UPDATE the whole row, only where ``guard`` (SQL after ``AND``) holds; rows changed."""
    sets = ", ".join(f"{name} = ?" for name in _COLUMNS if name != "id")
    row = _to_row(record)
    cursor = conn.execute(f"UPDATE backups SET {sets} WHERE id = ?{guard}",
                          (*row[1:], row[0], *[_param(a) for a in guard_args]))
    return cursor.rowcount


def _sqlite_insert(conn: sqlite3.Connection, record: BackupRecord) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if record.parent_id is not None:
            parent = _sqlite_select(conn, record.parent_id)
            if parent.status not in PARENT_STATUSES or not _sqlite_write(
                    conn, replace(parent, num_dependent_backups=parent.num_dependent_backups + 1, updated_at=_now()),
                    " AND status = ? AND num_dependent_backups = ?", [parent.status, parent.num_dependent_backups]):
                raise InvalidStatusTransitionError(
                    f"backup {parent.id!r} is {parent.status.value}: an incremental backup needs an available parent")
        marks = ", ".join("?" for _ in _COLUMNS)
        conn.execute(f"INSERT INTO backups ({', '.join(_COLUMNS)}) VALUES ({marks})", _to_row(record))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _sqlite_update(conn: sqlite3.Connection, backup_id: str, to: BackupStatus | None,
                   changes: dict[str, Any], expect: BackupRecord | None = None) -> BackupRecord:
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = conn.execute("SELECT status FROM backups WHERE id = ?", [backup_id]).fetchone()
        current = _sqlite_select(conn, backup_id)
        stored = found[0] if found else None
        if expect is not None:
            refuse_lost_race(current, expect, to)
        now = _now()
        if to is not None:
            check_transition(current, to, lambda: [r.id for r in _sqlite_dependents(conn, backup_id)])
            changes = {**changes, "status": to}
            if to is BackupStatus.DELETED:
                changes["deleted_at"] = now
                if current.parent_id is not None:
                    try:
                        parent = _sqlite_select(conn, current.parent_id)
                    except BackupNotFoundError:
                        parent = None
                    if parent is not None:
                        _sqlite_write(conn, replace(parent, updated_at=now,
                                             num_dependent_backups=max(0, parent.num_dependent_backups - 1)))
        updated = replace(current, updated_at=now, **changes)
        # compare-and-set on what was checked (BEGIN IMMEDIATE already serializes writers
        # of one file; the guard states the rule the PostgreSQL backend needs as well)
        guard, args = " AND status = ?", [stored]  # as stored (a damaged status loads as error)
        if to is BackupStatus.DELETING:
            guard += " AND num_dependent_backups = 0"
        if expect is not None:
            guard += "".join(f" AND {name} IS ?" for name in WORKER_FIELDS)
            args += [getattr(expect, name) for name in WORKER_FIELDS]
        if _sqlite_write(conn, updated, guard, args) != 1:
            refuse_lost_race(_sqlite_select(conn, backup_id), expect or current, to)
            raise InvalidStatusTransitionError(f"backup {backup_id!r} changed while it was being updated")
        conn.execute("COMMIT")
        return updated
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _sqlite_reset(conn: sqlite3.Connection, backup_id: str, to: BackupStatus, expect: BackupRecord, user: str,
                  host: str, fail_reason: str | None) -> BackupRecord:
    conn.execute("BEGIN IMMEDIATE")
    try:
        stored = conn.execute("SELECT status FROM backups WHERE id = ?", [backup_id]).fetchone()
        current = _sqlite_select(conn, backup_id)
        updated = reset_record(current, expect, to, user=user, host=host, fail_reason=fail_reason, now=_now())
        guard = " AND status = ?" + "".join(f" AND {name} IS ?" for name in WORKER_FIELDS)
        if _sqlite_write(conn, updated, guard, [stored[0], *(getattr(expect, f) for f in WORKER_FIELDS)]) != 1:
            raise InvalidStatusTransitionError(f"backup {backup_id!r} changed while it was being reset")
        conn.execute("COMMIT")
        return updated
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def in_worker_thread(query: Callable[Concatenate[sqlite3.Connection, _P], _T]
                     ) -> Callable[Concatenate[SQLiteCatalog, sqlite3.Connection, _P], Coroutine[Any, Any, _T]]:
    """A blocking SQLite query in QueryCatalog's shape: it runs in a worker thread (the event
    loop never waits on the database), one call at a time on the catalog's connection."""

    async def run(catalog: SQLiteCatalog, conn: sqlite3.Connection, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        def locked() -> _T:
            with catalog._lock:
                return catalog._waiting_for_lock(lambda: query(conn, *args, **kwargs))

        return await anyio.to_thread.run_sync(locked)

    return run


class SQLiteCatalog(QueryCatalog[sqlite3.Connection]):
    """One SQLite file, one connection used from worker threads, one call at a time."""

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        #: Lock waits that ended because the caller was cancelled (the CLI says so after Ctrl-C).
        self.interrupted_lock_waits = 0
        #: Called (in a worker thread) once per wait for another process's lock, as it starts.
        self.on_lock_wait: Callable[[], None] | None = None
        self._give_up_at: float | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def give_up_lock_waits(self, after: float = 0.0) -> None:
        """Let every wait for another process's lock, now or later, end ``after`` seconds
        from now with CatalogLockedError, even a shielded one (an interrupted command's
        error report must not hold Ctrl-C up for the whole lock_timeout)."""
        deadline = time.monotonic() + after
        self._give_up_at = deadline if self._give_up_at is None else min(self._give_up_at, deadline)

    def _waiting_for_lock(self, work: Callable[[], _T]) -> _T:
        """``work`` (one whole transaction, rolled back when it fails) in this worker thread,
        tried again while another process holds the file's lock: up to lock_timeout, and
        only while the caller is not cancelled (checked every _BUSY_STEP)."""
        started = time.monotonic()
        told = False
        while True:
            try:
                return work()
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
            if not told and self.on_lock_wait is not None:
                told = True
                self.on_lock_wait()
            now = time.monotonic()
            if now - started >= self.lock_timeout or (self._give_up_at is not None and now >= self._give_up_at):
                raise CatalogLockedError(f"backup catalog {str(self.path)!r} is locked by another process"
                                         f" (waited {now - started:.1f} s)")
            try:
                _check_cancelled()
            except BaseException:
                self.interrupted_lock_waits += 1
                raise

    def __repr__(self) -> str:
        return f"SQLiteCatalog({str(self.path)!r})"

    # -- lifecycle ---------------------------------------------------------------------

    def _open(self) -> None:
        refuse_a_foreign_file(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=_BUSY_STEP)
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"cannot open backup catalog {str(self.path)!r}: {exc}") from None
        try:
            self._waiting_for_lock(lambda: self._prepare(conn))
        except sqlite3.Error as exc:
            conn.close()
            raise BackupError(f"cannot open backup catalog {str(self.path)!r}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        migrate(conn, self.path)

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close)

    async def _run(self, query: Callable[Concatenate[sqlite3.Connection, _P], Awaitable[_T]], /,
                   *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._conn is None:
            raise BackupError(f"backup catalog {str(self.path)!r} is not open")
        try:
            return await query(self._conn, *args, **kwargs)
        except sqlite3.Error as exc:
            raise BackupError(f"backup catalog {str(self.path)!r}: {exc}") from None

    # -- the queries (above), each in a worker thread ----------------------------------------

    _insert = in_worker_thread(_sqlite_insert)
    _select = in_worker_thread(_sqlite_select)
    _select_many = in_worker_thread(_sqlite_select_many)
    _dependents = in_worker_thread(_sqlite_dependents)
    _existed_between = in_worker_thread(_sqlite_existed_between)
    _update = in_worker_thread(_sqlite_update)
    _reset = in_worker_thread(_sqlite_reset)
