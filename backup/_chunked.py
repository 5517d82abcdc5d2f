"""ChunkedBackupDriver: split a volume into chunks, compress, checksum, store as objects.

The shape of Cinder's ChunkedBackupDriver on an ObjectStore, as an asyncio pipeline:

    reader ──(bounded stream)──► N compress+sha256 workers ──(bounded stream)──► M writers

Reads, hashing/compression and object writes all run in worker threads (zlib, zstd and
hashlib release the GIL), so several cores work at once while the event loop only moves
chunk references. The streams are bounded, so memory stays at a few chunks per worker.
A metadata object, written last, lists every chunk with its sha256, sizes and compression;
restore checks all of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._catalog import BackupRecord
from ._compression import Compressor, get_compressor
from ._driver import BackupDriver, BackupResult, ObjectCallback
from ._errors import BackupConfigError, BackupError, CorruptBackupError, ObjectNotFoundError
from ._objectstore import ObjectStore
from ._volume import open_restore_target, open_volume, read_exactly, volume_size

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_UPLOADS", "MAX_CHUNK_SIZE", "MAX_PARALLEL", "METADATA_VERSION",
           "MIN_CHUNK_SIZE", "ChunkedBackupDriver", "check_pipeline"]

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
MIN_CHUNK_SIZE = 4096
# About 3 x workers + uploads chunks are in memory at once (two bounded streams and the
# chunks being packed or written): 64 MiB chunks with 4 workers stay under 1 GiB.
MAX_CHUNK_SIZE = 64 * 1024 * 1024
# More compress workers or uploads than this buys nothing and costs chunks of memory each.
MAX_PARALLEL = 64
# Objects being written at once: enough to overlap one store round-trip with the next.
DEFAULT_UPLOADS = 2
METADATA_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]")


@dataclass(frozen=True, slots=True)
class _Raw:
    index: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class _Packed:
    index: int
    offset: int
    length: int
    sha256: str
    compression: str
    stored: bytes


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
    """Chunked, compressed, checksummed backups on any ObjectStore."""

    def __init__(self, store: ObjectStore, *, chunk_size: int = DEFAULT_CHUNK_SIZE, compression: str = "zstd",
                 compression_level: int | None = None, workers: int | None = None,
                 uploads: int = DEFAULT_UPLOADS) -> None:
        check_pipeline(chunk_size, workers, uploads)
        self.store = store
        self.uploads = uploads
        self.chunk_size = chunk_size
        self.compressor: Compressor = get_compressor(compression, compression_level)
        self.workers = workers or max(2, min(os.cpu_count() or 2, MAX_PARALLEL))

    @property
    def service(self) -> str:
        return f"backup.drivers.{self.store.name}"

    @property
    def store_identity(self) -> tuple[str, str]:
        return self.store.name, self.store.location

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(store={self.store!r}, chunk_size={self.chunk_size},"
                f" compression={self.compressor.name!r})")

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
    def object_name(prefix: str, index: int) -> str:
        return f"{prefix}-{index:05d}"

    @staticmethod
    def metadata_name(prefix: str) -> str:
        return f"{prefix}_metadata"

    def expected_objects(self, size_bytes: int) -> int:
        return math.ceil(size_bytes / self.chunk_size)

    # -- backup ------------------------------------------------------------------------

    async def volume_size(self, volume_path: str | os.PathLike[str]) -> int:
        return await anyio.to_thread.run_sync(volume_size, volume_path)

    def _pack(self, raw: _Raw) -> _Packed:
        """CPU work for one chunk (runs in a worker thread)."""
        digest = hashlib.sha256(raw.data).hexdigest()
        stored = self.compressor.compress(raw.data)
        compression = self.compressor.name
        if len(stored) >= len(raw.data):  # incompressible: keep it raw, restore gets cheaper
            stored, compression = raw.data, "none"
        return _Packed(raw.index, raw.offset, len(raw.data), digest, compression, stored)

    async def backup(self, record: BackupRecord, on_object: ObjectCallback) -> BackupResult:
        container, prefix = self.container_for(record), self.prefix_for(record)
        fh, size = await anyio.to_thread.run_sync(open_volume, record.volume_path)
        try:
            await self.store.create_container(container)
            entries = await self._run_backup_pipeline(fh, size, record.volume_path, container, prefix, on_object)
        finally:
            await anyio.to_thread.run_sync(fh.close)
        metadata = {
            "version": METADATA_VERSION,
            "backup_id": record.id,
            "volume_id": record.volume_id,
            "created_at": record.created_at.isoformat(),
            "chunk_size": self.chunk_size,
            "compression": self.compressor.name,
            "volume_size": size,
            "objects": entries,
        }
        encoded = await anyio.to_thread.run_sync(lambda: json.dumps(metadata, indent=1).encode())
        await self.store.put_object(container, self.metadata_name(prefix), encoded)
        await self.store.sync_container(container)
        return BackupResult(container=container, service_metadata=prefix, size_bytes=size,
                            object_count=len(entries), stored_bytes=sum(e["stored_length"] for e in entries))

    async def _run_backup_pipeline(self, fh: BinaryIO, size: int, where: str, container: str, prefix: str,
                                   on_object: ObjectCallback) -> list[dict[str, Any]]:
        entries: dict[int, dict[str, Any]] = {}
        count = self.expected_objects(size)

        async def read(out: MemoryObjectSendStream[_Raw]) -> None:
            async with out:
                for index in range(count):
                    offset = index * self.chunk_size
                    length = min(self.chunk_size, size - offset)
                    data = await anyio.to_thread.run_sync(read_exactly, fh, length, where, offset)
                    await out.send(_Raw(index, offset, data))

        async def pack(inp: MemoryObjectReceiveStream[_Raw], out: MemoryObjectSendStream[_Packed]) -> None:
            async with inp, out:
                async for raw in inp:
                    await out.send(await anyio.to_thread.run_sync(self._pack, raw))

        async def write(inp: MemoryObjectReceiveStream[_Packed]) -> None:
            async with inp:
                async for packed in inp:
                    name = self.object_name(prefix, packed.index)
                    await self.store.put_object(container, name, packed.stored)
                    entries[packed.index] = {
                        "name": name, "offset": packed.offset, "length": packed.length,
                        "stored_length": len(packed.stored), "sha256": packed.sha256,
                        "compression": packed.compression,
                    }
                    await on_object(packed.length)

        raw_send, raw_recv = anyio.create_memory_object_stream[_Raw](self.workers)
        packed_send, packed_recv = anyio.create_memory_object_stream[_Packed](self.workers)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, raw_send)
                for _ in range(self.workers):
                    tg.start_soon(pack, raw_recv.clone(), packed_send.clone())
                for _ in range(self.uploads):
                    tg.start_soon(write, packed_recv.clone())
                raw_recv.close()
                packed_send.close()
                packed_recv.close()
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        return [entries[i] for i in range(count)]

    # -- restore -----------------------------------------------------------------------

    async def _metadata(self, record: BackupRecord) -> dict[str, Any]:
        if not record.container or not record.service_metadata:
            raise CorruptBackupError(f"backup {record.id} has no objects recorded (it never completed)")
        name = self.metadata_name(record.service_metadata)
        try:
            raw = await self.store.get_object(record.container, name)
        except ObjectNotFoundError:
            raise CorruptBackupError(
                f"metadata object {record.container}/{name} is missing: the backup is incomplete or damaged"
            ) from None
        try:
            meta = await anyio.to_thread.run_sync(json.loads, raw)
            objects = meta["objects"]
            size = int(meta["volume_size"])
            checked = [(str(o["name"]), int(o["offset"]), int(o["length"]), int(o["stored_length"]),
                        str(o["sha256"]), str(o["compression"])) for o in objects]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptBackupError(f"metadata object {record.container}/{name} is unreadable: {exc!r}") from None
        expected = 0
        for entry in checked:
            if entry[1] != expected:
                raise CorruptBackupError(f"metadata object {record.container}/{name}: chunk {entry[0]} is out of place")
            expected += entry[2]
        if expected != size or size != record.size_bytes:
            raise CorruptBackupError(
                f"metadata object {record.container}/{name}: chunks cover {expected} bytes, metadata says {size},"
                f" catalog says {record.size_bytes}"
            )
        meta["objects"] = [dict(zip(("name", "offset", "length", "stored_length", "sha256", "compression"), e,
                                    strict=True), index=i) for i, e in enumerate(checked)]
        return dict(meta)

    def _unpack(self, container: str, entry: dict[str, Any], stored: bytes) -> bytes:
        """Verify one object against its metadata and return its raw bytes (worker thread)."""
        where = f"object {container}/{entry['name']}"
        if len(stored) != entry["stored_length"]:
            raise CorruptBackupError(f"{where} is {len(stored)} bytes, metadata says {entry['stored_length']}")
        compression = entry["compression"]
        if compression == "none":
            data = stored
        else:
            codec = self.compressor if compression == self.compressor.name else get_compressor(compression)
            try:
                data = codec.decompress(stored, entry["length"])
            except CorruptBackupError as exc:
                raise CorruptBackupError(f"{where} is corrupt: {exc}") from None
        if len(data) != entry["length"]:
            raise CorruptBackupError(f"{where} holds {len(data)} bytes, metadata says {entry['length']}")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CorruptBackupError(f"{where} is corrupt: sha256 does not match the metadata")
        return data

    async def restore(self, record: BackupRecord, target: str | os.PathLike[str], on_object: ObjectCallback,
                      *, overwrite: bool = False) -> int:
        meta = await self._metadata(record)
        container = record.container
        assert container is not None
        fh, path, in_place = await anyio.to_thread.run_sync(
            lambda: open_restore_target(target, overwrite=overwrite))
        written = 0
        try:
            fd = fh.fileno()

            async def restore_one(entries: MemoryObjectReceiveStream[dict[str, Any]]) -> None:
                nonlocal written
                async with entries:
                    async for entry in entries:
                        try:
                            stored = await self.store.get_object(container, entry["name"])
                        except ObjectNotFoundError:
                            raise CorruptBackupError(
                                f"object {container}/{entry['name']} (chunk {entry['index']}) is missing from the object store"
                            ) from None
                        data = await anyio.to_thread.run_sync(self._unpack, container, entry, stored)
                        await anyio.to_thread.run_sync(_pwrite_all, fd, data, entry["offset"], path)
                        written += len(data)
                        await on_object(len(data))

            send, receive = anyio.create_memory_object_stream[dict[str, Any]](self.workers)
            try:
                async with anyio.create_task_group() as tg:
                    for _ in range(self.workers):
                        tg.start_soon(restore_one, receive.clone())
                    receive.close()
                    async with send:
                        for entry in meta["objects"]:
                            await send.send(entry)
            except BaseExceptionGroup as group:
                raise first_error(group) from None
            if written != meta["volume_size"]:
                raise CorruptBackupError(f"restored {written} bytes, the backup holds {meta['volume_size']}")
            await anyio.to_thread.run_sync(_finish_target, fh, path, target, in_place, written)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_discard_target, fh, path, in_place)
            raise
        return written

    # -- delete ------------------------------------------------------------------------

    async def delete(self, record: BackupRecord) -> None:
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


def _pwrite_all(fd: int, data: bytes, offset: int, path: os.PathLike[str]) -> None:
    view = memoryview(data)
    try:
        while view:
            done = os.pwrite(fd, view, offset)
            view, offset = view[done:], offset + done
    except OSError as exc:
        raise BackupError(f"cannot write restore target {os.fspath(path)!r}: {exc.strerror or exc}") from None


def _finish_target(fh: BinaryIO, path: os.PathLike[str], target: str | os.PathLike[str], in_place: bool,
                   size: int) -> None:
    """Sync and close; a regular-file restore is renamed into place only now, when complete."""
    try:
        if not in_place:
            os.ftruncate(fh.fileno(), size)
        os.fsync(fh.fileno())
        fh.close()
        if not in_place:
            os.replace(path, target)
    except OSError as exc:
        raise BackupError(f"cannot finish restore target {os.fspath(target)!r}: {exc.strerror or exc}") from None


def _discard_target(fh: BinaryIO, path: os.PathLike[str], in_place: bool) -> None:
    fh.close()
    if not in_place:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
