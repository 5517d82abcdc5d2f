"""The notifications the backup service emits: sequences, payloads, failures, cancellation."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from notifykit import Notification, Priority
from notifykit.backup import (
    BackupNotFoundError,
    BackupStatus,
    CorruptBackupError,
    InvalidStatusTransitionError,
    ObjectStoreError,
    ProgressPolicy,
    RestoreTargetError,
    VolumeError,
)
from notifykit.backup._payload import PAYLOAD_FIELDS, PAYLOAD_VERSION
from notifykit.backup._posix import PosixObjectStore

from .helpers import CHUNK, CTX, PUBLISHER, FullStore, GatedStore, backup_env

pytestmark = pytest.mark.asyncio

EVERY_4 = ProgressPolicy(backup_object_number_per_notification=4, backup_enable_progress_timer=False)


def check_payload(n: Notification) -> dict[str, Any]:
    """Every Cinder field present with its type; returns the payload."""
    payload = dict(n.payload)
    for name, types in PAYLOAD_FIELDS.items():
        assert name in payload, f"{n.event_type}: missing {name}"
        assert isinstance(payload[name], types), f"{n.event_type}: {name}={payload[name]!r}"
    assert payload["payload_version"] == PAYLOAD_VERSION
    datetime.fromisoformat(payload["created_at"])
    return payload


async def test_create_restore_delete_sequence_and_payloads(tmp_path: Path) -> None:
    async with backup_env(tmp_path, policy=EVERY_4) as env:
        volume = env.volume(10 * CHUNK)
        record = await env.service.create_backup(volume, name="nightly", ctx=CTX)
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img", ctx=CTX)
        deleted = await env.service.delete_backup(record.id, ctx=CTX)
    assert env.event_types == [
        "backup.create.start", "backup.createprogress", "backup.createprogress", "backup.createprogress",
        "backup.create.end",
        "backup.restore.start", "backup.restoreprogress", "backup.restoreprogress", "backup.restoreprogress",
        "backup.restore.end",
        "backup.delete.start", "backup.delete.end",
    ]
    messages = env.memory.messages
    assert {n.publisher_id for n in messages} == {PUBLISHER}
    assert {n.priority for n in messages} == {Priority.INFO}
    payloads = [check_payload(n) for n in messages]
    for p in payloads:
        assert p["backup_id"] == record.id
        assert p["tenant_id"] == "proj-1" and p["user_id"] == "user-1"
        assert p["display_name"] == "nightly"
        assert p["host"] == "testhost" and p["availability_zone"] == "az-1"
        assert p["volume_id"] == record.volume_id
        assert p["size"] == 1 and p["size_bytes"] == 10 * CHUNK
        assert p["service"] == "backup.drivers.posix"
        assert p["fail_reason"] is None and p["parent_id"] is None and p["snapshot_id"] is None
        assert p["num_dependent_backups"] == 0
    assert [p["status"] for p in payloads] == [
        "creating", "creating", "creating", "creating", "available",
        "restoring", "restoring", "restoring", "restoring", "available",
        "deleting", "deleted",
    ]
    assert [p["percentage"] for p in payloads if "percentage" in p] == [40.0, 80.0, 100.0] * 2
    assert [p["bytes_done"] for p in payloads if "bytes_done" in p] == [4 * CHUNK, 8 * CHUNK, 10 * CHUNK] * 2
    assert payloads[4]["service_metadata"] == record.service_metadata
    assert all(n.context.request_id == "req-test" for n in messages)
    assert restored.status is BackupStatus.AVAILABLE and deleted.status is BackupStatus.DELETED
    assert (tmp_path / "restored.img").read_bytes() == volume.read_bytes()


async def test_missing_volume_is_create_error(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:
        with pytest.raises(VolumeError, match="does not exist"):
            await env.service.create_backup(tmp_path / "nope.img")
        [record] = await env.service.list()
    assert env.event_types == ["backup.create.start", "backup.create.error"]
    error = env.memory.messages[-1]
    assert error.priority is Priority.ERROR
    payload = check_payload(error)
    assert payload["status"] == "error" and "does not exist" in payload["fail_reason"]
    assert record.status is BackupStatus.ERROR and record.fail_reason == payload["fail_reason"]


@pytest.mark.parametrize("kind", ["directory", "fifo"])
async def test_unreadable_volume_is_create_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "vol"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)  # opening it would block forever: it must be refused before open()
    async with backup_env(tmp_path) as env:
        with anyio.fail_after(10), pytest.raises(VolumeError, match="not a regular file or block device"):
            await env.service.create_backup(path)
        [record] = await env.service.list()
    assert env.event_types == ["backup.create.start", "backup.create.error"]
    assert kind.replace("fifo", "FIFO") in env.memory.messages[-1].payload["fail_reason"]
    assert record.status is BackupStatus.ERROR


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_permission_denied_volume_is_create_error(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:
        volume = env.volume(CHUNK)
        volume.chmod(0)
        with pytest.raises(VolumeError, match="cannot be opened"):
            await env.service.create_backup(volume)
    assert env.event_types == ["backup.create.start", "backup.create.error"]


async def test_store_that_is_not_a_directory_is_create_error(tmp_path: Path) -> None:
    (tmp_path / "store-file").write_text("not a directory")
    store = PosixObjectStore(tmp_path / "store-file", fsync=False)
    async with backup_env(tmp_path, store=store) as env:
        with pytest.raises(ObjectStoreError, match="cannot create container"):
            await env.service.create_backup(env.volume(3 * CHUNK))
        [record] = await env.service.list()
    assert env.event_types == ["backup.create.start", "backup.create.error"]
    assert record.status is BackupStatus.ERROR and "Not a directory" in (record.fail_reason or "")


@pytest.mark.parametrize(("code", "reason"), [(errno.ENOSPC, "no space left on device (object store full)"),
                                              (errno.EROFS, "Read-only file system (object store read-only?)")])
async def test_full_or_readonly_store_is_create_error_and_delete_cleans_up(tmp_path: Path, code: int,
                                                                          reason: str) -> None:
    store = FullStore(tmp_path / "store", room=3, code=code)
    async with backup_env(tmp_path, store=store, policy=EVERY_4) as env:
        with pytest.raises(ObjectStoreError, match=re.escape(reason)):
            await env.service.create_backup(env.volume(10 * CHUNK))
        [record] = await env.service.list()
        await env.service.delete_backup(record.id)
        leftovers = list((tmp_path / "store").iterdir())
    assert env.event_types == ["backup.create.start", "backup.create.error", "backup.delete.start", "backup.delete.end"]
    assert record.status is BackupStatus.ERROR and (record.fail_reason or "").endswith(reason)
    assert leftovers == []


@pytest.mark.parametrize("compression", ["none", "zlib", "zstd"])
async def test_corrupt_chunk_is_restore_error(tmp_path: Path, compression: str) -> None:
    async with backup_env(tmp_path, compression=compression) as env:
        record = await env.service.create_backup(env.volume(4 * CHUNK))
        assert record.container is not None
        chunk = sorted((tmp_path / "store" / record.container).glob("*-00001"))[0]
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0xFF
        chunk.write_bytes(bytes(data))
        with pytest.raises(CorruptBackupError, match="-00001 is corrupt"):
            await env.service.restore_backup(record.id, tmp_path / "out.img")
        after = await env.service.show(record.id)
    assert env.event_types[-2:] == ["backup.restore.start", "backup.restore.error"]
    assert after.status is BackupStatus.ERROR_RESTORING
    assert check_payload(env.memory.messages[-1])["fail_reason"] == after.fail_reason
    assert not (tmp_path / "out.img").exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


async def test_missing_chunk_is_restore_error_and_restore_can_be_retried(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:
        volume = env.volume(3 * CHUNK)
        record = await env.service.create_backup(volume)
        assert record.container is not None
        chunk = sorted((tmp_path / "store" / record.container).glob("*-00002"))[0]
        saved = chunk.read_bytes()
        chunk.unlink()
        with pytest.raises(CorruptBackupError, match="is missing from the object store"):
            await env.service.restore_backup(record.id, tmp_path / "out.img")
        chunk.write_bytes(saved)
        again = await env.service.restore_backup(record.id, tmp_path / "out.img")
    assert env.event_types[2:] == ["backup.create.end", "backup.restore.start", "backup.restore.error",
                                   "backup.restore.start", "backup.restoreprogress", "backup.restore.end"]
    assert again.status is BackupStatus.AVAILABLE and again.fail_reason is None
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()


async def test_restore_refuses_existing_target_without_overwrite(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:
        volume = env.volume(2 * CHUNK)
        record = await env.service.create_backup(volume)
        target = tmp_path / "existing.img"
        target.write_bytes(b"keep me")
        with pytest.raises(RestoreTargetError, match="already exists"):
            await env.service.restore_backup(record.id, target)
        assert target.read_bytes() == b"keep me"
        await env.service.restore_backup(record.id, target, overwrite=True)
    assert target.read_bytes() == volume.read_bytes()
    assert env.event_types[-5:] == ["backup.restore.start", "backup.restore.error",
                                    "backup.restore.start", "backup.restoreprogress", "backup.restore.end"]


@pytest.mark.parametrize("op", ["delete", "restore"])
async def test_operation_on_missing_backup_is_error_event(tmp_path: Path, op: str) -> None:
    async with backup_env(tmp_path) as env:
        with pytest.raises(BackupNotFoundError, match="not found"):
            if op == "delete":
                await env.service.delete_backup("no-such-id", ctx=CTX)
            else:
                await env.service.restore_backup("no-such-id", tmp_path / "out.img", ctx=CTX)
    assert env.event_types == [f"backup.{op}.error"]
    error = env.memory.messages[0]
    assert error.priority is Priority.ERROR
    payload = dict(error.payload)
    assert set(PAYLOAD_FIELDS) <= set(payload)
    assert payload["backup_id"] == "no-such-id" and payload["tenant_id"] == "proj-1"
    assert "not found" in payload["fail_reason"]


async def test_delete_twice_is_refused_without_changing_status(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:
        record = await env.service.create_backup(env.volume(CHUNK))
        await env.service.delete_backup(record.id)
        with pytest.raises(InvalidStatusTransitionError, match="is deleted: cannot become deleting"):
            await env.service.delete_backup(record.id)
        after = await env.service.show(record.id)
    assert env.event_types[-3:] == ["backup.delete.start", "backup.delete.end", "backup.delete.error"]
    assert check_payload(env.memory.messages[-1])["status"] == "deleted"
    assert after.status is BackupStatus.DELETED


async def test_cancelled_backup_ends_in_error_event_and_status(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "store", free=1)
    async with backup_env(tmp_path, store=store) as env:
        volume = env.volume(5 * CHUNK)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(env.service.create_backup, volume)
                await store.first_stored.wait()
                tg.cancel_scope.cancel()
        [record] = await env.service.list()
    assert env.event_types == ["backup.create.start", "backup.create.error"]
    assert record.status is BackupStatus.ERROR and record.fail_reason == "cancelled before completion"
    assert env.memory.messages[-1].payload["fail_reason"] == "cancelled before completion"


async def test_failing_transport_does_not_fail_the_backup(tmp_path: Path) -> None:
    async with backup_env(tmp_path, url="memory://?retry_max_attempts=1") as env:
        env.memory.fail_next(1000, permanent=True)
        volume = env.volume(5 * CHUNK)
        record = await env.service.create_backup(volume)
        await env.service.restore_backup(record.id, tmp_path / "out.img")
        deleted = await env.service.delete_backup(record.id)
    assert env.memory.messages == []
    stats = env.notifier.stats()["memory"]
    assert stats.dead_lettered == stats.enqueued >= 6
    assert deleted.status is BackupStatus.DELETED
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()


async def test_closed_or_raising_notifier_does_not_fail_the_backup(tmp_path: Path) -> None:
    class Broken:
        calls = 0

        async def notify(self, ctx: Any, event_type: str, payload: Any, *, priority: Any = None) -> Notification:
            Broken.calls += 1
            raise RuntimeError("notification bus on fire")

    async with backup_env(tmp_path) as env:
        env.service.notifier = Broken()
        record = await env.service.create_backup(env.volume(2 * CHUNK))
        await env.notifier.aclose()
        env.service.notifier = env.notifier  # closed: notify() raises NotifierClosedError
        deleted = await env.service.delete_backup(record.id)
    assert record.status is BackupStatus.AVAILABLE and deleted.status is BackupStatus.DELETED
    assert Broken.calls == 3  # start, progress 100, end
    assert env.service.notification_failures == 5


async def test_stalled_transport_does_not_stall_the_backup(tmp_path: Path) -> None:
    async with backup_env(tmp_path, url="memory://?queue_size=1&block_timeout=none", notify_timeout=0.05) as env:
        env.memory.stall()
        with anyio.fail_after(10):
            record = await env.service.create_backup(env.volume(3 * CHUNK))
        env.memory.resume()
    assert record.status is BackupStatus.AVAILABLE
    assert env.service.notification_failures >= 1


@pytest.mark.parametrize("damage", ["missing", "truncated", "wrong_size"])
async def test_damaged_metadata_is_restore_error(tmp_path: Path, damage: str) -> None:
    async with backup_env(tmp_path) as env:
        record = await env.service.create_backup(env.volume(3 * CHUNK))
        assert record.container is not None
        meta = tmp_path / "store" / record.container / f"{record.service_metadata}_metadata"
        if damage == "missing":
            meta.unlink()
        elif damage == "truncated":
            meta.write_bytes(meta.read_bytes()[:50])
        else:
            meta.write_text(meta.read_text().replace(f'"volume_size": {3 * CHUNK}', f'"volume_size": {2 * CHUNK}'))
        with pytest.raises(CorruptBackupError, match="metadata object") as caught:
            await env.service.restore_backup(record.id, tmp_path / "out.img")
        after = await env.service.show(record.id)
    assert {"missing": "is missing", "truncated": "is unreadable", "wrong_size": "metadata says"}[damage] in str(caught.value)
    assert env.event_types[-2:] == ["backup.restore.start", "backup.restore.error"]
    assert after.status is BackupStatus.ERROR_RESTORING and after.fail_reason == str(caught.value)
    assert not (tmp_path / "out.img").exists()


async def test_volume_that_shrinks_during_backup_is_create_error(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "store", free=1)
    async with backup_env(tmp_path, store=store) as env:
        volume = env.volume(40 * CHUNK)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                async def create() -> None:
                    with pytest.raises(VolumeError, match="did it shrink"):
                        await env.service.create_backup(volume)

                tg.start_soon(create)
                await store.first_stored.wait()
                # At most ~10 chunks are in flight (bounded streams), so the reader is far from byte 20*CHUNK.
                with volume.open("r+b") as fh:
                    fh.truncate(20 * CHUNK)
                store.gate.set()
        [record] = await env.service.list()
    assert env.event_types[0] == "backup.create.start" and env.event_types[-1] == "backup.create.error"
    assert record.status is BackupStatus.ERROR and f"ended at byte {20 * CHUNK}" in (record.fail_reason or "")


async def test_restore_of_a_failed_backup_is_refused(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:
        with pytest.raises(VolumeError):
            await env.service.create_backup(tmp_path / "missing.img")
        [record] = await env.service.list()
        with pytest.raises(InvalidStatusTransitionError, match="is error: cannot become restoring"):
            await env.service.restore_backup(record.id, tmp_path / "out.img")
    assert env.event_types == ["backup.create.start", "backup.create.error", "backup.restore.error"]
    assert env.memory.messages[-1].payload["status"] == "error"


async def test_prepared_notifier_sets_the_publisher(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:
        env.service.notifier = env.notifier.prepare(publisher_id="backup.other-host")
        await env.service.create_backup(env.volume(CHUNK))
    assert {n.publisher_id for n in env.memory.messages} == {"backup.other-host"}


async def test_recover_fails_operations_left_by_a_dead_process(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:
        done = await env.service.create_backup(env.volume(CHUNK))
        stuck = await env.catalog.add(replace(done, id="stuck-create", status=BackupStatus.CREATING))
        await env.catalog.add(replace(done, id="restoring", status=BackupStatus.AVAILABLE))
        await env.catalog.transition("restoring", BackupStatus.RESTORING)
        await env.catalog.add(replace(done, id="elsewhere", host="other-host", status=BackupStatus.CREATING))
        recovered = await env.service.recover_interrupted()
        statuses = {r.id: r.status for r in await env.service.list()}
    assert sorted((r.id, r.status) for r in recovered) == [("restoring", BackupStatus.ERROR_RESTORING),
                                                           (stuck.id, BackupStatus.ERROR)]
    assert all("interrupted" in (r.fail_reason or "") for r in recovered)
    assert statuses == {done.id: BackupStatus.AVAILABLE, "stuck-create": BackupStatus.ERROR,
                        "restoring": BackupStatus.ERROR_RESTORING, "elsewhere": BackupStatus.CREATING}
    assert sorted((n.event_type, n.payload["backup_id"]) for n in env.memory.messages[-2:]) == [
        ("backup.create.error", "stuck-create"), ("backup.restore.error", "restoring")]
