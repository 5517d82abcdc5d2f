"""ChunkedBackupDriver(uploads=N): exactly N chunk writes in flight, never more; the
backup's other round trips (its container, its block list) overlap with the chunks."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from notifykit.backup import BackupConfigError
from notifykit.backup._chunked import ChunkedBackupDriver
from notifykit.backup._posix import PosixObjectStore

from .helpers import CHUNK, backup_env


class ConcurrencyProbe(PosixObjectStore):
    """Holds every chunk write until ``expected`` are in flight at once, and records the peak
    (the metadata and the block list are not chunks: they pass)."""

    def __init__(self, root: Path, expected: int) -> None:
        super().__init__(root, fsync=False)
        self.expected = expected
        self.in_flight = 0
        self.peak = 0
        self.all_in = anyio.Event()

    async def put_object(self, container: str, name: str, data: bytes) -> None:
        if name.endswith(("_metadata", "_sha256file")):
            return await super().put_object(container, name, data)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight == self.expected:
            self.all_in.set()
        await self.all_in.wait()
        await super().put_object(container, name, data)
        self.in_flight -= 1


@pytest.mark.asyncio
@pytest.mark.parametrize("uploads", [1, 3, 6])
async def test_uploads_in_flight_reach_the_bound_and_never_exceed_it(tmp_path: Path, uploads: int) -> None:
    probe = ConcurrencyProbe(tmp_path / "store", uploads)
    async with backup_env(tmp_path, store=probe, uploads=uploads) as env:
        with anyio.fail_after(10):
            record = await env.service.create_backup(env.volume(12 * CHUNK))
    assert record.object_count == 12
    assert probe.peak == uploads


def test_uploads_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(BackupConfigError, match="uploads must be 1 to 64"):
        ChunkedBackupDriver(PosixObjectStore(tmp_path), uploads=0)


class ListFirst(PosixObjectStore):
    """Holds the last chunk's write until the block list has been written."""

    def __init__(self, root: Path, last: str) -> None:
        super().__init__(root, fsync=False)
        self.last = last
        self.listed = anyio.Event()

    async def put_object(self, container: str, name: str, data: bytes) -> None:
        if name.endswith(self.last):
            await self.listed.wait()
        await super().put_object(container, name, data)
        if name.endswith("_sha256file"):
            self.listed.set()


@pytest.mark.asyncio
async def test_the_block_list_is_stored_while_the_last_chunk_is_still_being_written(tmp_path: Path) -> None:
    store = ListFirst(tmp_path / "store", last="-00011")
    async with backup_env(tmp_path, store=store) as env:
        with anyio.fail_after(10):  # the old pipeline wrote the list after every chunk: it hung here
            record = await env.service.create_backup(volume := env.volume(12 * CHUNK))
        assert record.object_count == 12
        await env.service.restore_backup(record.id, tmp_path / "out.img")
        assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()


class SlowContainer(PosixObjectStore):
    """Creates the container only once the volume's first chunk has been read."""

    def __init__(self, root: Path, read: threading.Event) -> None:
        super().__init__(root, fsync=False)
        self.read = read

    async def create_container(self, container: str) -> None:
        assert await anyio.to_thread.run_sync(self.read.wait, 10), "no chunk read while the container was made"
        await super().create_container(container)


@pytest.mark.asyncio
async def test_chunks_are_read_while_the_container_is_created(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from notifykit.backup import _chunk_backup  # the backup pipeline's module (it reads the chunks)

    read = threading.Event()
    data_chunk = _chunk_backup.data_chunk

    def reading(*args: Any) -> Any:
        read.set()
        return data_chunk(*args)

    monkeypatch.setattr(_chunk_backup, "data_chunk", reading)
    async with backup_env(tmp_path, store=SlowContainer(tmp_path / "store", read)) as env:
        with anyio.fail_after(15):
            record = await env.service.create_backup(volume := env.volume(3 * CHUNK))
        assert record.object_count == 3
        await env.service.restore_backup(record.id, tmp_path / "out.img")
        assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()
