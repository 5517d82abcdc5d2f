"""What the backup benchmarks share: notifications switched off, the half-random test volume,
one timed backup, and the scripts/ servers (loaded as the tests load them)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from notifykit import ContextLike, Notification, Priority
from notifykit.backup import BackupService
from notifykit.backup._chunked import ChunkedBackupDriver
from notifykit.backup._sqlite import SQLiteCatalog
from notifykit.backup.plugin import ObjectStore
from tests._servers import load_script

__all__ = ["MIB", "NoopNotifier", "backup_once", "load_script", "write_volume"]

MIB = 1024 * 1024


class NoopNotifier:
    """Notifications off: satisfies SupportsNotify and does nothing but count the calls."""

    def __init__(self) -> None:
        self._prebuilt = Notification.create("noop", {}, publisher_id="bench")
        self.calls = 0

    async def notify(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any], *,
                     priority: Priority | str = Priority.INFO) -> Notification:
        self.calls += 1
        return self._prebuilt


def write_volume(path: Path, size: int) -> None:
    """``size`` bytes, alternating 1 MiB of compressible text and 1 MiB of random bytes."""
    block = (b"compressible text block for the backup benchmark. " * 21_000)[:MIB]
    with open(path, "wb") as fh:
        for i in range(size // MIB):
            fh.write(os.urandom(MIB) if i % 2 else block)


async def backup_once(root: Path, volume: Path, store: ObjectStore, compression: str, uploads: int,
                      chunk_size: int) -> float:
    """Seconds of ``create_backup`` alone (the catalog is opened and the backup deleted untimed)."""
    driver = ChunkedBackupDriver(store, chunk_size=chunk_size, compression=compression, uploads=uploads)
    async with SQLiteCatalog(root / "catalog.sqlite3") as catalog:
        service = BackupService(catalog, driver, NoopNotifier(), host="bench")
        start = time.perf_counter()
        record = await service.create_backup(volume)
        elapsed = time.perf_counter() - start
        assert record.status == "available", record
        await service.delete_backup(record.id)
    return elapsed
