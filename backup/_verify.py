"""``verify``: read every object of a backup and of its chain of parents and check it
against the metadata and every block against the block list, writing nothing.

It is what a restore checks, without a target: the metadata's owner, sizes and parent
against the catalog record, the block list against its sha256, each object's stored size,
compression and length, and every block of every object (not only the blocks a restore
would take from it) against the block list of the backup the object belongs to, and each
run of zero blocks (stored as nothing) against that block list too: a zero block's entry must
be the digest of zeros (in its block hash). The first problem, in chain order (the full backup first), is one
CorruptBackupError naming the object or the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from ._block_hash import BlockHash
from ._catalog import BackupRecord, BackupStatus
from ._chunk_restore import unpack, verify_blocks
from ._chunked import ChunkedBackupDriver
from ._errors import BackupError, CorruptBackupError, InvalidStatusTransitionError, ObjectNotFoundError
from ._service import BackupService, ProgressObserver
from ._tracing import describe, timed, timed_async, traced

__all__ = ["VerifyReport", "verify_backup", "verify_record"]

# A backup in these statuses is being written or removed, or is gone: nothing to verify.
_UNVERIFIABLE = frozenset({BackupStatus.CREATING, BackupStatus.DELETING, BackupStatus.DELETED})


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a passed verification read."""

    backup_id: str
    backups: int  # the backup and its parents
    objects: int
    stored_bytes: int
    volume_bytes: int
    zero_blocks: int = 0  # blocks of the chain's backups stored as nothing (checked in their block lists)


def _read(report: VerifyReport) -> dict[str, int]:
    """What a verify read, as span attributes."""
    return {"notifykit.backup.verify.backups": report.backups, "notifykit.backup.verify.objects": report.objects,
            "notifykit.backup.verify.stored_bytes": report.stored_bytes}


@traced("verify", _read)
async def verify_backup(service: BackupService, backup_id: str, *,
                        on_progress: ProgressObserver | None = None) -> VerifyReport:
    """Check the backup ``backup_id`` whole (see the module); raises CorruptBackupError
    naming the first bad object, or InvalidStatusTransitionError while it is in flux."""
    record = await service.catalog.get(backup_id)
    describe(record)
    if record.status in _UNVERIFIABLE:
        raise InvalidStatusTransitionError(f"backup {record.id!r} is {record.status.value}: only a finished"
                                           " backup can be verified")
    return await verify_record(service, record, on_progress=on_progress)


async def verify_record(service: BackupService, record: BackupRecord, *,
                        on_progress: ProgressObserver | None = None) -> VerifyReport:
    """Check ``record`` whole, whatever its status, its parents taken from the catalog:
    reset-status verifies a backup before forcing it ``available``, import-record one that
    is not in the catalog yet."""
    service.check_store(record)
    driver = service.driver
    if not isinstance(driver, ChunkedBackupDriver):
        raise BackupError(f"the {driver.service} driver cannot verify backups")
    parents = await service._parents(record)
    layers = await timed_async("metadata", driver._chain)(record, parents)
    driver._plan(layers)  # every block of the volume is held by some backup of the chain
    # driver._layer has checked every layer's zero runs against its block list.
    zero_blocks = sum(count for layer in layers for _, count in layer.zeros)
    total = sum(int(entry["stored_length"]) for layer in layers for entry in layer.objects)
    done = objects = 0
    for layer in layers:
        container = str(layer.record.container)
        block_size = int(layer.meta.get("block_size", 1))
        for entry in layer.objects:
            where = f"object {container}/{entry['name']}"
            try:
                stored = await timed_async("fetch", driver.store.get_object)(container, entry["name"])
            except ObjectNotFoundError:
                raise CorruptBackupError(f"{where} (object {entry['index']} of backup {layer.record.id}) is missing"
                                         " from the object store") from None

            await anyio.to_thread.run_sync(timed("check", _check_object), driver, container, entry, stored, layer.digests,
                                           block_size, layer.block_hash)
            objects += 1
            done += len(stored)
            if on_progress is not None:
                on_progress(done, total)
    newest = layers[-1]
    return VerifyReport(record.id, len(layers), objects, done, int(newest.meta["volume_size"]), zero_blocks)


def _check_object(driver: ChunkedBackupDriver, container: str, entry: dict[str, Any], stored: bytes,
                  digests: bytes | None, block_size: int, block_hash: BlockHash) -> None:
    """One object's sizes and compression, then each of its blocks against its backup's
    block list in its hash (a version 1 backup: its sha256), in a worker thread."""
    data = unpack(driver.compressor, container, entry, stored)
    if digests is not None:
        verify_blocks(f"object {container}/{entry['name']}", data, 0, len(data), int(entry["offset"]),
                      block_size, digests, block_hash)
