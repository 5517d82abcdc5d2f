"""Restore targets cannot be hijacked or mixed up (issue 24, reproductions 1, 2 and 3).

A restore writes only files it creates (``O_CREAT|O_EXCL|O_NOFOLLOW``, a name unique to the
operation), never replaces a file that appeared meanwhile, refuses a second restore to the
same target while one runs, and checks the metadata belongs to the catalog's backup."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import anyio
import pytest

from notifykit.backup import _target
from notifykit.backup._catalog import BackupStatus
from notifykit.backup._errors import BackupError, CorruptBackupError, RestoreTargetError
from notifykit.backup._posix import PosixObjectStore
from notifykit.backup._target import RestoreTargetBusyError

from .helpers import CHUNK, backup_env

pytestmark = pytest.mark.asyncio

VICTIM = b"the victim's own bytes\n"


class GatedReadStore(PosixObjectStore):
    """A posix store whose data-object reads wait for ``gate`` once ``armed``: a restore
    stays open (lock held, partial file made) until the test lets it go on."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.armed = False
        self.gate = anyio.Event()
        self.reading = anyio.Event()
        self.chunks_read: list[str] = []

    async def get_object(self, container: str, name: str) -> bytes:
        if not name.endswith(("_metadata", "_sha256file")):
            self.chunks_read.append(name)
            if self.armed:
                self.reading.set()
                await self.gate.wait()
        return await super().get_object(container, name)


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


async def test_a_planted_partial_symlink_is_not_written_through(tmp_path: Path) -> None:
    """Reproduction 1: ``.TARGET.partial`` → victim used to receive the backup's bytes and
    TARGET became a symlink to the victim."""
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    os.symlink(victim, shared / ".restored.img.partial")
    async with backup_env(tmp_path) as env:
        volume = env.volume(8 * CHUNK)
        record = await env.service.create_backup(volume)
        restored = await env.service.restore_backup(record.id, shared / "restored.img")
    assert victim.read_bytes() == VICTIM
    target = shared / "restored.img"
    assert not target.is_symlink() and target.read_bytes() == volume.read_bytes()
    assert restored.status is BackupStatus.AVAILABLE
    assert hidden(shared) == [".restored.img.partial"]  # the planted link, untouched; nothing of ours left


async def test_a_symlink_planted_at_the_exact_partial_name_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a name the attacker predicted is never followed: O_EXCL|O_NOFOLLOW fails."""
    monkeypatch.setattr(_target, "_new_token", lambda: "predicted")
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    async with backup_env(tmp_path) as env:
        record = await env.service.create_backup(env.volume(4 * CHUNK))
        os.symlink(victim, tmp_path / f".out.img.{record.id}.predicted.partial")
        with pytest.raises(RestoreTargetError, match="is already there"):
            await env.service.restore_backup(record.id, tmp_path / "out.img")
        after = await env.service.show(record.id)
    assert victim.read_bytes() == VICTIM
    assert not (tmp_path / "out.img").exists()
    assert after.status is BackupStatus.ERROR_RESTORING
    assert (tmp_path / f".out.img.{record.id}.predicted.partial").is_symlink()  # theirs, left alone


async def test_a_symlink_target_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    os.symlink(victim, tmp_path / "link.img")
    async with backup_env(tmp_path) as env:
        record = await env.service.create_backup(env.volume(2 * CHUNK))
        with pytest.raises(RestoreTargetError, match=r"is a symbolic link \(to '.*victim'\).*give the path"):
            await env.service.restore_backup(record.id, tmp_path / "link.img", overwrite=True)
    assert victim.read_bytes() == VICTIM and (tmp_path / "link.img").is_symlink()


async def test_a_symlink_to_a_block_device_is_not_followed(tmp_path: Path) -> None:
    device = tmp_path / "dev-node"
    try:  # a block device of a major number no driver uses: nothing could be written anyway
        os.mknod(device, stat.S_IFBLK | 0o600, os.makedev(60, 0))
    except OSError as exc:
        pytest.skip(f"cannot make a block device node here: {exc.strerror}")
    os.symlink(device, tmp_path / "disk")
    async with backup_env(tmp_path) as env:
        record = await env.service.create_backup(env.volume(2 * CHUNK))
        with pytest.raises(RestoreTargetError, match="is a symbolic link"):
            await env.service.restore_backup(record.id, tmp_path / "disk", overwrite=True)
        with pytest.raises(RestoreTargetError, match="No such device"):  # the node itself: opened, no device
            await env.service.restore_backup(record.id, device, overwrite=True)
    assert stat.S_ISBLK(os.stat(device).st_mode)


async def test_a_symlink_planted_as_the_lock_file_is_refused_before_start(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    os.symlink(victim, tmp_path / ".out.img.restore.lock")
    async with backup_env(tmp_path) as env:
        record = await env.service.create_backup(env.volume(2 * CHUNK))
        with pytest.raises(RestoreTargetError, match=r"lock file '\.out\.img\.restore\.lock' is a symbolic link"):
            await env.service.restore_backup(record.id, tmp_path / "out.img")
        after = await env.service.show(record.id)
    assert victim.read_bytes() == VICTIM and not (tmp_path / "out.img").exists()
    assert after.status is BackupStatus.AVAILABLE  # refused before it started
    assert env.event_types[-1] == "backup.restore.error" and "backup.restore.start" not in env.event_types


async def test_symlink_race_never_writes_the_victim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While restores run, another thread keeps planting symlinks to a victim at every name a
    restore uses (the target, its lock file, the partial file's name, predicted here, and the
    ``.TARGET.partial`` every restore used to write) and removing them: every restore either
    succeeds with the right bytes or is refused, and the victim is never written."""
    monkeypatch.setattr(_target, "_new_token", lambda: "predicted")
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    stop = threading.Event()
    names: list[str] = []
    planted = 0

    def attacker() -> None:
        nonlocal planted
        while not stop.is_set():
            paths = [shared / name for name in names]
            for path in paths:
                try:
                    os.symlink(victim, path)
                    planted += 1
                except OSError:
                    pass
            time.sleep(0.0003)  # each link stays a moment, then goes (and comes back)
            for path in paths:
                if path.is_symlink():
                    os.unlink(path)
            time.sleep(0.001)

    outcomes: dict[str, int] = {"restored": 0}
    wrong: list[str] = []
    async with backup_env(tmp_path) as env:
        volume = env.volume(16 * CHUNK)
        record = await env.service.create_backup(volume)
        thread = threading.Thread(target=attacker, daemon=True)
        thread.start()
        try:
            for i in range(40):
                target = f"t{i}.img"
                names[:] = [target, f".{target}.partial", f".{target}.restore.lock",
                            f".{target}.{record.id}.predicted.partial"]
                await anyio.sleep(0.002)  # let the attacker start on the new names
                try:
                    await env.service.restore_backup(record.id, shared / target)
                    outcomes["restored"] += 1
                    if (shared / target).is_symlink() or (shared / target).read_bytes() != volume.read_bytes():
                        wrong.append(f"{target} is not the backup's bytes")
                except BackupError as exc:
                    kind = next((k for k in ("symbolic link", "already there", "appeared while") if k in str(exc)), "")
                    if not kind:
                        wrong.append(str(exc))
                    outcomes[kind or "other"] = outcomes.get(kind or "other", 0) + 1
                    if (await env.service.show(record.id)).status is BackupStatus.ERROR_RESTORING:
                        await env.catalog.transition(record.id, BackupStatus.RESTORING)
                        await env.catalog.transition(record.id, BackupStatus.AVAILABLE)
        finally:
            stop.set()
            thread.join(timeout=10)
    assert victim.read_bytes() == VICTIM
    assert wrong == []
    assert planted > 0 and sum(outcomes.values()) == 40
    print(f"symlink race: {outcomes}, {planted} symlinks planted")


async def test_a_second_restore_to_a_running_target_is_refused_naming_it(tmp_path: Path) -> None:
    """Reproduction 2 in one process: B is refused while A writes; A's bytes end up there."""
    store = GatedReadStore(tmp_path / "store")
    async with backup_env(tmp_path, store=store) as env:
        vol_a, vol_b = env.volume(6 * CHUNK, "a.img", seed=1), env.volume(6 * CHUNK, "b.img", seed=2)
        a = await env.service.create_backup(vol_a)
        b = await env.service.create_backup(vol_b)
        target = tmp_path / "out" / "new.img"
        target.parent.mkdir()
        store.armed = True
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(env.service.restore_backup, a.id, target)
                await store.reading.wait()  # A holds the target and has begun writing
                with pytest.raises(RestoreTargetBusyError) as refused:
                    await env.service.restore_backup(b.id, target)
                b_after = await env.service.show(b.id)
                store.gate.set()
        a_after = await env.service.show(a.id)
    message = str(refused.value)
    assert f"is in use by the restore of backup {a.id} (process {os.getpid()} on testhost)" in message
    assert "\n" not in message
    assert b_after.status is BackupStatus.AVAILABLE and a_after.status is BackupStatus.AVAILABLE
    assert target.read_bytes() == vol_a.read_bytes()
    assert hidden(target.parent) == []
    b_events = [n.event_type for n in env.memory.messages if n.payload["backup_id"] == b.id]
    assert b_events[-1] == "backup.restore.error" and "backup.restore.start" not in b_events


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "link-fallback"])
async def test_a_file_that_appears_meanwhile_is_not_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: bool) -> None:
    if not renameat2:
        monkeypatch.setattr(_target, "_RENAMEAT2", None)
    elif _target._RENAMEAT2 is None:
        pytest.skip("no renameat2 in this C library")
    store = GatedReadStore(tmp_path / "store")
    target = tmp_path / "new.img"
    async with backup_env(tmp_path, store=store) as env:
        record = await env.service.create_backup(env.volume(4 * CHUNK))
        store.armed = True
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                async def restore() -> None:
                    with pytest.raises(RestoreTargetError, match=r"appeared while the restore ran.*not replaced"):
                        await env.service.restore_backup(record.id, target)
                tg.start_soon(restore)
                await store.reading.wait()
                target.write_bytes(b"made by someone else meanwhile")
                store.gate.set()
        after = await env.service.show(record.id)
    assert target.read_bytes() == b"made by someone else meanwhile"
    assert after.status is BackupStatus.ERROR_RESTORING
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "link-fallback"])
async def test_restore_puts_a_new_file_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                renameat2: bool) -> None:
    if not renameat2:
        monkeypatch.setattr(_target, "_RENAMEAT2", None)
    async with backup_env(tmp_path) as env:
        volume = env.volume(5 * CHUNK + 7)
        record = await env.service.create_backup(volume)
        await env.service.restore_backup(record.id, tmp_path / "new.img")
    assert (tmp_path / "new.img").read_bytes() == volume.read_bytes()
    assert os.stat(tmp_path / "new.img").st_nlink == 1
    assert hidden(tmp_path) == []


async def test_another_backups_metadata_and_objects_are_refused(tmp_path: Path) -> None:
    """Reproduction 3: B's metadata, block list and chunks copied into A's container (same
    size) used to restore as if they were A's."""
    store = GatedReadStore(tmp_path / "store")
    async with backup_env(tmp_path, store=store) as env:
        a = await env.service.create_backup(env.volume(4 * CHUNK, "a.img", seed=1))
        b = await env.service.create_backup(env.volume(4 * CHUNK, "b.img", seed=2))
        assert a.container and b.container and a.service_metadata and b.service_metadata
        a_dir, b_dir = tmp_path / "store" / a.container, tmp_path / "store" / b.container
        for obj in b_dir.iterdir():
            name = obj.name.replace(b.service_metadata + "_metadata", a.service_metadata + "_metadata")
            shutil.copyfile(obj, a_dir / name)
        with pytest.raises(CorruptBackupError, match=f"is of backup '{b.id}'.*the catalog's record is backup"
                                                     f" '{a.id}'"):
            await env.service.restore_backup(a.id, tmp_path / "out.img")
        assert store.chunks_read == []  # refused before any chunk was read
        after = await env.service.show(a.id)
    assert not (tmp_path / "out.img").exists()
    assert after.status is BackupStatus.ERROR_RESTORING and f"backup '{b.id}'" in (after.fail_reason or "")


async def test_metadata_of_another_volume_is_refused(tmp_path: Path) -> None:
    store = GatedReadStore(tmp_path / "store")
    async with backup_env(tmp_path, store=store) as env:
        record = await env.service.create_backup(env.volume(3 * CHUNK))
        assert record.container and record.service_metadata
        meta_path = tmp_path / "store" / record.container / f"{record.service_metadata}_metadata"
        meta = json.loads(meta_path.read_bytes())
        meta["volume_id"] = "another-volume"
        meta_path.write_text(json.dumps(meta))
        with pytest.raises(CorruptBackupError, match="volume 'another-volume'"):
            await env.service.restore_backup(record.id, tmp_path / "out.img")
    assert store.chunks_read == [] and not (tmp_path / "out.img").exists()


async def test_a_long_or_relative_target_name_works_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hidden names of a 250-byte target name would pass NAME_MAX: they use a digest."""
    long_name = "v" * 246 + ".img"
    monkeypatch.chdir(tmp_path)
    async with backup_env(tmp_path) as env:
        volume = env.volume(3 * CHUNK)
        record = await env.service.create_backup(volume)
        await env.service.restore_backup(record.id, long_name)
        await env.service.restore_backup(record.id, "relative.img")
    assert (tmp_path / long_name).read_bytes() == (tmp_path / "relative.img").read_bytes() == volume.read_bytes()
    assert hidden(tmp_path) == []


async def test_recover_cleanup_removes_only_plain_files_of_that_backup_and_an_unheld_lock(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(VICTIM)
    (tmp_path / ".t.img.B1.abc.partial").write_bytes(b"left by a killed restore of B1")
    (tmp_path / ".t.img.B2.abc.partial").write_bytes(b"another backup's")
    os.symlink(victim, tmp_path / ".t.img.B1.planted.partial")
    lock = _target.lock_restore_target(tmp_path / "t.img", {"backup_id": "B3", "pid": 1, "host": "h"})
    try:
        assert _target.remove_restore_leftovers(tmp_path / "t.img", "B1") == [".t.img.B1.abc.partial"]
    finally:
        lock.release()
    assert hidden(tmp_path) == [".t.img.B1.planted.partial", ".t.img.B2.abc.partial"]  # the held lock went with release
    (tmp_path / ".t.img.restore.lock").write_bytes(b"{}")  # stale: nobody holds it
    assert _target.remove_restore_leftovers(tmp_path / "t.img", "B1") == [".t.img.restore.lock"]
    assert victim.read_bytes() == VICTIM
