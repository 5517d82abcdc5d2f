"""BackupService: create, restore, delete, list and show backups, reporting every step.

The service owns the catalog record and its status, and emits Cinder's backup
notifications through whatever ``SupportsNotify`` it is given (a Notifier, or
``notifier.prepare(publisher_id=f"backup.{host}")``). It never picks a transport.

Every operation that starts emits ``.start`` and then exactly one of ``.end`` or
``.error``. Failures, including cancellation, set the matching error status and a
``fail_reason`` before the exception reaches the caller. Notification failures are
logged and never fail (or stall) a backup: delivery is the transport layer's job.

What every operation shares (the state, the notifications, the working status, progress)
is ``ServiceBase`` (``_service_base.py``). The longer operations' bodies are modules of
their own, given that base: ``_create``, ``_restore`` (``_verify``, ``_reset`` and
``_records`` are given the service).
"""

from __future__ import annotations

import builtins
import logging
import os
from datetime import datetime

import anyio
import anyio.to_thread

from notifykit import ContextLike

from . import _create, _restore
from ._catalog import BackupRecord, BackupStatus
from ._errors import BackupConfigError, BackupError, describe_failure
from ._liveness import process_alive
from ._payload import usage_from_backup
from ._progress import ProgressObserver
from ._service_base import NO_WORKER, ServiceBase
from ._target import remove_restore_leftovers
from ._tracing import traced

__all__ = ["BackupService", "ProgressObserver", "describe_failure"]

log = logging.getLogger("backup")


class BackupService(ServiceBase):
    """Async backup manager: one catalog, one driver, one notifier (see ``ServiceBase`` for its
    constructor)."""
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
            record = await self.catalog.transition(record.id, BackupStatus.DELETED, **NO_WORKER)
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


def _remove_leftovers(target: str, backup_id: str) -> None:
    """Remove the hidden files a killed restore of ``backup_id`` to ``target`` left."""
    try:
        for name in remove_restore_leftovers(target, backup_id):
            log.info("removed %s left by an interrupted restore", os.path.join(os.path.dirname(target), name))
    except OSError as exc:
        log.warning("could not remove what an interrupted restore to %s left: %s", target, exc.strerror or exc)
