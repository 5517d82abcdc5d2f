"""``restore``: a backup (and its chain of parents) written to a file, block device or RBD
image (the body of :meth:`BackupService.restore_backup <._service.BackupService.restore_backup>`).

The target is locked before the record changes: while another restore writes it, this one
is refused by name (``RestoreTargetBusyError``, a ``.error`` event, no status change); the
lock is released however the restore ends.
"""

from __future__ import annotations

import logging
import os

import anyio
import anyio.to_thread

from notifykit import ContextLike, RequestContext

from . import _targets
from ._catalog import BackupRecord, BackupStatus
from ._errors import BackupNotFoundError, RestoreTargetError
from ._liveness import current_process
from ._progress import ProgressObserver
from ._service_base import ServiceBase
from ._target_lock import RestoreTargetBusyError, TargetLock
from ._volume import is_rbd_url

__all__ = ["lock_target", "restore_backup"]

log = logging.getLogger("backup")


async def restore_backup(service: ServiceBase, backup_id: str, target: str | os.PathLike[str], *, overwrite: bool,
                         ctx: ContextLike, on_progress: ProgressObserver | None, create: bool) -> BackupRecord:
    """Restore ``backup_id`` to ``target``, holding the target's lock throughout (see the method)."""
    context = service._context(ctx)
    where = str(target) if is_rbd_url(target) else await anyio.to_thread.run_sync(os.path.abspath, target)
    lock = await lock_target(service, context, backup_id, where)
    try:
        record = await service._begin(context, "restore", backup_id, BackupStatus.RESTORING, restore_target=where)
        try:
            parents = await service._parents(record)
            record = await service._run_with_progress(
                context, "restore", record, record.size_bytes, on_progress,
                lambda on_object: service.driver.restore(record, target, on_object, overwrite=overwrite,
                                                         parents=parents, **({"create": True} if create else {})))
        except BaseException as exc:
            await service._guarded(context, "restore", record, exc)
            raise
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lock.release)
    return record


async def lock_target(service: ServiceBase, context: RequestContext, backup_id: str, where: str) -> TargetLock:
    """Take the restore target, or refuse the request naming the restore that has it."""
    pid, _ = current_process()
    try:
        try:
            return await anyio.to_thread.run_sync(
                _targets.lock_target, where, {"backup_id": backup_id, "pid": pid, "host": service.host})
        except RestoreTargetBusyError as exc:
            if exc.holder:
                raise
            # A locked device holds no note of who locked it: the catalog knows.
            running = [r for r in await service.catalog.list()
                       if r.status is BackupStatus.RESTORING and r.restore_target == where]
            if not running:
                raise
            holder = running[0]
            raise RestoreTargetBusyError(
                f"restore target {where!r} is in use by the restore of backup {holder.id} (process"
                f" {holder.worker_pid} on {holder.worker_host}); wait for it to finish or choose another target",
                {"backup_id": holder.id, "pid": holder.worker_pid, "host": holder.worker_host}) from None
    except RestoreTargetError as exc:
        record: BackupRecord | None = None
        try:
            record = await service.catalog.get(backup_id)
        except BackupNotFoundError:
            pass
        log.error("backup %s: restore refused: %s", backup_id, exc)
        await service._reject(context, "restore", backup_id, exc, record)
        raise
