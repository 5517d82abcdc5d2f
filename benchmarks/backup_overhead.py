"""What notifications cost a backup: the same file backed up with notifications off and on.

Backs up one >= 512 MiB file (mixed random and compressible data, in a temporary
directory deleted afterwards) with the posix chunked driver, alternating:

* off — a no-op notifier (``notify`` returns a prebuilt notification, nothing else);
* on  — a real Notifier on ``memory://``, one progress event per object
  (``backup_object_number_per_notification=1``), plus start/end;

and measures a plain copy of the file (``shutil.copyfile`` + fsync) as the physical
reference. The ``swift`` row backs the same file up (notifications off) to the posix store
with fsync (Swift fsyncs every object too) and to a local OpenStack Swift all-in-one, started
with scripts/swift-aio unless ``NOTIFYKIT_BENCH_SWIFT_URL`` (``swift://USER:KEY@HOST:PORT/…``)
names one; the row is skipped with a note when Swift is not installed.

Prints JSON: MiB/s for each (best run), and ``overhead_ratio`` = on/off - 1 from the best
runs (target <= 0.02), plus the same ratio from the medians, the ratio of process CPU time,
and the share of the backup's wall time spent inside ``notify()``. The machine is shared, so
wall-clock differences of a few percent either way are noise; the CPU and
notify-share figures are the steadier view of the same cost.

Usage: python benchmarks/backup_overhead.py [SIZE_MIB] [RUNS]   (the swift row runs min(RUNS, 3) times)
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
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

from backup import (
    BackupService,
    ChunkedBackupDriver,
    ObjectStore,
    PosixBackupDriver,
    ProgressPolicy,
    SQLiteCatalog,
    SwiftObjectStore,
    SwiftOptions,
)
from backup._setup import SWIFT_DEFAULT_UPLOADS
from notifykit import ContextLike, Notification, Notifier, Priority
from transports.memory import MemoryTransport

MIB = 1024 * 1024
SIZE_MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 512
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
CHUNK = 4 * MIB
COMPRESSION = "zstd"
EVERY_OBJECT = ProgressPolicy(backup_object_number_per_notification=1)
SWIFT_RUNS = min(RUNS, 3)
SWIFT_AIO = Path(__file__).resolve().parents[1] / "scripts" / "swift-aio"


class NoopNotifier:
    """Notifications off: satisfies SupportsNotify and does nothing."""

    def __init__(self) -> None:
        self._prebuilt = Notification.create("noop", {}, publisher_id="bench")
        self.calls = 0

    async def notify(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any], *,
                     priority: Priority | str = Priority.INFO) -> Notification:
        self.calls += 1
        return self._prebuilt


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


def write_volume(path: Path, size: int) -> None:
    block = (b"compressible text block for the backup benchmark. " * 21_000)[:MIB]
    with open(path, "wb") as fh:
        for i in range(size // MIB):
            fh.write(os.urandom(MIB) if i % 2 else block)


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


async def store_backup(root: Path, volume: Path, store: ObjectStore, uploads: int) -> float:
    """Wall-clock seconds of one backup (notifications off) to ``store``; deleted afterwards."""
    driver = ChunkedBackupDriver(store, chunk_size=CHUNK, compression=COMPRESSION, uploads=uploads)
    async with SQLiteCatalog(root / "catalog-store.sqlite3") as catalog:
        service = BackupService(catalog, driver, NoopNotifier(), host="bench", progress=EVERY_OBJECT)
        start = time.perf_counter()
        record = await service.create_backup(volume)
        elapsed = time.perf_counter() - start
        await service.delete_backup(record.id)
    return elapsed


async def swift_row(root: Path, volume: Path) -> dict[str, Any]:
    """MiB/s to the posix store (fsync on) and to a local Swift, alternating, same file."""
    aio: Any = None
    url = os.environ.get("NOTIFYKIT_BENCH_SWIFT_URL")
    if not url:
        loader = importlib.machinery.SourceFileLoader("swift_aio", str(SWIFT_AIO))
        spec = importlib.util.spec_from_loader("swift_aio", loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        missing = module.missing_binaries()
        if missing:
            return {"skipped": f"Swift not installed (missing {', '.join(missing)})"}
        aio = module.SwiftAIO(root / "swift-aio")
        await anyio.to_thread.run_sync(aio.start)
        url = aio.info()["store_url"]
    times: dict[str, list[float]] = {"posix_fsync": [], "swift": []}
    store = SwiftObjectStore(SwiftOptions.from_url(url), max_connections=SWIFT_DEFAULT_UPLOADS + 4)
    try:
        for run in range(SWIFT_RUNS):
            for mode in ("posix_fsync", "swift") if run % 2 == 0 else ("swift", "posix_fsync"):
                await anyio.to_thread.run_sync(os.sync)
                if mode == "swift":
                    times[mode].append(await store_backup(root, volume, store, SWIFT_DEFAULT_UPLOADS))
                else:
                    posix = PosixBackupDriver(root / "objects-fsync", fsync=True).store
                    times[mode].append(await store_backup(root, volume, posix, 2))
    finally:
        await store.aclose()
        if aio is not None:
            await anyio.to_thread.run_sync(aio.stop)
    rate = {k: round(SIZE_MIB / min(v), 1) for k, v in times.items()}
    return {
        "runs": SWIFT_RUNS,
        "swift_started_here": aio is not None,
        "uploads_in_flight": SWIFT_DEFAULT_UPLOADS,
        "posix_fsync_mib_s": rate["posix_fsync"],
        "swift_mib_s": rate["swift"],
        "swift_vs_posix_ratio": round(rate["swift"] / rate["posix_fsync"], 3),
        "median_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
    }


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
        swift = await swift_row(root, volume)
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
        "target_overhead_ratio": 0.02,
        "within_target": overhead <= 0.02,
        "swift": swift,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    anyio.run(main)
