"""The backup catalog: one record per backup, with validated status transitions.

The record and its statuses are backup/_backup_record.py's (re-exported here).
``BackupCatalog`` is the interface the service uses; ``QueryCatalog`` writes its methods once
over a backend's queries; ``SQLiteCatalog`` (backup/_sqlite.py) is the SQLite backend (one
host), ``PostgresCatalog`` (backup/_postgres.py) the one several hosts share.
Rules that must hold across processes and hosts (legal status transitions, a parent's
``num_dependent_backups``, refusing to delete a backup others depend on, ``deleted_at``)
are applied by the backend atomically, inside one transaction per call, and every state
change is a conditional update (compare-and-set on the status it was checked against), so
of two processes racing for the same backup exactly one wins.

``reset_status`` is the one change outside TRANSITIONS (Cinder's ``reset_status``, an
operator's repair): it forces ``available`` or ``error``, still as a compare-and-set on the
record as read, and records who did it, from which status, and when (``reset_*`` fields).
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar

from ._backup_record import (
    GIB,
    UPDATABLE_FIELDS,
    WORKER_FIELDS,
    BackupRecord,
    BackupStatus,
    new_backup_id,
    size_in_gib,
)
from ._backup_record import _now as _now  # _sqlite, _postgres and _records import it from here
from ._errors import BackupError, DependentBackupsError, InvalidStatusTransitionError

__all__ = [
    "GIB",
    "TRANSITIONS",
    "UPDATABLE_FIELDS",
    "WORKER_FIELDS",
    "BackupCatalog",
    "BackupRecord",
    "BackupStatus",
    "QueryCatalog",
    "RESET_STATUSES",
    "new_backup_id",
    "size_in_gib",
]

_T = TypeVar("_T")

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
# The statuses reset_status may force (Cinder's backup-reset-state allows these two).
RESET_STATUSES = frozenset({S.AVAILABLE, S.ERROR})


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

    async def reset_status(self, backup_id: str, to: BackupStatus, *, expect: BackupRecord, user: str, host: str,
                           fail_reason: str | None) -> BackupRecord:
        """Force status ``to`` (one of RESET_STATUSES) whatever TRANSITIONS says, if the record
        still has ``expect``'s status and worker (else InvalidStatusTransitionError); clears the
        running-operation fields and records ``reset_from``, ``reset_user``, ``reset_host`` and
        ``reset_at``. A ``deleted`` backup is never reset. Backends without it refuse."""
        raise BackupError(f"the {type(self).__name__} catalog cannot reset a backup's status")

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


def reset_record(current: BackupRecord, expect: BackupRecord, to: BackupStatus, *, user: str, host: str,
                 fail_reason: str | None, now: datetime) -> BackupRecord:
    """The record ``reset_status`` writes, for every backend, after checking that ``to`` may be
    forced and that nobody changed the record since ``expect`` was read."""
    if to not in RESET_STATUSES:
        raise InvalidStatusTransitionError(f"backup {current.id!r}: a reset sets available or error, not {to.value}")
    if current.status is BackupStatus.DELETED:
        raise InvalidStatusTransitionError(f"backup {current.id!r} is deleted: its objects are gone, it cannot be reset")
    refuse_lost_race(current, expect, to)
    return replace(current, status=to, fail_reason=fail_reason, updated_at=now, worker_host=None, worker_pid=None,
                   worker_token=None, restore_target=None, reset_from=current.status.value, reset_user=user,
                   reset_host=host, reset_at=now)


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

    @abstractmethod
    async def _reset(self, conn: _C, /, backup_id: str, to: BackupStatus, expect: BackupRecord, user: str, host: str,
                     fail_reason: str | None) -> BackupRecord: ...

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

    async def reset_status(self, backup_id: str, to: BackupStatus, *, expect: BackupRecord, user: str, host: str,
                           fail_reason: str | None) -> BackupRecord:
        return await self._run(self._reset, backup_id, to, expect, user, host, fail_reason)

# -- rows, as every backend stores them -----------------------------------------------------

_COLUMNS = [f.name for f in fields(BackupRecord)]
_DATETIMES = frozenset({"created_at", "updated_at", "deleted_at", "reset_at"})
_NULLABLE_DATETIMES = frozenset({"deleted_at", "reset_at"})

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
        if value is None and name in _NULLABLE_DATETIMES:
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
