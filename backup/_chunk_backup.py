"""Backing a volume up as chunk objects: the pipeline of a chunked backup.

    reader ──(bounded stream)──► N pack workers ──(bounded stream)──► M writers

Reads, hashing/compression and object writes run in worker threads (zlib, zstd and
hashlib release the GIL), so several cores work at once while the event loop only moves
chunk references. The streams are bounded, so memory stays at a few chunks per worker;
for a store that ``accepts_buffers`` those chunks are reused page-aligned buffers
(``_buffers``): each chunk is read into one, compressed into another, and handed to the
store as views of them (``_chunk_pack``).

The round trips a backup makes besides its chunks overlap with them rather than wait in
line: the container is created while the first chunks are read and packed (the writers
wait for it), and the block list is stored as soon as the last chunk is packed, while the
last chunks are still being written. Only the metadata object waits for everything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO, cast

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._buffers import ALIGN, BufferPool
from ._chunk_layers import merge_runs
from ._chunk_pack import Packed, Packer, Raw
from ._objectstore import ObjectStore, put_object
from ._sparse import ZeroRuns, data_chunk, is_sparse_capable
from ._tracing import timed, timed_async

__all__ = ["backup_objects"]


async def backup_objects(store: ObjectStore, packer: Packer, fh: BinaryIO | None, size: int, where: str,
                         container: str, prefix: str, list_name: str, on_object: Callable[[int], Awaitable[None]],
                         chunk_size: int, block_size: int, parent: bytes | None, *, workers: int, uploads: int,
                         source: Any = None) -> tuple[list[dict[str, Any]], bytes, ZeroRuns]:
    """Create ``container``, store every chunk of the volume (``fh``, or an RBD ``source``)
    as objects named from ``prefix``, and the block list as ``list_name``.

    Returns the metadata's object entries (in volume order), the block list, and the runs
    of zero blocks. Raises the first real error of any stage (the others are cancelled).
    """
    entries: list[dict[str, Any]] = []
    digests: dict[int, bytes] = {}
    zeros: ZeroRuns = []
    count = -(-size // chunk_size)
    fd = fh.fileno() if fh is not None else -1
    sparse = fh is not None and await anyio.to_thread.run_sync(is_sparse_capable, fd)
    # Reused buffers, as many as chunks can be in flight: read into (a file volume), and
    # compressed into; each goes back once the chunk is packed or its objects stored.
    inputs = BufferPool(chunk_size, 3 * workers + uploads + 2) if packer.buffers and source is None else None
    outputs = BufferPool(chunk_size + ALIGN, 2 * workers + uploads + 1) \
        if packer.buffers and packer.compressor.name != "none" else None
    container_made = anyio.Event()

    async def make_container() -> None:
        await store.create_container(container)
        container_made.set()

    async def read(out: MemoryObjectSendStream[Raw]) -> None:
        """Each chunk, in order; one holding no data (a hole) goes on unread."""
        async with out:
            index = 0
            while index < count:
                lease = (inputs, await inputs.acquire()) if inputs is not None else None
                at, data = await anyio.to_thread.run_sync(
                    timed("read", data_chunk), fd, index * chunk_size, chunk_size, size, where, sparse,
                    lease[1].view if lease is not None else None)
                for hole in range(index, count if data is None else at // chunk_size):
                    offset = hole * chunk_size
                    await out.send(Raw(hole, offset, min(chunk_size, size - offset), None))
                if data is None:
                    if lease is not None:
                        lease[0].release(lease[1])
                    break
                index = at // chunk_size
                await out.send(Raw(index, at, len(data), data, buffer=lease))
                index += 1

    async def pack(inp: MemoryObjectReceiveStream[Raw], out: MemoryObjectSendStream[Packed]) -> None:
        async with inp, out:
            async for raw in inp:
                if raw.data is None:  # digests are constants: no thread needed
                    packed = packer.pack(raw, prefix, block_size, parent)
                else:
                    room = (outputs, await outputs.acquire()) if outputs is not None else None
                    packed = await anyio.to_thread.run_sync(timed("pack", packer.pack), raw, prefix, block_size,
                                                            parent, room)
                    for lease in (raw.buffer, room):  # not viewed by any object: free for the next chunk
                        if lease is not None and lease not in packed.buffers:
                            lease[0].release(lease[1])
                digests[packed.index] = packed.digests
                await out.send(packed)

    async def pack_all(inp: MemoryObjectReceiveStream[Raw], out: MemoryObjectSendStream[Packed]) -> None:
        """The pack workers; once the last chunk is packed, the block list is whole: store it."""
        async with anyio.create_task_group() as packers:
            for _ in range(workers):
                packers.start_soon(pack, inp.clone(), out.clone())
            inp.close()
            out.close()
        await container_made.wait()
        await timed_async("metadata", store.put_object)(container, list_name, block_list())

    async def write(inp: MemoryObjectReceiveStream[Packed]) -> None:
        async with inp:
            async for packed in inp:
                await container_made.wait()
                for piece in packed.pieces:
                    # a memoryview only for a store that accepts_buffers (it keeps no reference)
                    await timed_async("store", put_object)(store, container, piece.name,
                                                           cast(bytes, piece.stored), piece.digests)
                    entries.append({"name": piece.name, "offset": piece.offset, "length": piece.length,
                                    "stored_length": len(piece.stored), "compression": piece.compression})
                for pool, buffer in packed.buffers:
                    pool.release(buffer)
                zeros.extend(packed.zeros)
                await on_object(packed.length)

    def block_list() -> bytes:
        return b"".join(digests[i] for i in range(count))

    raw_send, raw_recv = anyio.create_memory_object_stream[Raw](workers)
    packed_send, packed_recv = anyio.create_memory_object_stream[Packed](workers)
    async with anyio.create_task_group() as tg:
        tg.start_soon(make_container)
        tg.start_soon(read if source is None else source.reader(chunk_size, block_size, Raw), raw_send)
        tg.start_soon(pack_all, raw_recv, packed_send)
        for _ in range(uploads):
            tg.start_soon(write, packed_recv.clone())
        packed_recv.close()
    entries.sort(key=lambda e: int(e["offset"]))
    return entries, block_list(), merge_runs(zeros)
