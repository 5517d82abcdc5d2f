"""The backup catalog: one record per backup, with validated status transitions.

``BackupCatalog`` is the interface the service uses; ``QueryCatalog`` writes its methods once
over a backend's queries; ``SQLiteCatalog`` is the SQLite backend (one host),
``PostgresCatalog`` (backup/_postgres.py) the one several hosts share.
Rules that must hold across processes and hosts (legal status transitions, a parent's
``num_dependent_backups``, refusing to delete a backup others depend on, ``deleted_at``)
are applied by the backend atomically, inside one transaction per call, and every state
change is a conditional update (compare-and-set on the status it was checked against), so
of two processes racing for the same backup exactly one wins.

SQLite runs in WAL mode so readers (``list``, ``show``) never wait for a writer, and every
call goes through a worker thread so the event loop never blocks on the database. The
schema is versioned (``PRAGMA user_version``); opening an older catalog migrates it.
"""

from __future__ import annotations

import builtins
import enum
import math
import os
import sqlite3
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar
from urllib.parse import quote

import anyio.to_thread

from ._errors import BackupError, BackupNotFoundError, DependentBackupsError, InvalidStatusTransitionError

__all__ = [
    "GIB",
    "SCHEMA_VERSION",
    "TRANSITIONS",
    "UPDATABLE_FIELDS",
    "WORKER_FIELDS",
    "BackupCatalog",
    "BackupRecord",
    "BackupStatus",
    "QueryCatalog",
    "SQLiteCatalog",
    "new_backup_id",
    "size_in_gib",
]

GIB = 1024**3
_T = TypeVar("_T")


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
# A parent must be in one of these for an increment to be started on it.
PARENT_STATUSES = frozenset({S.AVAILABLE, S.RESTORING})


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class BackupRecord:
    """One backup as the catalog stores it; immutable, replaced on every update.

    Text fields may hold lone surrogates (the ``surrogateescape`` form of a non-UTF-8 path
    or name); a backend must store and return them unchanged.
    """

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
    # Where the objects are: the store's kind (posix, swift, …) and its location, redacted.
    store_kind: str | None = None
    store_location: str | None = None
    deleted_at: datetime | None = None
    # The process running the current operation (see _liveness); None when none runs.
    worker_pid: int | None = None
    worker_token: str | None = None
    # A restore's target, so recover can remove what a killed restore left next to it.
    restore_target: str | None = None
    # The host running the current operation (any host may restore or delete any backup).
    worker_host: str | None = None

    @property
    def size(self) -> int:
        """Size in GiB, rounded up (Cinder's ``size``)."""
        return size_in_gib(self.size_bytes)

    @property
    def is_incremental(self) -> bool:
        return self.parent_id is not None

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
        out["is_incremental"] = self.is_incremental
        return out


# Fields ``update``/``transition`` may change; the rest are fixed at ``add`` or kept by the
# backend itself (status, num_dependent_backups, deleted_at, updated_at).
UPDATABLE_FIELDS = frozenset({"size_bytes", "object_count", "service_metadata", "container", "fail_reason",
                              "volume_id", "worker_pid", "worker_token", "restore_target", "worker_host"})
# The fields that name the process running a backup's current operation.
WORKER_FIELDS = ("worker_host", "worker_pid", "worker_token")


def new_backup_id() -> str:
    return str(uuid.uuid4())


class BackupCatalog(ABC):
    """Where backup records live. Every method is atomic on its own, whatever the backend."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect, creating or migrating the schema; BackupError if that is impossible."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def add(self, record: BackupRecord) -> BackupRecord:
        """Insert a new record. With a ``parent_id``, the parent must exist and be available
        (or restoring); its ``num_dependent_backups`` grows by one in the same transaction."""

    @abstractmethod
    async def get(self, backup_id: str) -> BackupRecord:
        """The record, or BackupNotFoundError."""

    @abstractmethod
    async def list(self, *, project_id: str | None = None, include_deleted: bool = False,
                   volume_id: str | None = None) -> builtins.list[BackupRecord]:
        """Records oldest first (created_at, then id); deleted ones only when asked."""

    @abstractmethod
    async def dependents(self, backup_id: str) -> builtins.list[BackupRecord]:
        """The backups not yet deleted whose parent is ``backup_id``, oldest first."""

    @abstractmethod
    async def existed_between(self, start: datetime, end: datetime) -> builtins.list[BackupRecord]:
        """Every backup that existed at some time in [start, end): created before ``end`` and
        not deleted by ``start`` (the usage audit's window, as Cinder's
        ``backup_get_all_active_by_window``)."""

    @abstractmethod
    async def transition(self, backup_id: str, to: BackupStatus, *, expect: BackupRecord | None = None,
                         **changes: Any) -> BackupRecord:
        """Move to status ``to`` if TRANSITIONS allows it from the current status (atomically),
        applying ``changes``; else InvalidStatusTransitionError naming both statuses.

        The write is conditional on the status it was checked against, so a concurrent change
        (another process, another host) makes this call fail the same way. With ``expect``,
        it is also conditional on the record still having ``expect``'s status and worker
        (``recover`` fails an operation only if nobody took the backup over meanwhile).

        Moving to ``deleting`` is refused with DependentBackupsError while other backups
        depend on this one; reaching ``deleted`` sets ``deleted_at`` and takes one off the
        parent's ``num_dependent_backups``."""

    @abstractmethod
    async def update(self, backup_id: str, **changes: Any) -> BackupRecord:
        """Change fields other than the status (only UPDATABLE_FIELDS)."""

    @staticmethod
    def check_fields(changes: Mapping[str, Any]) -> None:
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise BackupError(f"catalog fields {sorted(unknown)} cannot be updated")


def refuse_lost_race(current: BackupRecord, expect: BackupRecord, to: BackupStatus | None) -> None:
    """InvalidStatusTransitionError if ``current`` is no longer in ``expect``'s status, run by
    ``expect``'s worker: another operation changed the backup since it was read."""
    if current.status is expect.status and all(getattr(current, f) == getattr(expect, f) for f in WORKER_FIELDS):
        return
    by = f" (now run by host {current.worker_host!r})" if current.worker_host else ""
    goal = f"cannot become {to.value}" if to is not None else "not updated"
    raise InvalidStatusTransitionError(
        f"backup {current.id!r} is {current.status.value}{by}: {goal}; another operation changed it since it was read")


def check_transition(current: BackupRecord, to: BackupStatus, dependents: Callable[[], Sequence[str]]) -> None:
    """The rules of ``transition``, for every backend: a legal move, and no delete while
    other backups depend on this one (``dependents`` lists their ids)."""
    legal = TRANSITIONS[current.status]
    if to not in legal:
        nexts = ", ".join(sorted(legal)) or "nothing (final)"
        raise InvalidStatusTransitionError(
            f"backup {current.id!r} is {current.status.value}: cannot become {to.value}"
            f" (from {current.status.value} it may become: {nexts})"
        )
    if to is BackupStatus.DELETING and current.num_dependent_backups > 0:
        ids = list(dependents())
        named = ", ".join(ids) if ids else f"{current.num_dependent_backups} backup(s)"
        raise DependentBackupsError(
            f"backup {current.id!r} has dependent incremental backups: delete them first ({named})")


def list_filter(project_id: str | None, include_deleted: bool, volume_id: str | None,
                mark: str) -> tuple[str, list[Any]]:
    """``list``'s filter for every backend: the WHERE clause (empty, or `` WHERE …`` with the
    driver's placeholder ``mark``) and its arguments."""
    where: list[str] = []
    args: list[Any] = []
    if project_id is not None:
        where.append(f"project_id = {mark}")
        args.append(project_id)
    if volume_id is not None:
        where.append(f"volume_id = {mark}")
        args.append(volume_id)
    if not include_deleted:
        where.append(f"status != {mark}")
        args.append(BackupStatus.DELETED.value)
    return (f" WHERE {' AND '.join(where)}" if where else ""), args


# -- the API, once for every backend ---------------------------------------------------------

_C = TypeVar("_C")
_P = ParamSpec("_P")


class QueryCatalog(BackupCatalog, Generic[_C]):
    """BackupCatalog's methods written once for every backend: each checks its arguments and
    runs one of the backend's queries through the backend's ``_run``.

    A query is a coroutine function of the backend's connection (``_C``) that does one call's
    whole work in one transaction. A backend whose driver blocks lifts its blocking queries
    into that shape (SQLite: ``in_worker_thread``), so the types hold for both."""

    @abstractmethod
    async def _run(self, query: Callable[Concatenate[_C, _P], Awaitable[_T]], /,
                   *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``query(connection, *args)``, one call at a time; a closed catalog or a driver error
        is a BackupError naming the catalog."""

    # -- the backend's queries -----------------------------------------------------------

    @abstractmethod
    async def _insert(self, conn: _C, /, record: BackupRecord) -> None: ...

    @abstractmethod
    async def _select(self, conn: _C, /, backup_id: str) -> BackupRecord: ...

    @abstractmethod
    async def _select_many(self, conn: _C, /, project_id: str | None, include_deleted: bool,
                           volume_id: str | None) -> builtins.list[BackupRecord]: ...

    @abstractmethod
    async def _dependents(self, conn: _C, /, backup_id: str) -> builtins.list[BackupRecord]: ...

    @abstractmethod
    async def _existed_between(self, conn: _C, /, start: datetime, end: datetime) -> builtins.list[BackupRecord]: ...

    @abstractmethod
    async def _update(self, conn: _C, /, backup_id: str, to: BackupStatus | None, changes: dict[str, Any],
                      expect: BackupRecord | None) -> BackupRecord: ...

    # -- BackupCatalog -------------------------------------------------------------------

    async def add(self, record: BackupRecord) -> BackupRecord:
        await self._run(self._insert, record)
        return record

    async def get(self, backup_id: str) -> BackupRecord:
        return await self._run(self._select, backup_id)

    async def list(self, *, project_id: str | None = None, include_deleted: bool = False,
                   volume_id: str | None = None) -> builtins.list[BackupRecord]:
        return await self._run(self._select_many, project_id, include_deleted, volume_id)

    async def dependents(self, backup_id: str) -> builtins.list[BackupRecord]:
        return await self._run(self._dependents, backup_id)

    async def existed_between(self, start: datetime, end: datetime) -> builtins.list[BackupRecord]:
        return await self._run(self._existed_between, start, end)

    async def transition(self, backup_id: str, to: BackupStatus, *, expect: BackupRecord | None = None,
                         **changes: Any) -> BackupRecord:
        self.check_fields(changes)
        return await self._run(self._update, backup_id, to, changes, expect)

    async def update(self, backup_id: str, **changes: Any) -> BackupRecord:
        self.check_fields(changes)
        return await self._run(self._update, backup_id, None, changes, None)

# -- SQLite --------------------------------------------------------------------------------

_COLUMNS = [f.name for f in fields(BackupRecord)]
_DATETIMES = frozenset({"created_at", "updated_at", "deleted_at"})
SCHEMA_VERSION = 3
# Each step takes the schema from the version before it to its own; a fresh catalog runs
# them all. Version 1 is the schema before versioning (user_version 0, same table).
_MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE IF NOT EXISTS backups (
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
        )""",
        "CREATE INDEX IF NOT EXISTS backups_project ON backups (project_id, created_at)",
    ]),
    (2, [
        "ALTER TABLE backups ADD COLUMN store_kind TEXT",
        "ALTER TABLE backups ADD COLUMN store_location TEXT",
        "ALTER TABLE backups ADD COLUMN deleted_at TEXT",
        "ALTER TABLE backups ADD COLUMN worker_pid INTEGER",
        "ALTER TABLE backups ADD COLUMN worker_token TEXT",
        "ALTER TABLE backups ADD COLUMN restore_target TEXT",
        # Deleted before deleted_at existed: the last update is when it was deleted.
        "UPDATE backups SET deleted_at = updated_at WHERE status = 'deleted'",
        "CREATE INDEX IF NOT EXISTS backups_parent ON backups (parent_id)",
        "CREATE INDEX IF NOT EXISTS backups_volume ON backups (volume_id, created_at)",
    ]),
    (3, [
        "ALTER TABLE backups ADD COLUMN worker_host TEXT",
        # Before worker_host, only the creating host ran (and recovered) a backup's operations.
        "UPDATE backups SET worker_host = host WHERE worker_pid IS NOT NULL",
    ]),
]
assert _MIGRATIONS[-1][0] == SCHEMA_VERSION


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


def _from_row(row: Sequence[Any]) -> BackupRecord:
    """A record from a row; a damaged row (unknown status, bad timestamp) still loads, as
    an ``error`` record that says what is wrong, so listing never fails on one bad row."""
    data: dict[str, Any] = {name: (v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v)
            for name, v in zip(_COLUMNS, row, strict=True)}
    problems: list[str] = []
    try:
        data["status"] = BackupStatus(data["status"])
    except ValueError:
        problems.append(f"the catalog holds an invalid status {data['status']!r}")
        data["status"] = BackupStatus.ERROR
    for name in _DATETIMES:
        value = data[name]
        if value is None and name == "deleted_at":
            continue
        try:
            data[name] = datetime.fromisoformat(str(value))
        except ValueError:
            problems.append(f"the catalog holds an invalid {name} {value!r}")
            data[name] = datetime.fromtimestamp(0, UTC)
    for name in ("size_bytes", "object_count", "num_dependent_backups"):
        if not isinstance(data[name], int):
            problems.append(f"the catalog holds an invalid {name} {data[name]!r}")
            data[name] = 0
    if problems:
        data["fail_reason"] = "; ".join(problems) + (f" (was: {data['fail_reason']})" if data["fail_reason"] else "")
    return BackupRecord(**data)


_SQLITE_MAGIC = b"SQLite format 3\x00"
#: Columns every catalog has had since version 1 (before versioning, user_version 0).
_FIRST_COLUMNS = {"id", "project_id", "volume_id", "status", "created_at"}


def _refuse_a_foreign_file(path: Path) -> None:
    """Refuse, before a byte is written (``journal_mode=WAL`` alone rewrites the header),
    a path that is not a catalog: a directory, a non-SQLite file, or another program's
    SQLite database (tables other than ``backups``, or a ``backups`` table of its own).
    Read with ``immutable=1`` so not even a -shm file appears next to it."""
    try:
        if path.is_dir():
            raise BackupError(f"backup catalog {str(path)!r} is a directory; name a file (e.g. catalog.sqlite3)")
        if not path.exists() or path.stat().st_size == 0:
            return  # a new catalog
        with open(path, "rb") as fh:
            if fh.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                raise BackupError(f"backup catalog {str(path)!r} is not a SQLite file; it was left untouched")
    except OSError as exc:
        raise BackupError(f"cannot open backup catalog {str(path)!r}: {exc.strerror or exc}") from None
    wal = path.with_name(path.name + "-wal")
    mode = "mode=ro" if wal.is_file() and wal.stat().st_size > 0 else "immutable=1"  # committed rows may be in the WAL
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{mode}", uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = {row[1] for row in conn.execute("PRAGMA table_info(backups)")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open backup catalog {str(path)!r}: {exc}") from None
    others = sorted(t for t in tables if t != "backups" and not t.startswith("sqlite_"))
    if others or ("backups" in tables and not _FIRST_COLUMNS <= columns):
        what = f"tables {', '.join(others[:3])}" if others else "a backups table of another shape"
        raise BackupError(f"backup catalog {str(path)!r} is a SQLite database of another program ({what});"
                          " it was left untouched: name a catalog file of its own")


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


def in_worker_thread(query: Callable[Concatenate[sqlite3.Connection, _P], _T]
                     ) -> Callable[Concatenate[SQLiteCatalog, sqlite3.Connection, _P], Coroutine[Any, Any, _T]]:
    """A blocking SQLite query in QueryCatalog's shape: it runs in a worker thread (the event
    loop never waits on the database), one call at a time on the catalog's connection."""

    async def run(catalog: SQLiteCatalog, conn: sqlite3.Connection, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        def locked() -> _T:
            with catalog._lock:
                return query(conn, *args, **kwargs)

        return await anyio.to_thread.run_sync(locked)

    return run


class SQLiteCatalog(QueryCatalog[sqlite3.Connection]):
    """One SQLite file, one connection used from worker threads, one call at a time."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteCatalog({str(self.path)!r})"

    # -- lifecycle ---------------------------------------------------------------------

    def _open(self) -> None:
        _refuse_a_foreign_file(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"cannot open backup catalog {str(self.path)!r}: {exc}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise BackupError(f"cannot open backup catalog {str(self.path)!r}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the schema to SCHEMA_VERSION in one transaction (two processes opening an
        old catalog at once migrate it once)."""
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BackupError(
                    f"backup catalog {str(self.path)!r} has schema version {version}; this notifykit-backup"
                    f" knows versions up to {SCHEMA_VERSION} (upgrade notifykit)")
            for step, statements in _MIGRATIONS:
                if step > version:
                    for statement in statements:
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

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
