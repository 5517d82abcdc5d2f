"""What the backup benchmarks share: notifications switched off, the half-random test volume,
one timed backup, and the scripts/ servers (loaded as the tests load them)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from notifykit import ContextLike, Notification, Priority
from notifykit.backup import BackupService
from notifykit.backup._chunked import ChunkedBackupDriver
from notifykit.backup._sqlite import SQLiteCatalog
from notifykit.backup.plugin import ObjectStore
from tests._servers import load_script

__all__ = ["MIB", "CpuWindow", "NoopNotifier", "backup_once", "load_script", "write_volume"]

MIB = 1024 * 1024
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int | None) -> float:
    """utime + stime of another process (a server), 0 if it is not known."""
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


class CpuWindow:
    """CPU seconds of this process ("client") and of the servers in ``pids`` from ``start()``
    to ``mark()`` — the end of a contender's timed part, so clean-up after the timing (a
    backup's deletion, the anchor's object deletes) is left out for every contender alike."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, float] = {}
        self._end: dict[str, float] | None = None

    def _now(self) -> dict[str, float]:
        return {"client": time.process_time(), **{k: process_cpu(p) for k, p in self.pids.items()}}

    def start(self) -> None:
        self._start, self._end = self._now(), None

    async def settle(self, interval: float = 0.2, quiet: float = 0.02, limit: float = 10.0) -> float:
        """Wait until the servers are idle (less than ``quiet`` CPU seconds in an ``interval``,
        at most ``limit`` seconds): work a server defers after the previous contender (an
        OSD catching up on deletions) then lands in nobody's timing. The seconds waited."""
        waited, before = 0.0, self._now()
        while waited < limit:
            await anyio.sleep(interval)
            waited += interval
            now = self._now()
            if sum(now[k] - before[k] for k in self.pids) < quiet:
                break
            before = now
        return waited

    def mark(self) -> None:
        if self._end is None:
            self._end = self._now()

    def used(self) -> dict[str, float]:
        self.mark()
        assert self._end is not None
        return {k: self._end[k] - self._start[k] for k in self._start}


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
                      chunk_size: int, mark: Callable[[], None] | None = None) -> float:
    """Seconds of ``create_backup`` alone (the catalog is opened and the backup deleted untimed);
    ``mark`` is called when the timing stops (CpuWindow.mark)."""
    driver = ChunkedBackupDriver(store, chunk_size=chunk_size, compression=compression, uploads=uploads)
    async with SQLiteCatalog(root / "catalog.sqlite3") as catalog:
        service = BackupService(catalog, driver, NoopNotifier(), host="bench")
        start = time.perf_counter()
        record = await service.create_backup(volume)
        elapsed = time.perf_counter() - start
        if mark is not None:
            mark()
        assert record.status == "available", record
        await service.delete_backup(record.id)
    return elapsed
