"""What every backup operation shares: the service's state, its notifications, the move into
and out of a working status, and the progress events (``BackupService`` is built on it).

Kept below ``_service.py`` so the operations' bodies (``_create``, ``_restore``) take this
class, not the service that calls them: the imports run one way.
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import anyio

from notifykit import Clock, ContextLike, EventLoopClock, Priority, RequestContext, SupportsNotify

from ._catalog import BackupCatalog, BackupRecord, BackupStatus
from ._driver import BackupDriver, ObjectCallback
from ._errors import (
    BackupError,
    BackupNotFoundError,
    InvalidStatusTransitionError,
    WrongStoreError,
    describe_failure,
)
from ._liveness import current_process
from ._payload import PAYLOAD_FIELDS, PAYLOAD_VERSION, progress_payload, usage_from_backup, utf8_payload
from ._progress import ProgressObserver, ProgressPolicy, ProgressTracker, ProgressUpdate
from ._tracing import describe

__all__ = ["DEFAULT_NOTIFY_TIMEOUT", "NO_WORKER", "ServiceBase"]

log = logging.getLogger("backup")

DEFAULT_NOTIFY_TIMEOUT = 10.0
# How long a shielded error report may take when the operation was cancelled.
_SHIELDED_REPORT_TIMEOUT = 15.0

# Clears the running-operation fields when an operation ends, however it ends.
NO_WORKER: dict[str, Any] = {"worker_host": None, "worker_pid": None, "worker_token": None, "restore_target": None}

_OPS = {
    "create": (BackupStatus.AVAILABLE, BackupStatus.ERROR),
    "restore": (BackupStatus.AVAILABLE, BackupStatus.ERROR_RESTORING),
    "delete": (BackupStatus.DELETED, BackupStatus.ERROR_DELETING),
}


class ServiceBase:
    """One catalog, one driver, one notifier, and the reporting every operation does."""

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
                                                   **NO_WORKER)
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
                container=result.container, service_metadata=result.service_metadata, **NO_WORKER)
        else:
            record = await self.catalog.transition(record.id, success, **NO_WORKER)
        await self._emit(context, f"backup.{op}.end", usage_from_backup(record))
        return record


def _replace_status(record: BackupRecord, status: BackupStatus, reason: str) -> BackupRecord:
    return replace(record, status=status, fail_reason=reason)
