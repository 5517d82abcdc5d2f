"""The backup catalog: one SQLite row per backup, with validated status transitions.

SQLite runs in WAL mode so readers (``list``, ``show``) never wait for a writer, and every
call goes through a worker thread so the event loop never blocks on the database.
"""

from __future__ import annotations

import enum
import math
import os
import sqlite3
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio.to_thread

from ._errors import BackupError, BackupNotFoundError, InvalidStatusTransitionError

__all__ = ["GIB", "TRANSITIONS", "BackupCatalog", "BackupRecord", "BackupStatus", "new_backup_id", "size_in_gib"]

GIB = 1024**3


def size_in_gib(size_bytes: int) -> int:
    """Whole GiB rounded up, as Cinder reports volume and backup sizes."""
    return math.ceil(size_bytes / GIB)


class BackupStatus(enum.StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    DELETING = "deleting"
    DELETED = "deleted"
    RESTORING = "restoring"
    ERROR = "error"
    ERROR_DELETING = "error_deleting"
    ERROR_RESTORING = "error_restoring"


S = BackupStatus
# Where each status may go next. A failed restore leaves the data intact, so it can be
# restored again or deleted; a failed create or delete can only be deleted (again).
TRANSITIONS: Mapping[BackupStatus, frozenset[BackupStatus]] = {
    S.CREATING: frozenset({S.AVAILABLE, S.ERROR}),
    S.AVAILABLE: frozenset({S.RESTORING, S.DELETING}),
    S.RESTORING: frozenset({S.AVAILABLE, S.ERROR_RESTORING}),
    S.ERROR_RESTORING: frozenset({S.RESTORING, S.DELETING}),
    S.ERROR: frozenset({S.DELETING}),
    S.DELETING: frozenset({S.DELETED, S.ERROR_DELETING}),
    S.ERROR_DELETING: frozenset({S.DELETING}),
    S.DELETED: frozenset(),
}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class BackupRecord:
    """One backup as the catalog stores it; immutable, replaced on every update."""

    id: str
    project_id: str
    user_id: str
    availability_zone: str
    host: str
    display_name: str | None
    volume_id: str
    volume_path: str
    service: str
    status: BackupStatus = BackupStatus.CREATING
    size_bytes: int = 0
    object_count: int = 0
    service_metadata: str | None = None
    container: str | None = None
    fail_reason: str | None = None
    parent_id: str | None = None
    snapshot_id: str | None = None
    num_dependent_backups: int = 0
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)

    @property
    def size(self) -> int:
        """Size in GiB, rounded up (Cinder's ``size``)."""
        return size_in_gib(self.size_bytes)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view (for ``show`` and ``list --json``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, BackupStatus):
                value = value.value
            out[f.name] = value
        out["size"] = self.size
        return out


_COLUMNS = [f.name for f in fields(BackupRecord)]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS backups (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    availability_zone TEXT NOT NULL,
    host TEXT NOT NULL,
    display_name TEXT,
    volume_id TEXT NOT NULL,
    volume_path TEXT NOT NULL,
    service TEXT NOT NULL,
    status TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    object_count INTEGER NOT NULL,
    service_metadata TEXT,
    container TEXT,
    fail_reason TEXT,
    parent_id TEXT,
    snapshot_id TEXT,
    num_dependent_backups INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS backups_project ON backups (project_id, created_at);
"""
_UPDATABLE = {"size_bytes", "object_count", "service_metadata", "container", "fail_reason", "volume_id"}


def _to_row(record: BackupRecord) -> tuple[Any, ...]:
    values: list[Any] = []
    for name in _COLUMNS:
        value = getattr(record, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, BackupStatus):
            value = value.value
        values.append(value)
    return tuple(values)


def _from_row(row: sqlite3.Row) -> BackupRecord:
    data = dict(zip(_COLUMNS, row, strict=True))
    data["status"] = BackupStatus(data["status"])
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    data["updated_at"] = datetime.fromisoformat(data["updated_at"])
    return BackupRecord(**data)


def new_backup_id() -> str:
    return str(uuid.uuid4())


class BackupCatalog:
    """Async facade over one SQLite connection used from worker threads, one at a time."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BackupCatalog({str(self.path)!r})"

    # -- lifecycle ---------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"cannot open backup catalog {str(self.path)!r}: {exc}") from None
        self._conn = conn

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _run(self, fn: Any, *args: Any) -> Any:
        def locked() -> Any:
            if self._conn is None:
                raise BackupError(f"backup catalog {str(self.path)!r} is not open")
            with self._lock:
                try:
                    return fn(self._conn, *args)
                except sqlite3.Error as exc:
                    raise BackupError(f"backup catalog {str(self.path)!r}: {exc}") from None

        return await anyio.to_thread.run_sync(locked)

    # -- queries -----------------------------------------------------------------------

    @staticmethod
    def _insert(conn: sqlite3.Connection, record: BackupRecord) -> None:
        marks = ", ".join("?" for _ in _COLUMNS)
        conn.execute(f"INSERT INTO backups ({', '.join(_COLUMNS)}) VALUES ({marks})", _to_row(record))

    @staticmethod
    def _select(conn: sqlite3.Connection, backup_id: str) -> BackupRecord:
        row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM backups WHERE id = ?", (backup_id,)).fetchone()
        if row is None:
            raise BackupNotFoundError(f"backup {backup_id!r} not found")
        return _from_row(row)

    @staticmethod
    def _select_many(conn: sqlite3.Connection, project_id: str | None, include_deleted: bool) -> list[BackupRecord]:
        where, args = [], []
        if project_id is not None:
            where.append("project_id = ?")
            args.append(project_id)
        if not include_deleted:
            where.append("status != ?")
            args.append(BackupStatus.DELETED.value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM backups{clause} ORDER BY created_at, id", args)
        return [_from_row(r) for r in rows]

    @classmethod
    def _update(cls, conn: sqlite3.Connection, backup_id: str, to: BackupStatus | None,
                changes: dict[str, Any]) -> BackupRecord:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = cls._select(conn, backup_id)
            if to is not None:
                legal = TRANSITIONS[current.status]
                if to not in legal:
                    nexts = ", ".join(sorted(legal)) or "nothing (final)"
                    raise InvalidStatusTransitionError(
                        f"backup {backup_id!r} is {current.status.value}: cannot become {to.value}"
                        f" (from {current.status.value} it may become: {nexts})"
                    )
                changes = {**changes, "status": to}
            updated = replace(current, updated_at=_now(), **changes)
            sets = ", ".join(f"{name} = ?" for name in _COLUMNS if name != "id")
            row = _to_row(updated)
            conn.execute(f"UPDATE backups SET {sets} WHERE id = ?", (*row[1:], backup_id))
            conn.execute("COMMIT")
            return updated
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def add(self, record: BackupRecord) -> BackupRecord:
        """Insert a new record."""
        await self._run(self._insert, record)
        return record

    async def get(self, backup_id: str) -> BackupRecord:
        """The record, or BackupNotFoundError."""
        result: BackupRecord = await self._run(self._select, backup_id)
        return result

    async def list(self, *, project_id: str | None = None, include_deleted: bool = False) -> list[BackupRecord]:
        """Records oldest first; deleted ones only when asked."""
        result: list[BackupRecord] = await self._run(self._select_many, project_id, include_deleted)
        return result

    async def transition(self, backup_id: str, to: BackupStatus, **changes: Any) -> BackupRecord:
        """Move to status ``to`` if TRANSITIONS allows it from the current status (atomically),
        applying ``changes``; else InvalidStatusTransitionError naming both statuses."""
        self._check_fields(changes)
        result: BackupRecord = await self._run(self._update, backup_id, to, changes)
        return result

    async def update(self, backup_id: str, **changes: Any) -> BackupRecord:
        """Change fields other than the status."""
        self._check_fields(changes)
        result: BackupRecord = await self._run(self._update, backup_id, None, changes)
        return result

    @staticmethod
    def _check_fields(changes: Mapping[str, Any]) -> None:
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise BackupError(f"catalog fields {sorted(unknown)} cannot be updated")

