"""ChunkedBackupDriver: split a volume into chunks, compress, checksum, store as objects.

The shape of Cinder's ChunkedBackupDriver on an ObjectStore: a backup is a pipeline of
reads, pack workers and writers (``_chunk_backup``), a restore fetches, checks and writes
objects in parallel (``_chunk_restore``); both run their CPU work in worker threads.

Every backup also stores, beside its metadata, a digest of each block of the volume
(Cinder's ``_sha256file``, blocks of ``backup_sha_block_size_bytes`` = 32 KiB; the hash is
blake3 for new full backups, or sha256 as Cinder's, and an increment keeps its parent's:
``_block_hash``). An
incremental backup compares each block with its parent's list and stores only the runs of
changed blocks; restore walks the chain from the full backup, takes each block from the
newest backup that holds it, and checks every block against the newest list
(``_chunk_layers``, ``_chunk_restore``). The metadata object, written last, lists every
object with its place, sizes and compression.

Zero blocks (version 3): an all-zero block — a hole of a sparse file, never read, or zeros
read — is stored as nothing and listed in the metadata's ``zero_blocks`` runs; its entry in
the block list is the digest of zeros, so increments compare it like any other block.
Restore leaves zero blocks as holes in the file it creates, and punches or writes them on a
block device (``_sparse``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any, BinaryIO

import anyio
import anyio.to_thread

from ._block_hash import DEFAULT_BLOCK_HASH, DIGEST_SIZE, BlockHash, get_block_hash
from ._buffers import declared_with
from ._catalog import BackupRecord
from ._chunk_backup import backup_objects
from ._chunk_layers import (
    METADATA_VERSION,
    Layer,
    PlanItem,
    get_backup_object,
    read_chain,
    read_layer,
    restore_plan,
)
from ._chunk_pack import Packer
from ._chunk_restore import restore_objects
from ._compression import Compressor, get_compressor
from ._driver import BackupDriver, BackupResult, ObjectCallback
from ._errors import BackupConfigError, BackupError, CorruptBackupError, ObjectNotFoundError
from ._objectstore import ObjectStore, wanted_digests
from ._targets import RestoreTarget, open_target
from ._tracing import timed_async
from ._volume import is_rbd_url, open_volume, volume_size

__all__ = ["BLOCK_SIZE", "DEFAULT_CHUNK_SIZE", "DEFAULT_UPLOADS", "MAX_CHUNK_SIZE", "MAX_PARALLEL",
           "METADATA_VERSION", "MIN_CHUNK_SIZE", "ChunkedBackupDriver", "block_size_for",
           "check_pipeline"]

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
MIN_CHUNK_SIZE = 4096
# About 3 x workers + uploads chunks are in memory at once (two bounded streams and the
# chunks being packed or written): 64 MiB chunks with 4 workers stay under 1 GiB.
MAX_CHUNK_SIZE = 64 * 1024 * 1024
# More compress workers or uploads than this buys nothing and costs chunks of memory each.
MAX_PARALLEL = 64
# Objects being written at once: enough to overlap one store round-trip with the next.
DEFAULT_UPLOADS = 2
# Cinder's backup_sha_block_size_bytes: the unit an incremental backup compares and stores.
BLOCK_SIZE = 32 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]")


def block_size_for(chunk_size: int) -> int:
    """32 KiB when chunks are a multiple of it, else one block per chunk: blocks never
    straddle chunks, so each chunk is compared and stored on its own."""
    return BLOCK_SIZE if chunk_size % BLOCK_SIZE == 0 else chunk_size


def check_pipeline(chunk_size: int, workers: int | None, uploads: int | None) -> None:
    """BackupConfigError unless the pipeline settings are in range (memory stays bounded)."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise BackupConfigError(f"chunk_size must be {MIN_CHUNK_SIZE} bytes (4KiB) to {MAX_CHUNK_SIZE} bytes"
                                f" (64MiB), got {chunk_size}")
    for key, value in (("workers", workers), ("uploads", uploads)):
        if value is not None and not 1 <= value <= MAX_PARALLEL:
            raise BackupConfigError(f"{key} must be 1 to {MAX_PARALLEL}, got {value}")


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception worth reporting from a task group: a real error before a cancellation."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    cancelled = anyio.get_cancelled_exc_class()
    for exc in leaves:
        if not isinstance(exc, cancelled):
            return exc
    return leaves[0] if leaves else group


class ChunkedBackupDriver(BackupDriver):
    """Chunked, compressed, checksummed, optionally incremental backups on any ObjectStore."""

    def __init__(self, store: ObjectStore, *, chunk_size: int = DEFAULT_CHUNK_SIZE, compression: str = "zstd",
                 compression_level: int | None = None, workers: int | None = None,
                 uploads: int = DEFAULT_UPLOADS, block_hash: str = DEFAULT_BLOCK_HASH) -> None:
        check_pipeline(chunk_size, workers, uploads)
        self.store = store
        self.uploads = uploads
        self.chunk_size = chunk_size
        self.compressor: Compressor = get_compressor(compression, compression_level)
        self.workers = workers or max(2, min(os.cpu_count() or 2, MAX_PARALLEL))
        self.block_hash: BlockHash = get_block_hash(block_hash)  # of new full backups (increments: the parent's)

    @property
    def service(self) -> str:
        return f"backup.drivers.{self.store.name}"

    @property
    def store_identity(self) -> tuple[str, str]:
        return self.store.name, self.store.location

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(store={self.store!r}, chunk_size={self.chunk_size},"
                f" compression={self.compressor.name!r}, block_hash={self.block_hash.name!r})")

    # -- naming (Cinder: volume_<id>/<timestamp>/az_<az>_backup_<id>, flattened) ----------

    @staticmethod
    def container_for(record: BackupRecord) -> str:
        return f"backup_{record.id}"

    @staticmethod
    def prefix_for(record: BackupRecord) -> str:
        stamp = record.created_at.strftime("%Y%m%d%H%M%S")
        az = _UNSAFE.sub("_", record.availability_zone)
        # Any volume id (a --volume-id is free text) becomes one short path-safe word.
        volume = _UNSAFE.sub("_", record.volume_id)[:64].replace("..", "__")
        return f"volume_{volume}_{stamp}_az_{az[:64].replace('..', '__')}_backup_{record.id}"

    @staticmethod
    def metadata_name(prefix: str) -> str:
        return f"{prefix}_metadata"

    @staticmethod
    def sha256file_name(prefix: str) -> str:
        return f"{prefix}_sha256file"

    def expected_objects(self, size_bytes: int) -> int:
        return math.ceil(size_bytes / self.chunk_size)

    # -- backup ------------------------------------------------------------------------

    async def volume_size(self, volume_path: str | os.PathLike[str]) -> int:
        return await anyio.to_thread.run_sync(volume_size, volume_path)

    async def _parent_geometry(self, parent: BackupRecord) -> tuple[int, int, bytes, BlockHash]:
        """(chunk_size, block_size, block digests, their hash) of the backup an increment is based on."""
        layer = await self._layer(parent)
        if layer.digests is None:
            raise BackupError(f"backup {parent.id} was made before incremental backups existed (it has no block"
                              " list): make a full backup first")
        return int(layer.meta["chunk_size"]), int(layer.meta["block_size"]), layer.digests, layer.block_hash

    async def backup(self, record: BackupRecord, on_object: ObjectCallback,
                     parent: BackupRecord | None = None) -> BackupResult:
        if is_rbd_url(record.volume_path):  # an RBD image, read from a snapshot of its own
            from ._rbd_source import rbd_backup  # librbd only for rbd:// volumes

            meta = dict((await self._layer(parent)).meta) if parent is not None else None  # what it diffs from
            return await rbd_backup(record, parent, meta, lambda source: self._backup(record, on_object, parent, source))
        return await self._backup(record, on_object, parent, None)

    async def _backup(self, record: BackupRecord, on_object: ObjectCallback, parent: BackupRecord | None,
                      source: Any) -> BackupResult:
        container, prefix = self.container_for(record), self.prefix_for(record)
        chunk_size, block_size, parent_digests = self.chunk_size, block_size_for(self.chunk_size), None
        block_hash = self.block_hash
        if parent is not None:  # an increment keeps its parent's geometry and hash, so blocks compare
            chunk_size, block_size, parent_digests, block_hash = await self._parent_geometry(parent)
        fh: BinaryIO | None = None
        size = source.size if source is not None else 0
        if source is None:
            fh, size = await anyio.to_thread.run_sync(open_volume, record.volume_path)
        sha_name = self.sha256file_name(prefix)
        # the store's wanted digests and buffer capability, and the chain's block hash
        packer = Packer(self.compressor, wanted_digests(self.store),
                        buffers=declared_with(self.store, "accepts_buffers", "put_object"), block_hash=block_hash)
        try:
            entries, digests, zeros = await backup_objects(
                self.store, packer, fh, size, record.volume_path, container, prefix, sha_name, on_object, chunk_size,
                block_size, parent_digests, workers=self.workers, uploads=self.uploads, source=source)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            if fh is not None:
                await anyio.to_thread.run_sync(fh.close)
        metadata = {
            # sha256 lists are written as version 3 was, so an older notifykit still reads them
            "version": METADATA_VERSION if block_hash.name != "sha256" else 3,
            "backup_id": record.id,
            "volume_id": record.volume_id,
            "created_at": record.created_at.isoformat(),
            "parent_id": parent.id if parent is not None else None,
            "chunk_size": chunk_size,
            "block_size": block_size,
            "compression": self.compressor.name,
            "volume_size": size,
            **({"block_hash": block_hash.name} if block_hash.name != "sha256" else {}),
            "sha256file": {"name": sha_name, "blocks": len(digests) // DIGEST_SIZE,
                           "sha256": await anyio.to_thread.run_sync(lambda: hashlib.sha256(digests).hexdigest())},
            "objects": entries,
            "zero_blocks": [list(run) for run in zeros],
            **({"source": source.describe()} if source is not None else {}),
        }
        encoded = await anyio.to_thread.run_sync(lambda: json.dumps(metadata, indent=1).encode())
        await timed_async("metadata", self.store.put_object)(container, self.metadata_name(prefix), encoded)
        await self.store.sync_container(container)
        return BackupResult(container=container, service_metadata=prefix, size_bytes=size,
                            object_count=len(entries), stored_bytes=sum(e["stored_length"] for e in entries))

    # -- reading a backup's metadata (_chunk_layers) -----------------------------------

    async def _get(self, record: BackupRecord, name: str, what: str) -> bytes:
        return await get_backup_object(self.store, record, name, what)

    async def _layer(self, record: BackupRecord) -> Layer:
        """A backup's metadata and block list, every field and size checked."""
        return await read_layer(self.store, record, self.metadata_name(record.service_metadata or ""))

    async def _chain(self, record: BackupRecord, parents: Sequence[BackupRecord]) -> list[Layer]:
        return await read_chain(self._layer, record, parents)

    @staticmethod
    def _plan(layers: list[Layer]) -> tuple[list[PlanItem], list[tuple[int, int]]]:
        return restore_plan(layers)

    # -- restore (_chunk_restore) ------------------------------------------------------

    async def restore(self, record: BackupRecord, target: str | os.PathLike[str], on_object: ObjectCallback,
                      *, overwrite: bool = False, parents: Sequence[BackupRecord] = (), create: bool = False) -> int:
        layers = await timed_async("metadata", self._chain)(record, parents)
        plan, zeros = self._plan(layers)
        newest = layers[-1]
        size = int(newest.meta["volume_size"])
        out: RestoreTarget = await anyio.to_thread.run_sync(
            lambda: open_target(target, overwrite=overwrite, operation=record.id, create=create, size=size))
        written = 0
        try:
            # A file the restore creates is all holes up to its size: zero blocks stay
            # holes. A device written in place gets its zero ranges punched or written.
            fresh = not out.in_place
            zero_bytes = sum(length for _, length in zeros)
            if fresh:
                await anyio.to_thread.run_sync(out.prepare, size)
            elif zeros:
                await anyio.to_thread.run_sync(lambda: [out.zero(at, n) for at, n in zeros])
            if zero_bytes:
                written += zero_bytes
                await on_object(zero_bytes)
            try:
                written += await restore_objects(self.store, self.compressor, plan, newest, out, on_object,
                                                 workers=self.workers, readers=self.uploads, fresh=fresh)
            except BaseExceptionGroup as group:
                raise first_error(group) from None
            if written != size:
                raise CorruptBackupError(f"restored {written} bytes, the backup holds {size}")
            await anyio.to_thread.run_sync(out.finish, written)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(out.discard)
            raise
        return written

    # -- delete ------------------------------------------------------------------------

    async def delete(self, record: BackupRecord) -> None:
        if is_rbd_url(record.volume_path) and record.snapshot_id:  # no backup needs its snapshot any more
            from ._rbd import remove_snapshot

            await anyio.to_thread.run_sync(remove_snapshot, record.volume_path, record.snapshot_id)
        container = record.container or self.container_for(record)
        try:
            names = await self.store.list_objects(container)
        except ObjectNotFoundError:
            return  # never created, or already removed
        for name in names:
            try:
                await self.store.delete_object(container, name)
            except ObjectNotFoundError:
                pass
        try:
            await self.store.delete_container(container)
        except ObjectNotFoundError:
            pass
