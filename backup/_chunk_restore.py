"""Restoring a chain of chunked backups into a target, and the checks verify shares.

Objects are fetched ahead by ``readers`` tasks (the store's concurrency) while ``workers``
threads decompress, check and write the ones already fetched, each at its own offsets
(positioned writes, no shared file offset). Every block written is checked against the
newest backup's block list first; the zero blocks are left as holes in a file the restore
creates, and punched or written on a target written in place (``_sparse``).

A compressed object is decompressed into a reused page-aligned buffer (``_buffers``), so a
target that takes direct writes (``RestoreTarget.direct``) gets the bytes from that buffer
to the disk with no copy through the page cache, and its final sync has little left to do.
A store with ``get_object_into`` (posix) reads each object into such a buffer too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._block_hash import DIGEST_SIZE, BlockHash
from ._buffers import ALIGN, Buffer, BufferPool, declared_with, is_aligned
from ._chunk_layers import Layer, PlanItem, data_ranges
from ._compression import Compressor, get_compressor
from ._errors import CorruptBackupError, ObjectNotFoundError
from ._objectstore import ObjectStore
from ._target import RestoreTarget
from ._tracing import timed, timed_async

__all__ = ["SEGMENT", "restore_objects", "unpack", "verified", "verify_blocks"]

#: An object fetched: what the plan says of it, its stored bytes, the pooled buffer they are in.
Fetched = tuple[PlanItem, bytes | memoryview, Buffer | None]

# Restore checks and writes an object this many bytes at a time (whole blocks), so each
# piece is still in the CPU's cache when it is copied into the target.
SEGMENT = 256 * 1024


def _codec(compressor: Compressor, name: str) -> Compressor:
    return compressor if name == compressor.name else get_compressor(name)


def _check_stored(where: str, entry: dict[str, Any], size: int) -> None:
    if size != entry["stored_length"]:
        raise CorruptBackupError(f"{where} is {size} bytes, metadata says {entry['stored_length']}")


def unpack(compressor: Compressor, container: str, entry: dict[str, Any], stored: bytes | memoryview,
           into: Buffer | None = None) -> bytes | memoryview:
    """One object's raw bytes, its sizes checked (worker thread): decompressed into ``into``
    when given (a view of it is returned), else into a new object."""
    where = f"object {container}/{entry['name']}"
    _check_stored(where, entry, len(stored))
    compression = entry["compression"]
    data: bytes | memoryview
    if compression == "none":
        data = stored
        if into is not None and len(stored) <= into.size:  # into an aligned buffer (direct writes)
            into.view[:len(stored)] = stored
            data = into.view[:len(stored)]
    else:
        codec = _codec(compressor, compression)
        try:
            if into is not None and entry["length"] <= into.size:
                data = into.view[:codec.decompress_into(stored, into.view[:entry["length"]])]
            else:
                data = codec.decompress(stored if isinstance(stored, bytes) else bytes(stored), entry["length"])
        except CorruptBackupError as exc:
            raise CorruptBackupError(f"{where} is corrupt: {exc}") from None
    if len(data) != entry["length"]:
        raise CorruptBackupError(f"{where} holds {len(data)} bytes, metadata says {entry['length']}")
    if "sha256" in entry and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CorruptBackupError(f"{where} is corrupt: sha256 does not match the metadata")
    return data


def verify_blocks(where: str, data: bytes | memoryview, start: int, stop: int, offset: int, block_size: int,
                  digests: bytes, block_hash: BlockHash) -> None:
    """Check bytes ``start:stop`` of an object at volume ``offset`` block by block against
    the newest backup's block list (worker thread): hashed in one pass, compared at C speed."""
    first = (offset + start) // block_size
    got = block_hash.digests(memoryview(data)[start:stop], block_size)
    want = digests[first * DIGEST_SIZE:first * DIGEST_SIZE + len(got)]
    if got == want:
        return
    bad = next(n for n in range(len(got) // DIGEST_SIZE)
               if got[n * DIGEST_SIZE:(n + 1) * DIGEST_SIZE] != want[n * DIGEST_SIZE:(n + 1) * DIGEST_SIZE])
    raise CorruptBackupError(f"{where} is corrupt: block {first + bad} (volume offset"
                             f" {offset + start + bad * block_size}) does not match the block list")


def verified(where: str, data: bytes | memoryview, start: int, stop: int, parts: Iterable[tuple[int, int]],
             offset: int, block_size: int, digests: bytes, block_hash: BlockHash,
             step: int = SEGMENT) -> Iterator[tuple[int, int]]:
    """``parts`` (sorted ranges within ``start:stop``) to write, each segment of ``start:stop``
    (``step`` bytes, whole blocks) checked against the block list just before its parts are
    yielded: hashing a segment and writing it while it is in the CPU's cache, rather than
    hashing the whole object and then copying it cold, halved a restore's CPU (issue 29)."""
    step = max(block_size, step // block_size * block_size)
    pending = list(parts)
    for seg in range(start, stop, step):
        end = min(seg + step, stop)
        verify_blocks(where, data, seg, end, offset, block_size, digests, block_hash)
        while pending and pending[0][0] < end:
            a, b = pending[0]
            if b <= end:
                pending.pop(0)
                yield a, b
            else:
                pending[0] = (end, b)
                yield a, end


async def restore_objects(store: ObjectStore, compressor: Compressor, plan: list[PlanItem], newest: Layer,
                          out: RestoreTarget, on_object: Callable[[int], Awaitable[None]], *, workers: int,
                          readers: int, fresh: bool) -> int:
    """Fetch, check and write every object of ``plan`` into ``out``; the bytes written.
    ``fresh``: ``out`` is a file this restore created, all holes (zero blocks need no write)."""
    size = int(newest.meta["volume_size"])
    block_size = int(newest.meta.get("block_size", 1))
    direct = out.direct
    # Decompressed objects (and raw ones, for direct writes) go to reused aligned buffers,
    # and so do the objects read, from a store that reads into them.
    largest = max((int(entry["length"]) for _, entry, _ in plan), default=0)
    pool = BufferPool(largest, workers)
    reads_into = getattr(store, "get_object_into", None) if declared_with(store, "get_object_into", "get_object") \
        else None
    stored_pool = BufferPool(max((int(e["stored_length"]) for _, e, _ in plan), default=0) + ALIGN,
                             readers + 2 * workers + 1) if reads_into is not None else None
    written = 0

    def place(layer: Layer, entry: dict[str, Any], ranges: list[tuple[int, int]], stored: bytes | memoryview,
              into: Buffer | None) -> int:
        container = str(layer.record.container)
        where = f"object {container}/{entry['name']}"
        data = unpack(compressor, container, entry, stored, into)
        raw = memoryview(data)
        done = 0
        for start, stop in ranges:
            parts: Iterable[tuple[int, int]] = [(start, stop)]
            if newest.digests is not None:
                if fresh:  # zeros a version 2 backup stored need no writing
                    parts = data_ranges(start, stop, entry["offset"], block_size, newest.digests, size,
                                        newest.block_hash)
                if direct and is_aligned(raw):  # no copy to keep in cache: check it all, write each part whole
                    verify_blocks(where, data, start, stop, entry["offset"], block_size, newest.digests,
                                  newest.block_hash)
                else:  # each segment checked right before it is written, while it is in the CPU's cache
                    parts = verified(where, data, start, stop, parts, entry["offset"], block_size, newest.digests,
                                     newest.block_hash)
            for a, b in parts:
                out.write(raw[a:b], entry["offset"] + a)
            done += stop - start
        return done

    async def get(container: str, entry: dict[str, Any]) -> tuple[bytes | memoryview, Buffer | None]:
        """The object's stored bytes, and the pooled buffer they are in (None: a new object)."""
        if reads_into is None or stored_pool is None:
            return await timed_async("fetch", store.get_object)(container, entry["name"]), None
        buffer = await stored_pool.acquire()
        try:
            n = await timed_async("fetch", reads_into)(container, entry["name"], buffer.view)
            _check_stored(f"object {container}/{entry['name']}", entry, n)
        except BaseException:
            stored_pool.release(buffer)
            raise
        return buffer.view[:n], buffer

    async def fetch(items: MemoryObjectReceiveStream[PlanItem], fetched: MemoryObjectSendStream[Fetched]) -> None:
        async with items, fetched:
            async for item in items:
                layer, entry, _ = item
                container = str(layer.record.container)
                try:
                    stored, buffer = await get(container, entry)
                except ObjectNotFoundError:
                    raise CorruptBackupError(
                        f"object {container}/{entry['name']} (object {entry['index']}) is missing from the"
                        " object store") from None
                await fetched.send((item, stored, buffer))

    async def restore_one(fetched: MemoryObjectReceiveStream[Fetched]) -> None:
        nonlocal written
        async with fetched:
            async for (layer, entry, ranges), stored, buffer in fetched:
                aligned = buffer is not None
                into = await pool.acquire() if entry["compression"] != "none" or (direct and not aligned) else None
                try:
                    done = await anyio.to_thread.run_sync(timed("write", place), layer, entry, ranges, stored, into)
                finally:
                    if into is not None:
                        pool.release(into)
                    if buffer is not None and stored_pool is not None:
                        stored_pool.release(buffer)
                written += done
                await on_object(done)

    send, receive = anyio.create_memory_object_stream[PlanItem](readers)
    fetched_send, fetched_receive = anyio.create_memory_object_stream[Fetched](workers)
    async with anyio.create_task_group() as tg:
        for _ in range(readers):
            tg.start_soon(fetch, receive.clone(), fetched_send.clone())
        for _ in range(workers):
            tg.start_soon(restore_one, fetched_receive.clone())
        receive.close()
        fetched_send.close()
        fetched_receive.close()
        async with send:
            for item in plan:
                await send.send(item)
    return written
