"""The backup data path (issue 29): chunks read into and compressed into reused page-aligned
buffers, handed to the posix store as views and written with O_DIRECT; restores read objects
and write the target the same way. Each step falls back to the page cache where O_DIRECT is
refused, and a store that overrides put_object or get_object is handed or read as before."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
from pathlib import Path

import anyio
import pytest

from notifykit.backup import BackupStatus, CorruptBackupError, _posix, _target
from notifykit.backup._buffers import ALIGN, Buffer, BufferPool, is_aligned
from notifykit.backup._compression import get_compressor
from notifykit.backup._posix import PosixObjectStore
from notifykit.backup._target import open_restore_target

from .helpers import backup_env

BLOCK = 32 * 1024
TEXT = (b"a compressible line of text for the data path tests. " * 4000)


def refuse_o_direct(monkeypatch: pytest.MonkeyPatch, module: object) -> list[int]:
    """Make ``fcntl`` in ``module`` fail with EINVAL when asked for O_DIRECT, as a filesystem
    without it does; returns the list of refusals."""
    refused: list[int] = []
    real = fcntl.fcntl

    def fake(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(fd, cmd, arg)

    monkeypatch.setattr(module, "fcntl", type("F", (), {"fcntl": staticmethod(fake), "F_GETFL": fcntl.F_GETFL,
                                                        "F_SETFL": fcntl.F_SETFL}))
    return refused


@pytest.mark.asyncio
async def test_a_pool_hands_out_aligned_buffers_reuses_them_and_waits_when_all_are_out() -> None:
    pool = BufferPool(3 * ALIGN, 2)
    first, second = await pool.acquire(), await pool.acquire()
    assert is_aligned(first.view) and is_aligned(second.view) and len(first.view) == 3 * ALIGN
    assert not is_aligned(memoryview(b"x" * 3 * ALIGN))  # bytes: read-only, never taken as aligned
    got: list[Buffer] = []

    async def third() -> None:
        got.append(await pool.acquire())

    async with anyio.create_task_group() as tg:
        tg.start_soon(third)
        await anyio.wait_all_tasks_blocked()
        assert got == []  # both are out: it waits
        pool.release(first)
    assert got == [first]  # the one given back, not a new one


@pytest.mark.parametrize("name", ["zstd", "zlib"])
def test_compress_into_round_trips_and_says_when_the_result_does_not_fit(name: str) -> None:
    codec = get_compressor(name)
    room = Buffer(len(TEXT))
    n = codec.compress_into(TEXT, room.view)
    assert n is not None and 0 < n < len(TEXT)
    out = Buffer(len(TEXT))
    assert codec.decompress_into(room.view[:n], out.view[:len(TEXT)]) == len(TEXT)
    assert bytes(out.view[:len(TEXT)]) == TEXT
    noise = random.Random(1).randbytes(64 * 1024)
    assert codec.compress_into(noise, Buffer(len(noise)).view[:len(noise)]) is None  # no smaller: stored raw
    with pytest.raises(CorruptBackupError):
        codec.decompress_into(b"\x28\xb5\x2f\xfd" + b"\xff" * 40 if name == "zstd" else b"\x78\x9c\xff" * 10,
                              out.view[:len(TEXT)])
    # a stream cut short gives fewer bytes, which the restore reports as a wrong length
    short = room.view[:n // 2]
    try:
        assert codec.decompress_into(short, out.view[:len(TEXT)]) < len(TEXT)
    except CorruptBackupError:
        pass


def test_an_aligned_buffer_goes_to_the_disk_directly_and_bytes_through_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_flags: list[int] = []
    real = fcntl.fcntl

    def spy(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL:
            set_flags.append(arg)
        return real(fd, cmd, arg)

    monkeypatch.setattr(_posix, "fcntl", type("F", (), {"fcntl": staticmethod(spy), "F_GETFL": fcntl.F_GETFL,
                                                        "F_SETFL": fcntl.F_SETFL}))
    store = PosixObjectStore(tmp_path, fsync=True)
    store._create_container("c")
    data = random.Random(2).randbytes(5 * ALIGN + 123)  # whole pages and a partial one
    buffer = Buffer(len(data))
    buffer.view[:len(data)] = data
    store._put("c", "aligned", buffer.view[:len(data)])
    assert any(flags & os.O_DIRECT for flags in set_flags)
    set_flags.clear()
    store._put("c", "plain", data)
    assert not any(flags & os.O_DIRECT for flags in set_flags)
    store._sync_container("c")
    assert (tmp_path / "c" / "aligned").read_bytes() == data == (tmp_path / "c" / "plain").read_bytes()
    out = Buffer(len(data) + ALIGN)
    assert store._get_into("c", "aligned", out.view) == len(data) and bytes(out.view[:len(data)]) == data
    small = Buffer(ALIGN)
    assert store._get_into("c", "aligned", small.view) == len(data)  # too big for it: the size, nothing read
    assert bytes(small.view) == bytes(ALIGN)


def test_a_filesystem_refusing_o_direct_is_written_and_read_through_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = refuse_o_direct(monkeypatch, _posix)
    store = PosixObjectStore(tmp_path, fsync=True)
    store._create_container("c")
    data = random.Random(3).randbytes(3 * ALIGN + 7)
    buffer = Buffer(len(data))
    buffer.view[:len(data)] = data
    store._put("c", "one", buffer.view[:len(data)])
    store._put("c", "two", buffer.view[:len(data)])
    assert len(refused) == 1  # refused once: not tried again
    out = Buffer(len(data))
    assert store._get_into("c", "one", out.view) == len(data) and bytes(out.view) == data
    assert (tmp_path / "c" / "two").read_bytes() == data


def dense_then_sparse(volume: Path, chunk: int, count: int) -> tuple[Path, int]:
    """``count`` chunks of data (each half random), then ``count`` chunks that are holes but
    for 4 KiB in their second block, and a short tail; returns the file and the dense size."""
    rng = random.Random(4)
    dense = b"".join(rng.randbytes(BLOCK) + TEXT[:BLOCK] for _ in range(count))
    with open(volume, "wb") as fh:
        fh.write(dense)
        fh.truncate(len(dense) + count * chunk + 1000)
        for i in range(count):
            fh.seek(len(dense) + i * chunk + BLOCK + 8192)
            fh.write(rng.randbytes(4096))
    return volume, len(dense)


@pytest.mark.asyncio
@pytest.mark.parametrize("compression", ["none", "zstd"])
async def test_reused_read_buffers_hold_zeros_where_a_later_chunk_has_holes(tmp_path: Path,
                                                                             compression: str) -> None:
    """The first chunks fill every buffer of the pool with data; the partly sparse chunks after
    them are read into those buffers, whose stale bytes must not show through the holes."""
    chunk = 2 * BLOCK
    volume, dense_size = dense_then_sparse(tmp_path / "v.img", chunk, 24)
    async with backup_env(tmp_path, compression=compression, chunk_size=chunk,
                          store=PosixObjectStore(tmp_path / "store", fsync=True)) as env:
        record = await env.service.create_backup(volume)
        restored = await env.service.restore_backup(record.id, tmp_path / "out.img")
        assert record.container is not None
        meta = json.loads((tmp_path / "store" / record.container / f"{record.service_metadata}_metadata").read_bytes())
    assert record.status is BackupStatus.AVAILABLE and restored.status is BackupStatus.AVAILABLE
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()
    first_sparse = dense_size // BLOCK
    assert [first_sparse, 1] in meta["zero_blocks"]  # the first block of each sparse chunk: a zero block


@pytest.mark.asyncio
async def test_a_store_overriding_put_and_get_is_handed_bytes_and_read_with_get_object(tmp_path: Path) -> None:
    """A subclass may keep what it is handed: it gets bytes of its own, never a view of a
    buffer the backup reuses; and one that reads otherwise is read with its get_object."""

    class KeepingStore(PosixObjectStore):
        def __init__(self, root: Path) -> None:
            super().__init__(root, fsync=True)
            self.kept: dict[str, bytes] = {}
            self.read: list[str] = []

        async def put_object(self, container: str, name: str, data: bytes) -> None:
            assert isinstance(data, bytes)
            self.kept[name] = data
            await super().put_object(container, name, data)

        async def get_object(self, container: str, name: str) -> bytes:
            self.read.append(name)
            return await super().get_object(container, name)

    store = KeepingStore(tmp_path / "store")
    async with backup_env(tmp_path, compression="zstd", chunk_size=2 * BLOCK, store=store) as env:
        volume = env.volume(20 * 2 * BLOCK + 5)
        record = await env.service.create_backup(volume)
        await env.service.restore_backup(record.id, tmp_path / "out.img")
    assert record.container is not None
    for name, data in store.kept.items():
        assert (tmp_path / "store" / record.container / name).read_bytes() == data
    assert len([n for n in store.read if not n.endswith(("_metadata", "_sha256file"))]) == record.object_count
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()


@pytest.mark.parametrize("direct", [True, False])
def test_a_restore_target_writes_aligned_buffers_directly_and_the_rest_through_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool) -> None:
    if not direct:  # no second descriptor with O_DIRECT (no /proc, or the filesystem refuses it)
        monkeypatch.setattr(_target, "_reopen_direct", lambda fd: -1)
    data = random.Random(5).randbytes(6 * ALIGN + 99)
    buffer = Buffer(len(data))
    buffer.view[:len(data)] = data
    out = open_restore_target(tmp_path / "t.img", overwrite=False, operation="b1")
    assert out.direct is direct
    out.prepare(len(data))
    out.write(buffer.view[:2 * ALIGN], 0)  # aligned
    out.write(data[2 * ALIGN:3 * ALIGN], 2 * ALIGN)  # bytes: through the cache
    out.write(buffer.view[3 * ALIGN:len(data)], 3 * ALIGN)  # aligned, with a partial last page
    out.finish(len(data))
    assert (tmp_path / "t.img").read_bytes() == data


def test_a_restore_target_whose_direct_writes_are_refused_goes_on_through_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = random.Random(6).randbytes(4 * ALIGN)
    buffer = Buffer(len(data))
    buffer.view[:len(data)] = data
    out = open_restore_target(tmp_path / "t.img", overwrite=False, operation="b2")
    real = os.pwrite

    def refusing(fd: int, view: memoryview, offset: int) -> int:
        if fd == out._direct_fd:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(fd, view, offset)

    monkeypatch.setattr(os, "pwrite", refusing)
    out.prepare(len(data))
    out.write(buffer.view[:2 * ALIGN], 0)
    assert not out.direct  # refused once: not tried again
    out.write(buffer.view[2 * ALIGN:], 2 * ALIGN)
    out.finish(len(data))
    assert (tmp_path / "t.img").read_bytes() == data
