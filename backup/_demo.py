"""``notifykit-backup demo``: sample volume → backup → restore → compare → delete, then a
report of every notification emitted and what the backup cost (what ``make demo`` runs)."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.to_thread

from notifykit import ContextLike, Notification, Notifier, Priority

from ._catalog import BackupRecord
from ._config import BackupConfig
from ._console import MIB, ProgressDisplay, build_notifier
from ._setup import open_backup_service

__all__ = ["RecordingNotifier", "run_demo"]


class RecordingNotifier:
    """Forwards to a Notifier and keeps what was emitted (the demo prints it)."""

    def __init__(self, inner: Notifier) -> None:
        self.inner = inner
        self.emitted: list[Notification] = []

    async def notify(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any], *,
                     priority: Priority | str = Priority.INFO) -> Notification:
        notification = await self.inner.notify(ctx, event_type, payload, priority=priority)
        self.emitted.append(notification)
        return notification


def _write_sample_volume(path: Path, size: int) -> None:
    """Mixed data, 1 MiB blocks: half random, a quarter text, a quarter zeros."""
    text = (b"notifykit demo volume: compressible text, repeated. " * 20_000)[:MIB]
    zeros = bytes(MIB)
    with open(path, "wb") as fh:
        written, block = 0, 0
        while written < size:
            kind = block % 4
            data = os.urandom(MIB) if kind in (0, 2) else text if kind == 1 else zeros
            data = data[: size - written]
            fh.write(data)
            written += len(data)
            block += 1


def _same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(4 * MIB), fb.read(4 * MIB)
            if x != y:
                return False
            if not x:
                return True


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def run_demo(config: BackupConfig, size: int, out: TextIO, err: TextIO, *, keep: bool = False) -> int:
    """Sample volume → backup → restore → compare → delete, then print what was emitted."""
    workdir = Path(await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="notifykit-backup-demo-")))
    objects = workdir / "objects"
    config = dataclasses.replace(config, catalog_path=workdir / "catalog.sqlite3",
                                 store=str(objects), store_options={},  # the demo measures what it leaves on disk
                                 dead_letter_path=config.dead_letter_path or workdir / "deadletters.jsonl")
    volume, restored = workdir / "volume.img", workdir / "restored.img"
    try:
        err.write(f"demo: writing a {size / MIB:.0f} MiB sample volume to {volume}\n")
        await anyio.to_thread.run_sync(_write_sample_volume, volume, size)
        notifier = build_notifier(config)
        recorder = RecordingNotifier(notifier)
        async with notifier, open_backup_service(config, recorder) as service:
            started = time.perf_counter()
            display = ProgressDisplay("create", err)
            record = await service.create_backup(volume, name="demo", on_progress=display)
            display.finish()
            backup_seconds = time.perf_counter() - started
            stored = await anyio.to_thread.run_sync(_dir_bytes, objects)
            started = time.perf_counter()
            display = ProgressDisplay("restore", err)
            await service.restore_backup(record.id, restored, on_progress=display)
            display.finish()
            restore_seconds = time.perf_counter() - started
            identical = await anyio.to_thread.run_sync(_same_bytes, volume, restored)
            deleted = await service.delete_backup(record.id)
            left = await anyio.to_thread.run_sync(lambda: list(objects.iterdir()))
        stats = notifier.stats()
        _print_demo_report(out, recorder.emitted, record, deleted, size, stored, backup_seconds, restore_seconds,
                           identical, not left, stats)
        return 0 if identical and not left and deleted.status.value == "deleted" else 1
    finally:
        if keep:
            err.write(f"demo: kept {workdir}\n")
        else:
            await anyio.to_thread.run_sync(_remove_tree, workdir)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _print_demo_report(out: TextIO, emitted: Sequence[Notification], record: BackupRecord, deleted: BackupRecord,
                       size: int, stored: int, backup_s: float, restore_s: float, identical: bool, all_removed: bool,
                       stats: Mapping[str, Any]) -> None:
    out.write("\nnotifications emitted (publisher_id %s):\n" % (emitted[0].publisher_id if emitted else "-"))
    out.write(f"  {'#':>2}  {'priority':8}  {'event_type':24}  {'status':10}  {'percentage':>10}  {'size':>4}  size_bytes\n")
    for i, n in enumerate(emitted, 1):
        p = n.payload
        pct = f"{p['percentage']:.2f}" if "percentage" in p else ""
        out.write(f"  {i:2d}  {n.priority.value:8}  {n.event_type:24}  {p.get('status') or '':10}  {pct:>10}"
                  f"  {p.get('size', ''):>4}  {p.get('size_bytes', '')}\n")
    mib = size / MIB
    out.write("\nsummary:\n")
    out.write(f"  backup id        {record.id} ({record.object_count} objects, service {record.service})\n")
    out.write(f"  volume           {size} bytes ({mib:.1f} MiB, size {record.size} GiB as Cinder reports it)\n")
    out.write(f"  stored           {stored} bytes (ratio {stored / size if size else 1:.3f}, {record.service_metadata})\n")
    out.write(f"  backup           {backup_s:.2f} s ({mib / backup_s if backup_s else 0:.1f} MiB/s)\n")
    out.write(f"  restore          {restore_s:.2f} s ({mib / restore_s if restore_s else 0:.1f} MiB/s)\n")
    out.write(f"  restored bytes   {'identical' if identical else 'DIFFERENT'}\n")
    out.write(f"  delete           status {deleted.status.value}, objects {'all removed' if all_removed else 'LEFT BEHIND'}\n")
    for name, s in stats.items():
        out.write(f"  transport {name:6} sent={s.sent} dead_lettered={s.dead_lettered} dropped={s.dropped}\n")
    out.write(f"  result           {'OK' if identical and all_removed else 'FAILED'}\n")


