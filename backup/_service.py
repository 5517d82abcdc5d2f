"""BackupService: create, restore, delete, list and show backups, reporting every step.

The service owns the catalog record and its status, and emits Cinder's backup
notifications through whatever ``SupportsNotify`` it is given (a Notifier, or
``notifier.prepare(publisher_id=f"backup.{host}")``). It never picks a transport.

Every operation that starts emits ``.start`` and then exactly one of ``.end`` or
``.error``. Failures, including cancellation, set the matching error status and a
``fail_reason`` before the exception reaches the caller. Notification failures are
logged and never fail (or stall) a backup: delivery is the transport layer's job.

The longer operations' bodies are modules of their own, given the service: ``_create``,
``_restore`` (as are ``_verify``, ``_reset`` and ``_records``).
"""

from __future__ import annotations

import builtins
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread

from notifykit import Clock, ContextLike, EventLoopClock, Priority, RequestContext, SupportsNotify

from . import _create, _restore
from ._catalog import BackupCatalog, BackupRecord, BackupStatus
from ._driver import BackupDriver, ObjectCallback
from ._errors import (
    BackupConfigError,
    BackupError,
    BackupNotFoundError,
    InvalidStatusTransitionError,
    WrongStoreError,
)
from ._liveness import current_process, process_alive
from ._payload import PAYLOAD_FIELDS, PAYLOAD_VERSION, progress_payload, usage_from_backup, utf8_payload
from ._progress import ProgressPolicy, ProgressTracker, ProgressUpdate
from ._target import remove_restore_leftovers
from ._tracing import describe, traced

__all__ = ["BackupService", "ProgressObserver", "describe_failure"]

log = logging.getLogger("backup")

# Called after every object (not throttled) with (bytes_done, total_bytes): for progress bars.
ProgressObserver = Callable[[int, int], None]

DEFAULT_NOTIFY_TIMEOUT = 10.0
# How long a shielded error report may take when the operation was cancelled.
_SHIELDED_REPORT_TIMEOUT = 15.0

# Clears the running-operation fields when an operation ends, however it ends.
_NO_WORKER: dict[str, Any] = {"worker_host": None, "worker_pid": None, "worker_token": None, "restore_target": None}

_OPS = {
    "create": (BackupStatus.AVAILABLE, BackupStatus.ERROR),
    "restore": (BackupStatus.AVAILABLE, BackupStatus.ERROR_RESTORING),
    "delete": (BackupStatus.DELETED, BackupStatus.ERROR_DELETING),
}


def describe_failure(exc: BaseException) -> str:
    """A one-line ``fail_reason`` for any exception, cancellation included."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT)"
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return "cancelled before completion"
    if isinstance(exc, BackupError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or type(exc).__name__}{where}"
    return f"{type(exc).__name__}: {exc}"


class BackupService:
    """Async backup manager: one catalog, one driver, one notifier."""

    def __init__(
        self,
        catalog: BackupCatalog,
        driver: BackupDriver,
        notifier: SupportsNotify,
        *,
        host: str,
        availability_zone: str = "nova",
        project_id: str = "default",
        user_id: str = "default",
        progress: ProgressPolicy | None = None,
        clock: Clock | None = None,
        notify_timeout: float = DEFAULT_NOTIFY_TIMEOUT,
    ) -> None:
        self.catalog = catalog
        self.driver = driver
        self.notifier = notifier
        self.host = host
        self.availability_zone = availability_zone
        self.project_id = project_id
        self.user_id = user_id
        self.progress = progress or ProgressPolicy()
        self.clock: Clock = clock or EventLoopClock()
        self.notify_timeout = notify_timeout
        self.notification_failures = 0

    # -- notifications -----------------------------------------------------------------

    def _context(self, ctx: ContextLike) -> RequestContext:
        """The caller's context, with a request_id and the default project/user filled in."""
        fields: dict[str, Any] = dict(RequestContext.coerce(ctx).as_dict())
        fields.setdefault("request_id", f"req-{uuid.uuid4()}")
        identity = self.driver.auth_identity  # Keystone's ids, when the store authenticated there
        fields.setdefault("project_id", identity.get("project_id") or self.project_id)
        fields.setdefault("user_id", identity.get("user_id") or self.user_id)
        return RequestContext.coerce(fields)

    async def _emit(self, ctx: RequestContext, event_type: str, payload: Mapping[str, Any],
                    priority: Priority = Priority.INFO) -> None:
        """Hand one notification to the notifier; never raises, never waits past notify_timeout."""
        try:
            with anyio.move_on_after(self.notify_timeout) as scope:
                await self.notifier.notify(ctx, event_type, payload, priority=priority)
            if scope.cancelled_caught:
                self.notification_failures += 1
                log.warning("notification %s not accepted within %.1fs; the backup goes on",
                            event_type, self.notify_timeout)
        except Exception as exc:
            self.notification_failures += 1
            log.warning("notification %s could not be emitted (%s: %s); the backup goes on",
                        event_type, type(exc).__name__, exc)

    async def _emit_progress(self, ctx: RequestContext, op: str, record: BackupRecord,
                             update: ProgressUpdate | None) -> None:
        if update is not None:
            await self._emit(ctx, f"backup.{op}progress", progress_payload(
                record, bytes_done=update.bytes_done, objects_done=update.objects_done, percentage=update.percentage,
                backup_percent=update.backup_percent))

    async def _fail(self, ctx: RequestContext, op: str, record: BackupRecord, exc: BaseException,
                    *, expect: BackupRecord | None = None) -> bool:
        """Record the error status with a fail_reason, then emit ``backup.<op>.error``.

        With ``expect`` (recover), only if the record is still as read; False (and nothing
        emitted) when another operation changed it meanwhile."""
        reason = describe_failure(exc)
        error_status = _OPS[op][1]
        try:
            record = await self.catalog.transition(record.id, error_status, expect=expect, fail_reason=reason,
                                                   **_NO_WORKER)
        except Exception as catalog_exc:
            if expect is not None and isinstance(catalog_exc, InvalidStatusTransitionError):
                log.info("backup %s: not recovered: %s", record.id, catalog_exc)  # taken over meanwhile
                return False
            log.error("backup %s: could not record status %s (%s); reporting anyway", record.id,
                      error_status.value, catalog_exc)
            record = _replace_status(record, error_status, reason)
        log.error("backup %s: %s failed: %s", record.id, op, reason)
        await self._emit(ctx, f"backup.{op}.error", usage_from_backup(record), Priority.ERROR)
        return True

    async def _reject(self, ctx: RequestContext, op: str, backup_id: str, exc: BackupError,
                      record: BackupRecord | None) -> None:
        """A request refused before it started (unknown id, wrong status): error event, no
        status change, since the backup itself is unaffected."""
        reason = str(exc)
        if record is not None:
            payload = usage_from_backup(record, fail_reason=reason)
        else:  # nothing known but what was asked: every field present, unknown ones null
            payload = dict.fromkeys(PAYLOAD_FIELDS)
            payload.update(backup_id=backup_id, tenant_id=ctx.project_id, user_id=ctx.user_id, host=self.host,
                           availability_zone=self.availability_zone, service=self.driver.service, status=None,
                           fail_reason=reason, size=0, size_bytes=0, num_dependent_backups=0,
                           payload_version=PAYLOAD_VERSION)
            payload = utf8_payload(payload)
        await self._emit(ctx, f"backup.{op}.error", payload, Priority.ERROR)

    async def _guarded(self, ctx: RequestContext, op: str, record: BackupRecord, exc: BaseException) -> None:
        """Report a failure; shielded so a cancelled operation still leaves a trace."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(_SHIELDED_REPORT_TIMEOUT):
            await self._fail(ctx, op, record, exc)

    async def _progress_timer(self, ctx: RequestContext, op: str, tracker: ProgressTracker,
                              current: Callable[[], BackupRecord]) -> None:
        """Heartbeat progress every backup_timer_interval while objects are slow."""
        while not tracker.final_sent:
            await self.clock.sleep(max(tracker.seconds_until_timer(), 0.001))
            await self._emit_progress(ctx, op, current(), tracker.timer_due())

    # -- operations --------------------------------------------------------------------

    @traced("create")
    async def create_backup(
        self,
        volume_path: str | os.PathLike[str],
        *,
        name: str | None = None,
        volume_id: str | None = None,
        ctx: ContextLike = None,
        on_progress: ProgressObserver | None = None,
        incremental: bool = False,
    ) -> BackupRecord:
        """Back up a file or block device; returns the ``available`` record.

        ``volume_id`` defaults to a stable id derived from the volume's real path. With
        ``incremental``, the latest available backup of the same volume in this store is the
        parent and only the blocks changed since it are stored (BackupError if there is none).
        """
        return await _create.create_backup(self, volume_path, name=name, volume_id=volume_id, ctx=ctx,
                                           on_progress=on_progress, incremental=incremental)

    @traced("restore")
    async def restore_backup(
        self,
        backup_id: str,
        target: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        ctx: ContextLike = None,
        on_progress: ProgressObserver | None = None,
        create: bool = False,
    ) -> BackupRecord:
        """Restore a backup to ``target`` (a new file, or an existing one with ``overwrite``;
        an RBD image ``rbd://POOL/IMAGE`` with ``overwrite``, or made with ``create``).

        The target is locked first: while another restore writes it, this one is refused
        (``RestoreTargetBusyError`` naming that restore, a ``.error`` event, no status change)."""
        return await _restore.restore_backup(self, backup_id, target, overwrite=overwrite, ctx=ctx,
                                             on_progress=on_progress, create=create)

    @traced("delete")
    async def delete_backup(self, backup_id: str, *, ctx: ContextLike = None) -> BackupRecord:
        """Remove every object and the container; the record stays, as ``deleted``."""
        context = self._context(ctx)
        record = await self._begin(context, "delete", backup_id, BackupStatus.DELETING)
        try:
            await self.driver.delete(record)
            record = await self.catalog.transition(record.id, BackupStatus.DELETED, **_NO_WORKER)
        except BaseException as exc:
            await self._guarded(context, "delete", record, exc)
            raise
        await self._emit(context, "backup.delete.end", usage_from_backup(record))
        return record

    async def recover_interrupted(self, *, ctx: ContextLike = None) -> builtins.list[BackupRecord]:
        """Fail this host's operations left in a working status by a process that died
        (SIGKILL, power loss), as Cinder does at service start: ``creating`` → ``error``,
        ``restoring`` → ``error_restoring``, ``deleting`` → ``error_deleting``, each with its
        ``.error`` event, and remove the hidden partial file (and unheld lock file) a killed
        restore left.

        An operation whose process still runs (its pid and start time, recorded in the
        catalog, match a live process) is left alone, so recover is safe at any time."""
        context = self._context(ctx)
        working = {BackupStatus.CREATING: "create", BackupStatus.RESTORING: "restore", BackupStatus.DELETING: "delete"}
        recovered: builtins.list[BackupRecord] = []
        for record in await self.catalog.list():
            op = working.get(record.status)
            if op is None or (record.worker_host or record.host) != self.host:
                continue  # not working, or another host's operation: only that host can tell if it runs
            if await anyio.to_thread.run_sync(process_alive, record.worker_pid, record.worker_token):
                log.info("backup %s: %s still running in process %s; left alone", record.id, op, record.worker_pid)
                continue
            if op == "restore" and record.restore_target is not None:
                await anyio.to_thread.run_sync(_remove_leftovers, record.restore_target, record.id)
            if await self._fail(context, op, record, BackupError(
                    f"interrupted: the process running this {op} stopped before it finished"), expect=record):
                recovered.append(await self.catalog.get(record.id))
        return recovered

    async def audit(self, start: datetime, end: datetime, *, ctx: ContextLike = None) -> builtins.list[BackupRecord]:
        """Cinder's usage audit: one ``backup.exists`` (info) for each backup of the catalog
        that existed at some time in [start, end) (created before ``end``, not deleted by
        ``start``, so one deleted during the period is reported too), its payload the usual
        one plus ``audit_period_beginning`` and ``audit_period_ending``. Returns them."""
        if start.tzinfo is None or end.tzinfo is None:
            raise BackupConfigError("the audit period needs timezone-aware datetimes")
        if start >= end:
            raise BackupConfigError(f"the audit period must start before it ends ({start.isoformat()} to"
                                    f" {end.isoformat()})")
        context = self._context(ctx)
        period = {"audit_period_beginning": start.isoformat(), "audit_period_ending": end.isoformat()}
        records = await self.catalog.existed_between(start, end)
        for record in records:
            await self._emit(context, "backup.exists", usage_from_backup(record, **period))
        return records

    async def list(self, *, project_id: str | None = None, include_deleted: bool = False) -> builtins.list[BackupRecord]:
        """Backups, oldest first (deleted ones only with ``include_deleted``)."""
        return await self.catalog.list(project_id=project_id, include_deleted=include_deleted)

    async def show(self, backup_id: str) -> BackupRecord:
        """One backup, or BackupNotFoundError."""
        return await self.catalog.get(backup_id)

    # -- helpers -----------------------------------------------------------------------

    async def _parents(self, record: BackupRecord) -> builtins.list[BackupRecord]:
        """The chain an incremental backup restores from: its full backup first."""
        chain: builtins.list[BackupRecord] = []
        seen = {record.id}
        current = record
        while current.parent_id is not None:
            if current.parent_id in seen:
                raise BackupError(f"backup {record.id}: its chain of parents loops at {current.parent_id}")
            current = await self.catalog.get(current.parent_id)
            self.check_store(current)
            seen.add(current.id)
            chain.append(current)
        return chain[::-1]

    def check_store(self, record: BackupRecord) -> None:
        """WrongStoreError unless this service's store is the one the backup was made in."""
        if record.store_kind is None:  # recorded before stores were: trust the configuration
            return
        kind, location = self.driver.store_identity
        if (kind, location) != (record.store_kind, record.store_location):
            raise WrongStoreError(
                f"backup {record.id!r} is in the {record.store_kind} store {record.store_location!r},"
                f" not in the configured {kind} store {location!r}: use --store to name its store")

    async def _begin(self, context: RequestContext, op: str, backup_id: str, status: BackupStatus,
                     **changes: Any) -> BackupRecord:
        """Move the record into the operation's working status (recording this process as
        the one running it) and emit ``.start``; a refused request (unknown id, wrong status,
        wrong store, dependent backups) emits ``.error`` and raises without touching it."""
        record: BackupRecord | None = None
        pid, token = current_process()
        try:
            record = await self.catalog.get(backup_id)
            self.check_store(record)
            record = await self.catalog.transition(backup_id, status, fail_reason=None, worker_host=self.host,
                                                   worker_pid=pid, worker_token=token, **changes)
        except (BackupNotFoundError, InvalidStatusTransitionError, WrongStoreError) as exc:
            log.error("backup %s: %s refused: %s", backup_id, op, exc)
            await self._reject(context, op, backup_id, exc, record)
            raise
        describe(record)
        await self._emit(context, f"backup.{op}.start", usage_from_backup(record))
        return record

    async def _run_with_progress(self, context: RequestContext, op: str, record: BackupRecord, total: int,
                                 on_progress: ProgressObserver | None,
                                 work: Callable[[ObjectCallback], Awaitable[Any]]) -> BackupRecord:
        """Run the driver with throttled progress (count + timer), then record and emit ``.end``."""
        tracker = ProgressTracker(total, self.progress, self.clock)

        async def on_object(nbytes: int) -> None:
            update = tracker.object_done(nbytes)
            if on_progress is not None:
                on_progress(tracker.bytes_done, total)
            await self._emit_progress(context, op, record, update)

        failure: BaseException | None = None
        async with anyio.create_task_group() as tg:
            if self.progress.backup_enable_progress_timer:
                tg.start_soon(self._progress_timer, context, op, tracker, lambda: record)
            try:
                result = await work(on_object)
            except BaseException as exc:  # re-raised below, unwrapped from the task group
                failure = exc
            tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        await self._emit_progress(context, op, record, tracker.final())
        success = _OPS[op][0]
        if op == "create":
            record = await self.catalog.transition(
                record.id, success, size_bytes=result.size_bytes, object_count=result.object_count,
                container=result.container, service_metadata=result.service_metadata, **_NO_WORKER)
        else:
            record = await self.catalog.transition(record.id, success, **_NO_WORKER)
        await self._emit(context, f"backup.{op}.end", usage_from_backup(record))
        return record


def _replace_status(record: BackupRecord, status: BackupStatus, reason: str) -> BackupRecord:
    return replace(record, status=status, fail_reason=reason)


def _remove_leftovers(target: str, backup_id: str) -> None:
    """Remove the hidden files a killed restore of ``backup_id`` to ``target`` left."""
    try:
        for name in remove_restore_leftovers(target, backup_id):
            log.info("removed %s left by an interrupted restore", os.path.join(os.path.dirname(target), name))
    except OSError as exc:
        log.warning("could not remove what an interrupted restore to %s left: %s", target, exc.strerror or exc)
