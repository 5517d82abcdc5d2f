"""``create``: a backup of a file, block device or RBD image, full or incremental (the body of
:meth:`BackupService.create_backup <._service.BackupService.create_backup>`).

The record is added (``creating``, this process recorded as the one running it) before
anything is read, so a failure, a cancellation or a refused volume is reported on a record:
``.start``, then ``.end`` or ``.error``.
"""

from __future__ import annotations

import os
import uuid

import anyio.to_thread

from notifykit import ContextLike

from ._catalog import BackupRecord, BackupStatus, new_backup_id
from ._errors import BackupError
from ._liveness import current_process
from ._payload import usage_from_backup
from ._progress import ProgressObserver
from ._rbd import rbd_volume_id, snapshot_name
from ._service_base import ServiceBase
from ._tracing import describe
from ._volume import is_rbd_url

__all__ = ["create_backup", "latest_backup"]


async def create_backup(service: ServiceBase, volume_path: str | os.PathLike[str], *, name: str | None,
                        volume_id: str | None, ctx: ContextLike, on_progress: ProgressObserver | None,
                        incremental: bool) -> BackupRecord:
    """Back up ``volume_path``; returns the ``available`` record (see the method)."""
    rbd = is_rbd_url(volume_path)  # rbd://POOL/IMAGE: an RBD image, kept as its URL (_rbd)
    path = str(volume_path) if rbd else await anyio.to_thread.run_sync(os.path.realpath, volume_path)
    context = service._context(ctx)
    volume_id = volume_id or (rbd_volume_id(path) if rbd else _volume_id_for(service.host, path))
    parent = await latest_backup(service, volume_id) if incremental else None
    try:
        size = await service.driver.volume_size(path)
    except BackupError:
        size = 0  # reported below, inside the operation, as create.error
    store_kind, store_location = service.driver.store_identity
    pid, token = current_process()
    backup_id = new_backup_id()
    record = await service.catalog.add(BackupRecord(
        id=backup_id,
        snapshot_id=snapshot_name(backup_id) if rbd else None,  # the RBD snapshot the backup reads
        project_id=context.project_id or service.project_id,
        user_id=context.user_id or service.user_id,
        availability_zone=service.availability_zone,
        host=service.host,
        display_name=name,
        volume_id=volume_id,
        volume_path=path,
        service=service.driver.service,
        size_bytes=size,
        store_kind=store_kind,
        store_location=store_location,
        worker_host=service.host,
        worker_pid=pid,
        worker_token=token,
        parent_id=parent.id if parent is not None else None,
    ))
    describe(record)
    await service._emit(context, "backup.create.start", usage_from_backup(record))
    try:
        record = await service._run_with_progress(
            context, "create", record, size, on_progress,
            lambda on_object: service.driver.backup(record, on_object, parent))
    except BaseException as exc:
        await service._guarded(context, "create", record, exc)
        raise
    return record


async def latest_backup(service: ServiceBase, volume_id: str) -> BackupRecord:
    """The newest available backup of ``volume_id`` in the service's store: the parent of an
    incremental backup, as Cinder picks it."""
    identity = service.driver.store_identity
    candidates = [r for r in await service.catalog.list(volume_id=volume_id)
                  if r.status is BackupStatus.AVAILABLE and (r.store_kind, r.store_location) == identity]
    if not candidates:
        raise BackupError(f"no available backup of volume {volume_id} in the {identity[0]} store {identity[1]!r}"
                          " to base an incremental backup on: make a full backup first")
    return max(candidates, key=lambda r: (r.created_at, r.id))


def _volume_id_for(host: str, path: str) -> str:
    """A stable id from the volume's host and real path; bytes that are not UTF-8 (kept by
    surrogateescape) enter as ``\\xff`` escapes, so every path gets one, and valid UTF-8
    paths keep the id they always had."""
    name = f"file://{host}{path}".encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))
