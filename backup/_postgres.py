"""The PostgreSQL backend of the backup catalog: several backup hosts on one database.

Driver: psycopg 3's asyncio API. Chosen over asyncpg because it is fully typed (``py.typed``,
so ``mypy --strict`` checks our calls), takes the same connection URL and libpq settings an
operator already uses with ``psql`` (``sslmode``, ``.pgpass``, service files, several hosts
with ``target_session_attrs``), and installs as a binary wheel with libpq inside.

The same rules as the SQLite backend, enforced the same way: every state change is a
conditional ``UPDATE … WHERE id = %s AND status = %s`` (compare-and-set on the status read
in the same transaction, and on the worker when the caller names one), so when two hosts
try to delete, restore or recover the same backup, exactly one update matches and the
other gets the same InvalidStatusTransitionError as a local race. The schema is versioned in
``notifykit_schema``; migrations run at open under a transaction-scoped advisory lock, so
hosts starting together migrate once.

Text PostgreSQL cannot hold (lone surrogates from ``surrogateescape``, NUL) is stored as a
readable replacement in its column plus the exact bytes in ``raw_text`` (JSON), and comes
back unchanged.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio

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
from ._errors import BackupError, BackupNotFoundError, InvalidStatusTransitionError

__all__ = ["PG_SCHEMA_VERSION", "PostgresCatalog", "redact_url"]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_LOCK_KEY = 0x6E6B6261636B7570  # "nkbackup": the advisory lock migrations run under
PG_SCHEMA_VERSION = 2
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
            size_bytes BIGINT NOT NULL,
            object_count BIGINT NOT NULL,
            service_metadata TEXT,
            container TEXT,
            fail_reason TEXT,
            parent_id TEXT,
            snapshot_id TEXT,
            num_dependent_backups INTEGER NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            store_kind TEXT,
            store_location TEXT,
            deleted_at TIMESTAMPTZ,
            worker_pid INTEGER,
            worker_token TEXT,
            restore_target TEXT,
            worker_host TEXT,
            raw_text JSONB
        )""",
        "CREATE INDEX IF NOT EXISTS backups_project ON backups (project_id, created_at)",
        "CREATE INDEX IF NOT EXISTS backups_parent ON backups (parent_id)",
        "CREATE INDEX IF NOT EXISTS backups_volume ON backups (volume_id, created_at)",
        "CREATE INDEX IF NOT EXISTS backups_status ON backups (status)",
    ]),
    (2, [  # reset_status: the status it replaced, who (user, host) and when
        "ALTER TABLE backups ADD COLUMN reset_from TEXT",
        "ALTER TABLE backups ADD COLUMN reset_user TEXT",
        "ALTER TABLE backups ADD COLUMN reset_host TEXT",
        "ALTER TABLE backups ADD COLUMN reset_at TIMESTAMPTZ",
    ]),
]
assert _MIGRATIONS[-1][0] == PG_SCHEMA_VERSION
_TEXT_COLUMNS = frozenset({"id", "project_id", "user_id", "availability_zone", "host", "display_name", "volume_id",
                           "volume_path", "service", "service_metadata", "container", "fail_reason", "parent_id",
                           "snapshot_id", "store_kind", "store_location", "worker_token", "restore_target",
                           "worker_host", "reset_from", "reset_user", "reset_host"})
_SELECT = f"SELECT {', '.join(_COLUMNS)}, raw_text FROM backups"


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """The URL without its password (for errors and reprs)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url.split("://", 1)[0] + "://…"
    if not password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _storable(value: str) -> bool:
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _params(record: BackupRecord) -> tuple[list[Any], dict[str, str]]:
    """Column values in _COLUMNS order, and the exact bytes (hex) of text PostgreSQL cannot hold."""
    values: list[Any] = []
    raw: dict[str, str] = {}
    for name in _COLUMNS:
        value = getattr(record, name)
        if isinstance(value, BackupStatus):
            value = value.value
        elif isinstance(value, str) and not _storable(value):
            data = value.encode("utf-8", "surrogateescape")
            raw[name] = data.hex()
            value = data.decode("utf-8", "replace").replace("\x00", "\ufffd")
        values.append(value)
    return values, raw


def _record(row: Sequence[Any]) -> BackupRecord:
    *values, raw = row
    data = dict(zip(_COLUMNS, values, strict=True))
    for name, hexed in (raw or {}).items():
        if name in data:
            data[name] = bytes.fromhex(hexed).decode("utf-8", "surrogateescape")
    for name in ("created_at", "updated_at", "deleted_at", "reset_at"):
        if isinstance(data[name], datetime):
            data[name] = data[name].isoformat()
    return _from_row([data[name] for name in _COLUMNS])


class PostgresCatalog(QueryCatalog[Any]):
    """One PostgreSQL database shared by every backup host; one connection per catalog,
    one call at a time (like the SQLite backend)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None  # psycopg.AsyncConnection, imported at open (an optional extra)
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"PostgresCatalog({redact_url(self.url)!r})"

    def _where(self) -> str:
        return f"backup catalog {redact_url(self.url)}"

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        try:
            import psycopg
        except ImportError:
            raise BackupError(f"{self._where()} needs psycopg: pip install 'notifykit[postgresql]'") from None
        try:
            conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise BackupError(f"cannot open {self._where()}: {_reason(exc, self.url)}") from None
        try:
            await conn.execute("SET TIME ZONE 'UTC'")
            await self._migrate(conn)
        except psycopg.Error as exc:
            await conn.close()
            raise BackupError(f"cannot open {self._where()}: {_reason(exc, self.url)}") from None
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def _migrate(self, conn: Any) -> None:
        """Bring the schema to PG_SCHEMA_VERSION in one transaction, under an advisory lock."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            await conn.execute("CREATE TABLE IF NOT EXISTS notifykit_schema (version INTEGER NOT NULL)")
            row = await (await conn.execute("SELECT max(version) FROM notifykit_schema")).fetchone()
            version = row[0] if row and row[0] is not None else 0
            if version > PG_SCHEMA_VERSION:
                raise BackupError(f"{self._where()} has schema version {version}; this notifykit-backup knows"
                                  f" versions up to {PG_SCHEMA_VERSION} (upgrade notifykit)")
            for step, statements in _MIGRATIONS:
                if step > version:
                    for statement in statements:
                        await conn.execute(statement)
            if version < PG_SCHEMA_VERSION:  # one row per migration run: the version it reached
                await conn.execute("INSERT INTO notifykit_schema (version) VALUES (%s)", (PG_SCHEMA_VERSION,))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _run(self, query: Callable[Concatenate[Any, _P], Awaitable[_T]], /,
                   *args: _P.args, **kwargs: _P.kwargs) -> _T:
        import psycopg

        if self._conn is None:
            raise BackupError(f"{self._where()} is not open")
        async with self._lock:
            if self._conn.closed or self._conn.broken:  # the server restarted: one fresh connection
                await self.close()
                await self.open()
            try:
                return await query(self._conn, *args, **kwargs)
            except psycopg.Error as exc:
                raise BackupError(f"{self._where()}: {_reason(exc, self.url)}") from None

    # -- queries -----------------------------------------------------------------------

    @staticmethod
    async def _rows(conn: Any, where: str, args: Sequence[Any]) -> builtins.list[BackupRecord]:
        cursor = await conn.execute(f"{_SELECT}{where} ORDER BY created_at, id", list(args))
        return [_record(row) for row in await cursor.fetchall()]

    @classmethod
    async def _select(cls, conn: Any, backup_id: str) -> BackupRecord:
        found = await cls._rows(conn, " WHERE id = %s", [backup_id])
        if not found:
            raise BackupNotFoundError(f"backup {backup_id!r} not found")
        return found[0]

    @classmethod
    async def _select_many(cls, conn: Any, project_id: str | None, include_deleted: bool,
                           volume_id: str | None) -> builtins.list[BackupRecord]:
        found = await cls._rows(conn, *list_filter(project_id, include_deleted, volume_id, "%s"))
        # a value stored replaced (not UTF-8) matches by its replacement: compare exactly here
        return [r for r in found if (project_id is None or r.project_id == project_id)
                and (volume_id is None or r.volume_id == volume_id)]

    @classmethod
    async def _dependents(cls, conn: Any, backup_id: str) -> builtins.list[BackupRecord]:
        return await cls._rows(conn, " WHERE parent_id = %s AND status != %s", [backup_id, BackupStatus.DELETED.value])

    @classmethod
    async def _existed_between(cls, conn: Any, start: datetime, end: datetime) -> builtins.list[BackupRecord]:
        return await cls._rows(conn, " WHERE created_at < %s AND (deleted_at IS NULL OR deleted_at > %s)",
                               [end, start])

    @staticmethod
    async def _insert(conn: Any, record: BackupRecord) -> None:
        values, raw = _params(record)
        async with conn.transaction():
            if record.parent_id is not None:
                # compare-and-set: the parent gains a dependent only while it is available (or restoring)
                cursor = await conn.execute(
                    "UPDATE backups SET num_dependent_backups = num_dependent_backups + 1, updated_at = %s"
                    " WHERE id = %s AND status = ANY(%s)",
                    [_now(), record.parent_id, [s.value for s in PARENT_STATUSES]])
                if cursor.rowcount != 1:
                    parents = await PostgresCatalog._rows(conn, " WHERE id = %s", [record.parent_id])
                    if not parents:
                        raise BackupNotFoundError(f"backup {record.parent_id!r} not found")
                    raise InvalidStatusTransitionError(
                        f"backup {record.parent_id!r} is {parents[0].status.value}: an incremental backup needs an"
                        " available parent")
            marks = ", ".join("%s" for _ in _COLUMNS)
            await conn.execute(f"INSERT INTO backups ({', '.join(_COLUMNS)}, raw_text) VALUES ({marks}, %s)",
                               [*values, json.dumps(raw) if raw else None])

    @classmethod
    async def _update(cls, conn: Any, backup_id: str, to: BackupStatus | None, changes: dict[str, Any],
                      expect: BackupRecord | None) -> BackupRecord:
        async with conn.transaction():
            # the status as stored, read before the record: the update is conditional on it, so
            # a change committed by another host after this read makes the update match nothing
            stored = await (await conn.execute("SELECT status FROM backups WHERE id = %s", [backup_id])).fetchone()
            current = await cls._select(conn, backup_id)
            if expect is not None and to is not None:
                refuse_lost_race(current, expect, to)
            now = _now()
            if to is not None:
                dependents = await cls._dependents(conn, backup_id) if to is BackupStatus.DELETING else []
                check_transition(current, to, lambda: [r.id for r in dependents])
                changes = {**changes, "status": to}
                if to is BackupStatus.DELETED:
                    changes["deleted_at"] = now
            updated = replace(current, updated_at=now, **changes)
            values, raw = _params(updated)
            sets = ", ".join(f"{name} = %s" for name in _COLUMNS if name != "id")
            guard = " AND status = %s"
            guard_args: list[Any] = [stored[0]]  # as stored (a damaged status loads as error)
            if to is BackupStatus.DELETING:
                guard += " AND num_dependent_backups = 0"
            if expect is not None:
                guard += "".join(f" AND {name} IS NOT DISTINCT FROM %s" for name in WORKER_FIELDS)
                guard_args += [getattr(expect, name) for name in WORKER_FIELDS]
            cursor = await conn.execute(
                f"UPDATE backups SET {sets}, raw_text = %s WHERE id = %s{guard}",
                [*values[1:], json.dumps(raw) if raw else None, backup_id, *guard_args])
            if cursor.rowcount != 1:  # another host changed it between our read and our write
                refuse_lost_race(await cls._select(conn, backup_id), expect or current, to)
                raise InvalidStatusTransitionError(f"backup {backup_id!r} changed while it was being updated")
            if to is BackupStatus.DELETED and current.parent_id is not None:
                await conn.execute(
                    "UPDATE backups SET num_dependent_backups = GREATEST(0, num_dependent_backups - 1),"
                    " updated_at = %s WHERE id = %s", [now, current.parent_id])
            return updated

    @classmethod
    async def _reset(cls, conn: Any, backup_id: str, to: BackupStatus, expect: BackupRecord, user: str, host: str,
                     fail_reason: str | None) -> BackupRecord:
        async with conn.transaction():
            stored = await (await conn.execute("SELECT status FROM backups WHERE id = %s", [backup_id])).fetchone()
            current = await cls._select(conn, backup_id)
            updated = reset_record(current, expect, to, user=user, host=host, fail_reason=fail_reason, now=_now())
            values, raw = _params(updated)
            sets = ", ".join(f"{name} = %s" for name in _COLUMNS if name != "id")
            guard = " AND status = %s" + "".join(f" AND {name} IS NOT DISTINCT FROM %s" for name in WORKER_FIELDS)
            cursor = await conn.execute(
                f"UPDATE backups SET {sets}, raw_text = %s WHERE id = %s{guard}",
                [*values[1:], json.dumps(raw) if raw else None, backup_id, stored[0],
                 *(getattr(expect, name) for name in WORKER_FIELDS)])
            if cursor.rowcount != 1:  # another host changed it between our read and our write
                raise InvalidStatusTransitionError(f"backup {backup_id!r} changed while it was being reset")
            return updated


def _reason(exc: BaseException, url: str) -> str:
    """psycopg's message on one line, without the password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    password = _password(url)
    return text.replace(password, "***") if password else text
