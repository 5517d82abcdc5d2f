"""The posix store syncs once per backup (issue 29): every object and the directory at
``sync_container``, none at ``put_object``; a crash before that final sync leaves a backup
that ``recover`` marks failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio.to_thread
import pytest

from notifykit.backup import BackupStatus
from notifykit.backup._posix import PosixObjectStore

from .helpers import backup_env, write_volume

_CRASHING_CREATE = textwrap.dedent("""
    import os, signal, sys
    import anyio
    from notifykit import Notifier
    from notifykit.backup import BackupService, ProgressPolicy
    from notifykit.backup._chunked import ChunkedBackupDriver
    from notifykit.backup._posix import PosixObjectStore
    from notifykit.backup._sqlite import SQLiteCatalog

    root = sys.argv[1]

    class CrashBeforeSync(PosixObjectStore):
        def _sync_container(self, container):
            print(len(self._unsynced[container]), flush=True)  # objects written, none synced yet
            os.kill(os.getpid(), signal.SIGKILL)

    async def main():
        driver = ChunkedBackupDriver(CrashBeforeSync(root + "/store"), chunk_size=4096, compression="none")
        notifier = Notifier.from_url("memory://", publisher_id="backup.testhost", close_timeout=2.0)
        async with notifier, SQLiteCatalog(root + "/catalog.sqlite3") as catalog:
            service = BackupService(catalog, driver, notifier, host="testhost", availability_zone="az-1",
                                    progress=ProgressPolicy(backup_enable_progress_timer=False))
            await service.create_backup(root + "/volume.img")

    anyio.run(main)
""")


@pytest.mark.asyncio
async def test_a_crash_between_the_object_writes_and_the_final_sync_is_a_failed_backup(tmp_path: Path) -> None:
    write_volume(tmp_path / "volume.img", 10 * 4096 + 5)
    proc = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-c", _CRASHING_CREATE, str(tmp_path)], capture_output=True, text=True, timeout=60))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert int(proc.stdout) == 11 + 2  # every chunk, the block list and the metadata: unsynced
    async with backup_env(tmp_path, store=PosixObjectStore(tmp_path / "store")) as env:
        [record] = await env.service.list()
        assert record.status is BackupStatus.CREATING
        [recovered] = await env.service.recover_interrupted()
        after = await env.service.show(record.id)
        await env.service.delete_backup(record.id)
    assert recovered.id == record.id and after.status is BackupStatus.ERROR
    assert list((tmp_path / "store").iterdir()) == []


@pytest.mark.asyncio
async def test_objects_are_synced_once_at_the_end_not_at_each_put(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    store = PosixObjectStore(tmp_path / "store")
    async with backup_env(tmp_path, store=store) as env:
        volume = env.volume(3 * 4096)
        monkeypatch.setattr(os, "fsync", recording_fsync)
        await store.create_container("c")
        await store.put_object("c", "one", b"1")
        await store.put_object("c", "two", b"2")
        assert synced == []
        await store.sync_container("c")
        # the objects (by several threads at once, in any order), then the directory entries
        assert sorted(synced[:2]) == [str(tmp_path / "store" / "c" / n) for n in ("one", "two")]
        assert synced[2:] == [str(tmp_path / "store" / "c"), str(tmp_path / "store")]
        synced.clear()
        record = await env.service.create_backup(volume)
    container = tmp_path / "store" / str(record.container)
    objects = sorted(str(p) for p in container.iterdir())
    assert sorted(s for s in synced if s.startswith(str(container) + "/")) == objects
    assert str(container) in synced
