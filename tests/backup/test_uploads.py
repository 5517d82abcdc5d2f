"""ChunkedBackupDriver(uploads=N): exactly N object writes in flight, never more."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from notifykit.backup import BackupConfigError
from notifykit.backup._chunked import ChunkedBackupDriver
from notifykit.backup._posix import PosixObjectStore

from .helpers import CHUNK, backup_env


class ConcurrencyProbe(PosixObjectStore):
    """Holds every write until ``expected`` are in flight at once, and records the peak."""

    def __init__(self, root: Path, expected: int) -> None:
        super().__init__(root, fsync=False)
        self.expected = expected
        self.in_flight = 0
        self.peak = 0
        self.all_in = anyio.Event()

    async def put_object(self, container: str, name: str, data: bytes) -> None:
        if name.endswith("_metadata"):
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
