"""ChunkedBackupDriver: split a volume into chunks, compress, checksum, store as objects.

The shape of Cinder's ChunkedBackupDriver on an ObjectStore, as an asyncio pipeline:

    reader ──(bounded stream)──► N pack workers ──(bounded stream)──► M writers

Reads, hashing/compression and object writes all run in worker threads (zlib, zstd and
hashlib release the GIL), so several cores work at once while the event loop only moves
chunk references. The streams are bounded, so memory stays at a few chunks per worker.

Every backup also stores, beside its metadata, the sha256 of each block of the volume
(Cinder's ``_sha256file``, blocks of ``backup_sha_block_size_bytes`` = 32 KiB). An
incremental backup compares each block with its parent's list and stores only the runs of
changed blocks; restore walks the chain from the full backup, takes each block from the
newest backup that holds it, and checks every block against the newest list. The
metadata object, written last, lists every object with its place, sizes and compression.

Zero blocks (version 3): an all-zero block — a hole of a sparse file, never read, or zeros
read — is stored as nothing and listed in the metadata's ``zero_blocks`` runs; its entry in
the block list is the sha256 of zeros, so increments compare it like any other block.
Restore leaves zero blocks as holes in the file it creates, and punches or writes them on a
block device (``_sparse``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._blockplan import planned_digests
from ._catalog import BackupRecord
from ._compression import Compressor, get_compressor
from ._driver import BackupDriver, BackupResult, ObjectCallback
from ._errors import BackupConfigError, BackupError, CorruptBackupError, ObjectNotFoundError
from ._objectstore import ObjectDigests, ObjectStore, compute_digests, put_object, wanted_digests
from ._sparse import ZeroRuns, data_chunk, is_sparse_capable, zero_digest, zero_digests
from ._target import RestoreTarget, open_restore_target
from ._tracing import timed, timed_async
from ._volume import is_rbd_url, open_volume, volume_size

__all__ = ["BLOCK_SIZE", "DEFAULT_CHUNK_SIZE", "DEFAULT_UPLOADS", "MAX_CHUNK_SIZE", "MAX_PARALLEL",
           "METADATA_VERSION", "MIN_CHUNK_SIZE", "ChunkedBackupDriver", "block_size_for", "check_pipeline"]

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
DIGEST_SIZE = 32
# 1: one sha256 per chunk, no block list (read only). 2: the block list, increments.
# 3: zero blocks stored as nothing, listed as runs in ``zero_blocks``.
METADATA_VERSION = 3
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]")
# A chunk whose samples (4 x 16 KiB, spread over it) do not shrink by 3 % is stored raw
# without compressing it whole: on random, compressed or encrypted data, zstd costs as
# much CPU as the sha256 of the chunk and saves nothing (borg's "auto" does the same).
_SAMPLES = 4
_SAMPLE_SIZE = 16 * 1024
_INCOMPRESSIBLE = 0.97
_ENTRY_KEYS = ("name", "offset", "length", "stored_length", "compression")
# Restore checks and writes an object this many bytes at a time (whole blocks), so each
# piece is still in the CPU's cache when it is copied into the target.
_SEGMENT = 256 * 1024


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


@dataclass(frozen=True, slots=True)
class _Raw:
    index: int
    offset: int
    length: int
    data: bytes | bytearray | None  # None: wholly in a hole, not read
    plan: bytes | None = None  # per block READ/ZERO/PARENT (_blockplan); None: hash data whole


@dataclass(frozen=True, slots=True)
class _Piece:
    """One object to store: a whole chunk, or (in an increment) a run of changed blocks."""

    name: str
    offset: int
    length: int
    compression: str
    stored: bytes
    digests: ObjectDigests | None = None  # what the store checks it by (object_digests)


@dataclass(frozen=True, slots=True)
class _Packed:
    index: int
    length: int
    digests: bytes
    pieces: tuple[_Piece, ...]
    zeros: tuple[tuple[int, int], ...]  # runs of zero blocks: (first block, count)


@dataclass(frozen=True, slots=True)
class _Layer:
    """One backup of a chain, as restore reads it: its objects, block list and geometry."""

    record: BackupRecord
    meta: dict[str, Any]
    objects: list[dict[str, Any]]
    digests: bytes | None  # None: a version 1 backup (a sha256 per chunk instead)
    zeros: ZeroRuns  # runs of zero blocks, held by no object (version 3)


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


def block_digests(data: bytes | bytearray, block_size: int) -> bytes:
    """The sha256 of each ``block_size`` block of ``data``, concatenated (worker thread)."""
    view = memoryview(data)
    sha = hashlib.sha256
    return b"".join([sha(view[i:i + block_size]).digest() for i in range(0, len(view), block_size)])


class ChunkedBackupDriver(BackupDriver):
    """Chunked, compressed, checksummed, optionally incremental backups on any ObjectStore."""

    def __init__(self, store: ObjectStore, *, chunk_size: int = DEFAULT_CHUNK_SIZE, compression: str = "zstd",
                 compression_level: int | None = None, workers: int | None = None,
                 uploads: int = DEFAULT_UPLOADS) -> None:
        check_pipeline(chunk_size, workers, uploads)
        self.store = store
        self._digests = wanted_digests(store)  # hashed with the chunk in its pack worker
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
    def piece_name(prefix: str, index: int, block: int) -> str:
        """An increment's run of changed blocks: chunk ``index``, from its block ``block``."""
        return f"{prefix}-{index:05d}-{block:04d}"

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

    def _looks_incompressible(self, data: bytes | bytearray | memoryview) -> bool:
        if self.compressor.name == "none" or len(data) < 4 * _SAMPLES * _SAMPLE_SIZE:
            return False
        view = memoryview(data)
        step = len(view) // _SAMPLES
        packed = sum(len(self.compressor.compress(view[i * step:i * step + _SAMPLE_SIZE])) for i in range(_SAMPLES))
        return packed >= _INCOMPRESSIBLE * _SAMPLES * _SAMPLE_SIZE

    def _stored(self, data: bytes | bytearray | memoryview) -> tuple[str, bytes]:
        if self._looks_incompressible(data):
            return "none", data if isinstance(data, bytes) else bytes(data)
        stored = self.compressor.compress(data)
        if len(stored) >= len(data):  # incompressible: keep it raw, restore gets cheaper
            return "none", data if isinstance(data, bytes) else bytes(data)
        return self.compressor.name, stored

    def _pack(self, raw: _Raw, prefix: str, block_size: int, parent: bytes | None) -> _Packed:
        """CPU work for one chunk (worker thread): block digests, then each run of non-zero
        blocks (that differ from the parent's, in an increment) compressed into an object,
        and the runs of zero blocks (that differ from the parent's) listed, stored as nothing."""
        first = raw.offset // block_size
        data = raw.data
        if raw.plan is not None:  # a reader that knows which blocks it read (an RBD diff)
            digests = planned_digests(data, raw.plan, raw.offset, raw.length, block_size, parent)
        else:
            digests = zero_digests(raw.length, block_size) if data is None else block_digests(data, block_size)
        nblocks = len(digests) // DIGEST_SIZE
        if parent is not None and parent[first * DIGEST_SIZE:(first + nblocks) * DIGEST_SIZE] == digests:
            return _Packed(raw.index, raw.length, digests, (), ())
        if data is None and parent is None:
            return _Packed(raw.index, raw.length, digests, (), ((first, nblocks),))
        zero = zero_digest(block_size)
        kinds = bytearray(nblocks)  # 0: as in the parent, 1: data to store, 2: a zero block
        for i in range(nblocks):
            d = digests[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE]
            if parent is not None and parent[(first + i) * DIGEST_SIZE:(first + i + 1) * DIGEST_SIZE] == d:
                continue
            zero_here = d == zero or d == zero_digest(min(block_size, raw.length - i * block_size))
            kinds[i] = 2 if data is None or zero_here else 1
        pieces: list[_Piece] = []
        zeros: list[tuple[int, int]] = []
        i = 0
        while i < nblocks:
            kind, j = kinds[i], i + 1
            while j < nblocks and kinds[j] == kind:
                j += 1
            if kind == 2:
                zeros.append((first + i, j - i))
            elif kind == 1 and data is not None:
                whole = i == 0 and j == nblocks
                part = data if whole else memoryview(data)[i * block_size:j * block_size]
                compression, stored = self._stored(part)
                name = self.object_name(prefix, raw.index) if whole and parent is None else \
                    self.piece_name(prefix, raw.index, i)
                pieces.append(_Piece(name, raw.offset + i * block_size, len(part), compression, stored,
                                     compute_digests(stored, self._digests)))
            i = j
        return _Packed(raw.index, raw.length, digests, tuple(pieces), tuple(zeros))

    async def _parent_geometry(self, parent: BackupRecord) -> tuple[int, int, bytes]:
        """(chunk_size, block_size, block digests) of the backup an increment is based on."""
        layer = await self._layer(parent)
        if layer.digests is None:
            raise BackupError(f"backup {parent.id} was made before incremental backups existed (it has no block"
                              " list): make a full backup first")
        return int(layer.meta["chunk_size"]), int(layer.meta["block_size"]), layer.digests

    async def backup(self, record: BackupRecord, on_object: ObjectCallback,
                     parent: BackupRecord | None = None) -> BackupResult:
        if is_rbd_url(record.volume_path):  # an RBD image, read from a snapshot of its own
            from ._rbd_source import rbd_backup  # librbd only for rbd:// volumes

            return await rbd_backup(self, record, parent, lambda source: self._backup(record, on_object, parent, source))
        return await self._backup(record, on_object, parent, None)

    async def _backup(self, record: BackupRecord, on_object: ObjectCallback, parent: BackupRecord | None,
                      source: Any) -> BackupResult:
        container, prefix = self.container_for(record), self.prefix_for(record)
        chunk_size, block_size, parent_digests = self.chunk_size, block_size_for(self.chunk_size), None
        if parent is not None:  # an increment keeps its parent's geometry, so blocks line up
            chunk_size, block_size, parent_digests = await self._parent_geometry(parent)
        fh: BinaryIO | None = None
        size = source.size if source is not None else 0
        if source is None:
            fh, size = await anyio.to_thread.run_sync(open_volume, record.volume_path)
        try:
            await self.store.create_container(container)
            entries, digests, zeros = await self._run_backup_pipeline(
                fh, size, record.volume_path, container, prefix, on_object, chunk_size, block_size, parent_digests,
                source=source)
        finally:
            if fh is not None:
                await anyio.to_thread.run_sync(fh.close)
        sha_name = self.sha256file_name(prefix)
        await timed_async("metadata", self.store.put_object)(container, sha_name, digests)
        metadata = {
            "version": METADATA_VERSION,
            "backup_id": record.id,
            "volume_id": record.volume_id,
            "created_at": record.created_at.isoformat(),
            "parent_id": parent.id if parent is not None else None,
            "chunk_size": chunk_size,
            "block_size": block_size,
            "compression": self.compressor.name,
            "volume_size": size,
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

    async def _run_backup_pipeline(self, fh: BinaryIO | None, size: int, where: str, container: str, prefix: str,
                                   on_object: ObjectCallback, chunk_size: int, block_size: int,
                                   parent: bytes | None, *,
                                   source: Any = None) -> tuple[list[dict[str, Any]], bytes, ZeroRuns]:
        entries: list[dict[str, Any]] = []
        digests: dict[int, bytes] = {}
        zeros: ZeroRuns = []
        count = math.ceil(size / chunk_size)
        fd = fh.fileno() if fh is not None else -1
        sparse = fh is not None and await anyio.to_thread.run_sync(is_sparse_capable, fd)

        async def read(out: MemoryObjectSendStream[_Raw]) -> None:
            """Each chunk, in order; one holding no data (a hole) goes on unread."""
            async with out:
                index = 0
                while index < count:
                    at, data = await anyio.to_thread.run_sync(
                        timed("read", data_chunk), fd, index * chunk_size, chunk_size, size, where, sparse)
                    for hole in range(index, count if data is None else at // chunk_size):
                        offset = hole * chunk_size
                        await out.send(_Raw(hole, offset, min(chunk_size, size - offset), None))
                    if data is None:
                        break
                    index = at // chunk_size
                    await out.send(_Raw(index, at, len(data), data))
                    index += 1

        async def pack(inp: MemoryObjectReceiveStream[_Raw], out: MemoryObjectSendStream[_Packed]) -> None:
            async with inp, out:
                async for raw in inp:
                    if raw.data is None:  # digests are constants: no thread needed
                        await out.send(self._pack(raw, prefix, block_size, parent))
                    else:
                        await out.send(await anyio.to_thread.run_sync(timed("pack", self._pack), raw, prefix, block_size, parent))

        async def write(inp: MemoryObjectReceiveStream[_Packed]) -> None:
            async with inp:
                async for packed in inp:
                    for piece in packed.pieces:
                        await timed_async("store", put_object)(self.store, container, piece.name, piece.stored, piece.digests)
                        entries.append({"name": piece.name, "offset": piece.offset, "length": piece.length,
                                        "stored_length": len(piece.stored), "compression": piece.compression})
                    digests[packed.index] = packed.digests
                    zeros.extend(packed.zeros)
                    await on_object(packed.length)

        raw_send, raw_recv = anyio.create_memory_object_stream[_Raw](self.workers)
        packed_send, packed_recv = anyio.create_memory_object_stream[_Packed](self.workers)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read if source is None else source.reader(chunk_size, block_size, _Raw), raw_send)
                for _ in range(self.workers):
                    tg.start_soon(pack, raw_recv.clone(), packed_send.clone())
                for _ in range(self.uploads):
                    tg.start_soon(write, packed_recv.clone())
                raw_recv.close()
                packed_send.close()
                packed_recv.close()
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        entries.sort(key=lambda e: int(e["offset"]))
        return entries, b"".join(digests[i] for i in range(count)), _merge_runs(zeros)

    # -- reading a backup's metadata ---------------------------------------------------

    async def _get(self, record: BackupRecord, name: str, what: str) -> bytes:
        assert record.container is not None
        try:
            return await self.store.get_object(record.container, name)
        except ObjectNotFoundError:
            raise CorruptBackupError(
                f"{what} object {record.container}/{name} is missing: the backup is incomplete or damaged"
            ) from None

    async def _layer(self, record: BackupRecord) -> _Layer:
        """A backup's metadata and block list, every field and size checked."""
        if not record.container or not record.service_metadata:
            raise CorruptBackupError(f"backup {record.id} has no objects recorded (it never completed)")
        name = self.metadata_name(record.service_metadata)
        where = f"metadata object {record.container}/{name}"
        raw = await self._get(record, name, "metadata")
        try:
            meta = await anyio.to_thread.run_sync(json.loads, raw)
            version = int(meta.get("version", 1))
            owner = (meta.get("backup_id"), meta.get("volume_id"))
            size = int(meta["volume_size"])
            objects = [{key: (str if key in ("name", "compression") else int)(o[key]) for key in _ENTRY_KEYS}
                       | ({"sha256": str(o["sha256"])} if version == 1 else {}) for o in meta["objects"]]
            if version >= 2:
                block_size = int(meta["block_size"])
                sha_info = meta["sha256file"]
                sha_name, blocks, sha_hex = str(sha_info["name"]), int(sha_info["blocks"]), str(sha_info["sha256"])
                parent_id = meta.get("parent_id")
            zeros: ZeroRuns = [(int(a), int(n)) for a, n in meta["zero_blocks"]] if version >= 3 else []
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptBackupError(f"{where} is unreadable: {exc!r}") from None
        if version not in range(1, METADATA_VERSION + 1):
            raise CorruptBackupError(f"{where} has version {version}; this notifykit reads versions 1 to"
                                     f" {METADATA_VERSION}")
        if owner != (record.id, record.volume_id):  # another backup's objects copied in
            raise CorruptBackupError(f"{where} is of backup {owner[0]!r} (volume {owner[1]!r}), the catalog's record"
                                     f" is backup {record.id!r} (volume {record.volume_id!r}): refusing to restore it")
        if size != record.size_bytes:
            raise CorruptBackupError(f"{where}: metadata says {size} bytes, catalog says {record.size_bytes}")
        for i, entry in enumerate(objects):
            entry["index"] = i
        digests: bytes | None = None
        if version == 1:
            _check_coverage(objects, size, where, contiguous=True, block_size=1)
        else:
            if parent_id != record.parent_id:
                raise CorruptBackupError(f"{where}: parent {parent_id!r}, catalog says {record.parent_id!r}")
            if block_size < 1 or blocks != math.ceil(size / block_size):
                raise CorruptBackupError(f"{where}: {blocks} blocks of {block_size} bytes cannot hold {size} bytes")
            runs = [{"name": f"zero blocks {a} to {a + n - 1}", "offset": a * block_size,
                     "length": min(n * block_size, size - a * block_size) if 0 < n and (a + n - 1) * block_size < size
                     else 0} for a, n in zeros]
            _check_coverage(sorted(objects + runs, key=lambda e: int(e["offset"])), size, where,
                            contiguous=record.parent_id is None, block_size=block_size)
            digests = await self._get(record, sha_name, "block list")
            if len(digests) != blocks * DIGEST_SIZE or \
                    await anyio.to_thread.run_sync(lambda: hashlib.sha256(digests).hexdigest()) != sha_hex:
                raise CorruptBackupError(f"block list {record.container}/{sha_name} does not match its metadata")
            for a, n in zeros:  # a zero block is zero in the block list too (verify relies on it)
                if digests[a * DIGEST_SIZE:(a + n) * DIGEST_SIZE] != _zero_run_digests(a, n, block_size, size):
                    raise CorruptBackupError(f"{where}: zero blocks {a} to {a + n - 1} are not zero in the block"
                                             f" list {record.container}/{sha_name}")
        return _Layer(record, dict(meta), objects, digests, zeros)

    # -- restore -----------------------------------------------------------------------

    def _unpack(self, container: str, entry: dict[str, Any], stored: bytes) -> bytes:
        """One object's raw bytes, its sizes checked (worker thread)."""
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
        if "sha256" in entry and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CorruptBackupError(f"{where} is corrupt: sha256 does not match the metadata")
        return data

    @staticmethod
    def _verify_blocks(where: str, data: bytes, start: int, stop: int, offset: int, block_size: int,
                       digests: bytes) -> None:
        """Check bytes ``start:stop`` of an object at volume ``offset`` block by block
        against the newest backup's block list (worker thread)."""
        view = memoryview(data)
        sha = hashlib.sha256
        first = (offset + start) // block_size
        for n, i in enumerate(range(start, stop, block_size)):
            k = (first + n) * DIGEST_SIZE
            if sha(view[i:min(i + block_size, stop)]).digest() != digests[k:k + DIGEST_SIZE]:
                raise CorruptBackupError(f"{where} is corrupt: block {first + n} (volume offset"
                                         f" {offset + i}) does not match the block list")

    @classmethod
    def _verified(cls, where: str, data: bytes, start: int, stop: int, parts: Iterable[tuple[int, int]],
                  offset: int, block_size: int, digests: bytes) -> Iterator[tuple[int, int]]:
        """``parts`` (sorted ranges within ``start:stop``) to write, each segment of
        ``start:stop`` checked against the block list just before its parts are yielded:
        hashing a segment and writing it while it is in the CPU's cache, rather than hashing
        the whole object and then copying it cold, halved a restore's CPU (issue 29)."""
        step = max(block_size, _SEGMENT // block_size * block_size)
        pending = list(parts)
        for seg in range(start, stop, step):
            end = min(seg + step, stop)
            cls._verify_blocks(where, data, seg, end, offset, block_size, digests)
            while pending and pending[0][0] < end:
                a, b = pending[0]
                if b <= end:
                    pending.pop(0)
                    yield a, b
                else:
                    pending[0] = (end, b)
                    yield a, end

    async def _chain(self, record: BackupRecord, parents: Sequence[BackupRecord]) -> list[_Layer]:
        layers = [await self._layer(r) for r in (*parents, record)]
        for child, parent in zip(layers[1:], layers, strict=False):
            if child.record.parent_id != parent.record.id:
                raise BackupError(f"backup {child.record.id}: its parent is {child.record.parent_id},"
                                  f" not {parent.record.id}")
            if child.digests is None or parent.digests is None or \
                    (child.meta["chunk_size"], child.meta["block_size"]) != \
                    (parent.meta["chunk_size"], parent.meta["block_size"]):
                raise CorruptBackupError(f"backup {child.record.id} does not line up with its parent"
                                         f" {parent.record.id} (chunk or block size differs)")
        if layers[0].record.parent_id is not None:
            raise BackupError(f"backup {layers[0].record.id} is incremental: restore needs its parent")
        return layers

    @staticmethod
    def _plan(layers: list[_Layer]) -> tuple[list[tuple[_Layer, dict[str, Any], list[tuple[int, int]]]],
                                             list[tuple[int, int]]]:
        """Which object gives each block: the newest backup holding it. Returns, per object
        that gives any, the byte ranges (within the object) to write, and the volume's byte
        ranges that are zero blocks (checked against the newest block list)."""
        newest = layers[-1]
        size = int(newest.meta["volume_size"])
        block_size = int(newest.meta.get("block_size", size or 1))
        if len(layers) == 1:  # a full backup: every object, whole
            return ([(newest, entry, [(0, entry["length"])]) for entry in newest.objects],
                    [(a * block_size, min(n * block_size, size - a * block_size)) for a, n in newest.zeros])
        nblocks = math.ceil(size / block_size)
        owner = [-1] * nblocks
        zero = bytearray(nblocks)  # 1: the block's newest holder lists it as a zero block
        for n, layer in enumerate(layers):
            for entry in layer.objects:
                first = entry["offset"] // block_size
                last = min(nblocks, math.ceil((entry["offset"] + entry["length"]) / block_size))
                owner[first:last] = [n] * max(0, last - first)
                zero[first:last] = bytes(max(0, last - first))
            for first, count in layer.zeros:
                last = min(nblocks, first + count)
                owner[first:last] = [n] * max(0, last - first)
                zero[first:last] = b"\x01" * max(0, last - first)
        zeros: list[tuple[int, int]] = []
        k = zero.find(1)
        while k >= 0:
            end = zero.find(0, k)
            end = nblocks if end < 0 else end
            assert newest.digests is not None  # a chain's layers all have block lists
            if newest.digests[k * DIGEST_SIZE:end * DIGEST_SIZE] != _zero_run_digests(k, end - k, block_size, size):
                raise CorruptBackupError(f"backup {newest.record.id}: blocks {k} to {end - 1} are zero blocks of an"
                                         " older backup but not zero in its block list")
            zeros.append((k * block_size, min(end * block_size, size) - k * block_size))
            k = zero.find(1, end)
        if -1 in owner:
            block = owner.index(-1)
            raise CorruptBackupError(f"backup {newest.record.id}: no backup in its chain holds block {block}")
        plan = []
        for n, layer in enumerate(layers):
            for entry in layer.objects:
                first = entry["offset"] // block_size
                ranges: list[tuple[int, int]] = []
                for k in range(first, min(nblocks, math.ceil((entry["offset"] + entry["length"]) / block_size))):
                    if owner[k] != n:
                        continue
                    start = k * block_size - entry["offset"]
                    stop = min(start + block_size, size - entry["offset"], entry["length"])
                    if ranges and ranges[-1][1] == start:
                        ranges[-1] = (ranges[-1][0], stop)
                    else:
                        ranges.append((start, stop))
                if ranges:
                    plan.append((layer, entry, ranges))
        return plan, zeros

    async def restore(self, record: BackupRecord, target: str | os.PathLike[str], on_object: ObjectCallback,
                      *, overwrite: bool = False, parents: Sequence[BackupRecord] = (), create: bool = False) -> int:
        layers = await timed_async("metadata", self._chain)(record, parents)
        plan, zeros = self._plan(layers)
        newest = layers[-1]
        size = int(newest.meta["volume_size"])
        block_size = int(newest.meta.get("block_size", 1))
        out: RestoreTarget = await anyio.to_thread.run_sync(
            lambda: open_restore_target(target, overwrite=overwrite, operation=record.id, create=create, size=size))
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

            def place(layer: _Layer, entry: dict[str, Any], ranges: list[tuple[int, int]], stored: bytes) -> int:
                container = str(layer.record.container)
                data = self._unpack(container, entry, stored)
                done = 0
                for start, stop in ranges:
                    parts: Iterable[tuple[int, int]] = [(start, stop)]
                    if newest.digests is not None:
                        if fresh:  # zeros a version 2 backup stored need no writing
                            parts = _data_ranges(start, stop, entry["offset"], block_size, newest.digests, size)
                        # each segment checked right before it is written, while it is in the CPU's cache
                        parts = self._verified(f"object {container}/{entry['name']}", data, start, stop, parts,
                                               entry["offset"], block_size, newest.digests)
                    for a, b in parts:
                        out.write(memoryview(data)[a:b], entry["offset"] + a)
                    done += stop - start
                return done

            async def restore_one(items: MemoryObjectReceiveStream[
                    tuple[_Layer, dict[str, Any], list[tuple[int, int]]]]) -> None:
                nonlocal written
                async with items:
                    async for layer, entry, ranges in items:
                        container = str(layer.record.container)
                        try:
                            stored = await timed_async("fetch", self.store.get_object)(container, entry["name"])
                        except ObjectNotFoundError:
                            raise CorruptBackupError(
                                f"object {container}/{entry['name']} (object {entry['index']}) is missing from the"
                                " object store") from None
                        done = await anyio.to_thread.run_sync(timed("write", place), layer, entry, ranges, stored)
                        written += done
                        await on_object(done)

            send, receive = anyio.create_memory_object_stream[
                tuple[_Layer, dict[str, Any], list[tuple[int, int]]]](self.workers)
            try:
                async with anyio.create_task_group() as tg:
                    for _ in range(self.workers):
                        tg.start_soon(restore_one, receive.clone())
                    receive.close()
                    async with send:
                        for item in plan:
                            await send.send(item)
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


def _data_ranges(start: int, stop: int, offset: int, block_size: int, digests: bytes,
                 size: int) -> list[tuple[int, int]]:
    """The parts of ``start:stop`` (bytes of an object at volume ``offset``) that are not
    zero blocks in the block list."""
    zero = zero_digest(block_size)
    first, stop_block = (offset + start) // block_size, (offset + stop - 1) // block_size + 1
    # the usual case, at C speed over this object's part of the list (a short last block is checked below)
    if zero not in digests[first * DIGEST_SIZE:stop_block * DIGEST_SIZE]:
        last = (size - 1) // block_size
        if (offset + stop - 1) // block_size != last or size % block_size == 0:
            return [(start, stop)]
    parts: list[tuple[int, int]] = []
    for i in range(start, stop, block_size):
        k = (offset + i) // block_size
        end = min(i + block_size, stop)
        if digests[k * DIGEST_SIZE:(k + 1) * DIGEST_SIZE] in (zero, zero_digest(end - i)):
            continue
        if parts and parts[-1][1] == i:
            parts[-1] = (parts[-1][0], end)
        else:
            parts.append((i, end))
    return parts


def _merge_runs(runs: ZeroRuns) -> ZeroRuns:
    """Runs of blocks in order, touching runs joined."""
    merged: ZeroRuns = []
    for first, count in sorted(runs):
        if merged and merged[-1][0] + merged[-1][1] == first:
            merged[-1] = (merged[-1][0], merged[-1][1] + count)
        else:
            merged.append((first, count))
    return merged


def _zero_run_digests(first: int, count: int, block_size: int, size: int) -> bytes:
    """What the block list holds for a run of zero blocks (the volume's last block may be short)."""
    end = min(size, (first + count) * block_size)
    return zero_digests(end - first * block_size, block_size)


def _check_coverage(objects: list[dict[str, Any]], size: int, where: str, *, contiguous: bool,
                    block_size: int) -> None:
    """Objects in offset order, not overlapping, inside the volume, on block boundaries; a
    full backup's cover it exactly."""
    expected = 0
    for entry in objects:
        offset, length = entry["offset"], entry["length"]
        if length <= 0 or offset < expected or (contiguous and offset != expected) or offset % block_size:
            raise CorruptBackupError(f"{where}: object {entry['name']} is out of place")
        expected = offset + length
    if expected > size or (contiguous and expected != size):
        raise CorruptBackupError(f"{where}: objects cover {expected} bytes, the volume is {size}")
