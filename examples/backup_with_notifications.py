"""An asyncio backup driver emitting Cinder's backup notifications through notifykit.

Backs up FILE into a posix object store under WORKDIR, restores it, deletes the backup,
and lets every notification go to the transport chosen by URL (default: JSON lines on
stderr). Usage::

    python examples/backup_with_notifications.py FILE WORKDIR [NOTIFIER_URL]
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import anyio.to_thread

from notifykit import Notifier
from notifykit.backup import BackupConfig, open_backup_service


async def main(volume: Path, workdir: Path, url: str) -> None:
    config = BackupConfig(catalog_path=workdir / "catalog.sqlite3", store=str(workdir / "objects"),
                          chunk_size=1024 * 1024, host="example-host",
                          backup_object_number_per_notification=2)
    # The service picks its transport by URL only; publisher_id follows Cinder: backup.<host>.
    async with Notifier.from_url(url, publisher_id=f"backup.{config.host}",
                                 dead_letters=workdir / "deadletters.jsonl") as notifier:
        async with open_backup_service(config, notifier) as service:
            record = await service.create_backup(volume, name="example")
            await service.restore_backup(record.id, workdir / "restored.img")
            await service.delete_backup(record.id)
    same = await anyio.to_thread.run_sync(same_bytes, workdir / "restored.img", volume)
    (stats,) = notifier.stats().values()
    print(f"backup {record.id}: {record.object_count} objects, restored identical={same}, "
          f"notifications sent={stats.sent}")


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "log://stderr")
