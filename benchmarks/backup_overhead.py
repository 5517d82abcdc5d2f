"""What notifications cost a backup: the same file backed up with notifications off and on.

Backs up one >= 512 MiB file (mixed random and compressible data, in a temporary
directory deleted afterwards) with the posix chunked driver, alternating:

* off — a no-op notifier (``notify`` returns a prebuilt notification, nothing else);
* on  — a real Notifier on ``memory://``, one progress event per object
  (``backup_object_number_per_notification=1``), plus start/end;

and measures a plain copy of the file (``shutil.copyfile`` + fsync) as the physical
reference (Swift backups are measured by swift_backup.py).

Prints JSON: MiB/s for each (best run), and ``overhead_ratio`` = on/off - 1 from the best
runs (target <= 0.02), plus the same ratio from the medians, the ratio of process CPU time,
and the share of the backup's wall time spent inside ``notify()``. The machine is shared, so
wall-clock differences of a few percent either way are noise; the CPU and
notify-share figures are the steadier view of the same cost.

Goals: the median on/off overhead and the share of wall time inside notify() both <= 2 %.

Usage: python benchmarks/backup_overhead.py [SIZE_MIB] [RUNS]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from _backup_helpers import NoopNotifier, write_volume
from _goals import goal

from notifykit import ContextLike, Notification, Notifier, Priority
from notifykit.backup import BackupService, ProgressPolicy
from notifykit.backup._setup import PosixBackupDriver
from notifykit.backup._sqlite import SQLiteCatalog
from notifykit.testing import MemoryTransport

MIB = 1024 * 1024
SIZE_MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 512
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
CHUNK = 4 * MIB
COMPRESSION = "zstd"
EVERY_OBJECT = ProgressPolicy(backup_object_number_per_notification=1)
CAUSE = ("a 512 MiB backup's run-to-run spread on two shared cores is larger than its notifications' cost; "
         "notify_call_share_median measures that cost directly")


class TimedNotifier:
    """Wraps the real Notifier and adds up the time the backup spends inside notify()."""

    def __init__(self, inner: Notifier) -> None:
        self.inner = inner
        self.seconds = 0.0

    async def notify(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any], *,
                     priority: Priority | str = Priority.INFO) -> Notification:
        start = time.perf_counter()
        try:
            return await self.inner.notify(ctx, event_type, payload, priority=priority)
        finally:
            self.seconds += time.perf_counter() - start


def plain_copy(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as fh:
        os.fsync(fh.fileno())
    elapsed = time.perf_counter() - start
    dst.unlink()
    return elapsed


async def one_backup(root: Path, volume: Path, notifier: Any) -> tuple[float, float]:
    """Wall-clock and process CPU seconds (all threads) of one backup."""
    driver = PosixBackupDriver(root / "objects", fsync=False, chunk_size=CHUNK, compression=COMPRESSION)
    async with SQLiteCatalog(root / "catalog.sqlite3") as catalog:
        service = BackupService(catalog, driver, notifier, host="bench", progress=EVERY_OBJECT)
        start, cpu = time.perf_counter(), time.process_time()
        record = await service.create_backup(volume)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        await service.delete_backup(record.id)
    return elapsed, cpu


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="notifykit-bench-") as tmp:
        root = Path(tmp)
        volume = root / "volume.img"
        size = SIZE_MIB * MIB
        await anyio.to_thread.run_sync(write_volume, volume, size)
        await anyio.to_thread.run_sync(plain_copy, volume, root / "warm.img")  # page cache warm for everyone
        times: dict[str, list[float]] = {"copy": [], "off": [], "on": []}
        cpu: dict[str, list[float]] = {"off": [], "on": []}
        notify_share: list[float] = []
        progress_events = 0
        for run in range(RUNS):
            await anyio.to_thread.run_sync(os.sync)  # no writeback of an earlier run inside a timing
            times["copy"].append(await anyio.to_thread.run_sync(plain_copy, volume, root / "copy.img"))
            for mode in ("off", "on") if run % 2 == 0 else ("on", "off"):  # alternate to cancel order effects
                await anyio.to_thread.run_sync(os.sync)
                if mode == "off":
                    wall, used = await one_backup(root, volume, NoopNotifier())
                    times["off"].append(wall)
                    cpu["off"].append(used)
                    continue
                async with Notifier.from_url("memory://", publisher_id="backup.bench",
                                             dead_letters=root / "deadletters.jsonl") as notifier:
                    timed = TimedNotifier(notifier)
                    wall, used = await one_backup(root, volume, timed)
                    times["on"].append(wall)
                    cpu["on"].append(used)
                    notify_share.append(timed.seconds / wall)
                memory = notifier.transports["memory"]
                assert isinstance(memory, MemoryTransport)
                progress_events = memory.event_types.count("backup.createprogress")
                assert progress_events == size // CHUNK, progress_events
    best = {k: min(v) for k, v in times.items()}
    rate = {k: round(SIZE_MIB / v, 1) for k, v in best.items()}
    overhead = best["on"] / best["off"] - 1
    print(json.dumps({
        "benchmark": "backup_overhead",
        "file_mib": SIZE_MIB,
        "chunk_mib": CHUNK // MIB,
        "compression": COMPRESSION,
        "runs": RUNS,
        "progress_events_per_backup": progress_events,
        "copy_mib_s": rate["copy"],
        "backup_notifications_off_mib_s": rate["off"],
        "backup_notifications_on_mib_s": rate["on"],
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "overhead_ratio": round(overhead, 4),
        "overhead_ratio_median": round(statistics.median(times["on"]) / statistics.median(times["off"]) - 1, 4),
        "cpu_overhead_ratio_median": round(statistics.median(cpu["on"]) / statistics.median(cpu["off"]) - 1, 4),
        # process CPU seconds per wall second of a backup: above 1 means several cores worked
        "backup_cpu_per_wall_median": round(statistics.median(c / w for c, w in zip(cpu["off"], times["off"], strict=True)), 2),
        "notify_call_share_median": round(statistics.median(notify_share), 5),
        "backup_vs_copy_ratio": round(best["off"] / best["copy"], 3),
        "goals": [
            goal("backup wall time, notifications on vs off (median overhead)",
                 statistics.median(times["on"]) / statistics.median(times["off"]) - 1, "<=", 0.02, cause=CAUSE,
                 digits=4),
            goal("share of the backup's wall time inside notify() (median)", statistics.median(notify_share), "<=",
                 0.02, digits=5),
        ],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    anyio.run(main)
