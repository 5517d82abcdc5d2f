"""The backup service on a real OpenStack Swift (tests/swift/conftest.py starts it on loopback)."""

from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from notifykit.backup import BackupStatus, CorruptBackupError, ObjectStoreError, ProgressPolicy
from notifykit.backup._swift import SwiftObjectStore, SwiftOptions

from ..backup.helpers import CHUNK, backup_env
from .helpers import SwiftAPI, swift_env

pytestmark = pytest.mark.asyncio

EVERY_OBJECT = ProgressPolicy(backup_object_number_per_notification=1, backup_enable_progress_timer=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_create_restore_delete_round_trip(tmp_path: Path, swift_aio: Any, swift_options: SwiftOptions) -> None:
    async with swift_env(tmp_path, swift_options, compression="zstd") as env, SwiftAPI(swift_aio) as api:
        volume = env.volume(10 * CHUNK + 123)
        record = await env.service.create_backup(volume, name="nightly")
        assert record.container is not None and record.service_metadata is not None
        names = await api.listing(record.container)
        chunk = await api.call("GET", f"{record.container}/{record.service_metadata}-00003")
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
        identical = sha256(tmp_path / "restored.img") == sha256(volume)
        deleted = await env.service.delete_backup(record.id)
        after_delete = await api.listing(record.container)
    assert record.status is BackupStatus.AVAILABLE and record.service == "backup.drivers.swift"
    assert record.container == f"backup_{record.id}" and record.object_count == 11
    assert names == sorted([f"{record.service_metadata}-{i:05d}" for i in range(11)]
                           + [f"{record.service_metadata}_metadata", f"{record.service_metadata}_sha256file"])
    # each chunk carries its MD5 as ETag (Swift checked it on PUT)
    assert chunk.headers["ETag"].strip('"') == hashlib.md5(chunk.content).hexdigest()
    assert identical and restored.status is BackupStatus.AVAILABLE
    assert deleted.status is BackupStatus.DELETED
    assert after_delete is None  # objects and container gone
    assert env.event_types[-2:] == ["backup.delete.start", "backup.delete.end"]


async def test_shared_container_keeps_each_backup_under_its_prefix(tmp_path: Path, swift_aio: Any,
                                                                   swift_options: SwiftOptions) -> None:
    options = SwiftOptions.from_url(swift_aio.info()["store_url"], {"container": "backups-shared"})
    async with swift_env(tmp_path, options) as env, SwiftAPI(swift_aio) as api:
        first = await env.service.create_backup(env.volume(3 * CHUNK, "a.img", seed=1))
        second = await env.service.create_backup(env.volume(2 * CHUNK, "b.img", seed=2))
        both = await api.listing("backups-shared")
        await env.service.restore_backup(first.id, tmp_path / "a.restored")
        await env.service.delete_backup(first.id)
        left = await api.listing("backups-shared")
    assert both is not None and len(both) == (3 + 2) + (2 + 2)  # chunks, block list, metadata
    assert all(n.startswith((f"backup_{first.id}/", f"backup_{second.id}/")) for n in both)
    assert (tmp_path / "a.restored").read_bytes() == (tmp_path / "a.img").read_bytes()
    assert left is not None and len(left) == 4 and all(n.startswith(f"backup_{second.id}/") for n in left)


async def test_progress_is_throttled_by_object_count_exactly_as_on_posix(tmp_path: Path,
                                                                         swift_options: SwiftOptions) -> None:
    policy = ProgressPolicy(backup_object_number_per_notification=3, backup_enable_progress_timer=False)

    async def progress(env_cm: Any) -> list[tuple[str, int | None]]:
        async with env_cm as env:
            volume = env.volume(10 * CHUNK + 5)
            record = await env.service.create_backup(volume)
            await env.service.restore_backup(record.id, env.root / "restored.img")
        return [(n.event_type, n.payload.get("objects_done")) for n in env.memory.messages]

    (tmp_path / "posix").mkdir()
    (tmp_path / "swift").mkdir()
    on_posix = await progress(backup_env(tmp_path / "posix", policy=policy))
    on_swift = await progress(swift_env(tmp_path / "swift", swift_options, policy=policy))
    assert on_swift == on_posix
    assert [d for e, d in on_swift if e == "backup.createprogress"] == [3, 6, 9, 11]


async def test_chunk_deleted_behind_the_service_fails_restore_naming_it(tmp_path: Path, swift_aio: Any,
                                                                        swift_options: SwiftOptions) -> None:
    async with swift_env(tmp_path, swift_options) as env, SwiftAPI(swift_aio) as api:
        record = await env.service.create_backup(env.volume(5 * CHUNK))
        victim = f"{record.service_metadata}-00002"
        assert (await api.call("DELETE", f"{record.container}/{victim}")).status_code == 204
        with pytest.raises(CorruptBackupError, match=victim):
            await env.service.restore_backup(record.id, tmp_path / "restored.img")
        after = await env.service.show(record.id)
    error = env.memory.messages[-1]
    assert error.event_type == "backup.restore.error"
    assert victim in error.payload["fail_reason"] and "missing" in error.payload["fail_reason"]
    assert after.status is BackupStatus.ERROR_RESTORING
    assert not (tmp_path / "restored.img").exists()


async def test_swift_stopped_mid_backup_ends_in_create_error(tmp_path: Path, swift_aio: Any,
                                                             swift_options: SwiftOptions) -> None:
    killed_at: list[int] = []

    def kill_proxy_at_object_3(done: int, total: int) -> None:
        if done >= 3 * CHUNK and not killed_at:
            killed_at.append(done)
            swift_aio.kill("proxy")

    async with swift_env(tmp_path, swift_options, policy=EVERY_OBJECT) as env, SwiftAPI(swift_aio) as api:
        try:
            with anyio.fail_after(30), pytest.raises(ObjectStoreError, match="gave up after 3 attempt"):
                await env.service.create_backup(env.volume(40 * CHUNK), on_progress=kill_proxy_at_object_3)
        finally:
            await anyio.to_thread.run_sync(swift_aio.restart, "proxy")
        records = await env.service.list()
        names = await api.listing(f"backup_{records[0].id}")  # Swift is back: what was left?
        await env.service.delete_backup(records[0].id)  # a failed backup can be cleaned up
        after_delete = await api.listing(f"backup_{records[0].id}")
    assert killed_at
    assert [r.status for r in records] == [BackupStatus.ERROR]
    record = records[0]
    assert record.fail_reason is not None and "swift: cannot" in record.fail_reason
    events = env.event_types
    assert events[0] == "backup.create.start" and "backup.create.end" not in events
    error = next(n.payload for n in env.memory.messages if n.event_type == "backup.create.error")
    assert error["status"] == "error" and error["fail_reason"] == record.fail_reason
    assert names is not None and len(names) < 40 and not any(n.endswith("_metadata") for n in names)
    assert after_delete is None


async def test_container_quota_413_is_a_clear_permanent_error(tmp_path: Path, swift_aio: Any,
                                                              swift_options: SwiftOptions) -> None:
    async with SwiftAPI(swift_aio) as api:
        # smaller than one chunk, so the proxy refuses the first PUT whatever its cached usage says
        created = await api.call("PUT", "quota-limited", headers={"X-Container-Meta-Quota-Bytes": str(CHUNK // 2)})
        assert created.status_code in (201, 202)
    options = SwiftOptions.from_url(swift_aio.info()["store_url"], {"container": "quota-limited"})
    async with swift_env(tmp_path, options, uploads=1) as env:
        with pytest.raises(ObjectStoreError, match="413"):
            await env.service.create_backup(env.volume(4 * CHUNK, seed=9))  # random half: incompressible
        record = (await env.service.list())[0]
    assert record.status is BackupStatus.ERROR
    assert record.fail_reason is not None and "413 Request Entity Too Large" in record.fail_reason
    assert env.memory.messages[-1].event_type == "backup.create.error"
    assert env.memory.messages[-1].payload["fail_reason"] == record.fail_reason


async def test_wrong_key_fails_with_a_reason_that_does_not_leak_it(tmp_path: Path, swift_aio: Any,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    secret = "not-the-key-s3cr3t"
    options = SwiftOptions.from_url(swift_aio.info()["store_url"], {"key": secret, "retry_backoff": 0.01})
    caplog.set_level(logging.DEBUG)
    async with swift_env(tmp_path, options) as env:
        with pytest.raises(ObjectStoreError, match="authentication") as raised:
            await env.service.create_backup(env.volume(CHUNK))
        record = (await env.service.list())[0]
        store_repr = repr(env.store)
    assert record.status is BackupStatus.ERROR and record.fail_reason is not None
    assert "test:tester" in record.fail_reason and "401" in record.fail_reason
    for text in (record.fail_reason, str(raised.value), store_repr, repr(options), caplog.text,
                 str(env.memory.messages[-1].payload)):
        assert secret not in text


async def test_token_revoked_midway_is_renewed(tmp_path: Path, swift_aio: Any, swift_options: SwiftOptions) -> None:
    store = SwiftObjectStore(swift_options)
    try:
        await store.create_container("backup_reauth")
        await store.put_object("backup_reauth", "one", b"1")
        session = store._session
        assert session is not None
        async with SwiftAPI(swift_aio) as api:  # TempAuth forgets tokens kept in memcached: flush it
            port = swift_aio.info()["ports"]["memcached"]
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"flush_all\r\n")
                assert conn.recv(100).startswith(b"OK")
            stale = await api.call("GET", "backup_reauth", headers={"X-Auth-Token": session.token})
        await store.put_object("backup_reauth", "two", b"22")
        names = await store.list_objects("backup_reauth")
        assert store._session is not None and store._session.token != session.token
        for name in names:
            await store.delete_object("backup_reauth", name)
        await store.delete_object("backup_reauth", "two")  # already gone: fine
        await store.delete_container("backup_reauth")
    finally:
        await store.aclose()
    assert stale.status_code == 401
    assert names == ["one", "two"]


async def test_object_server_down_gives_up_with_the_5xx_in_fail_reason(tmp_path: Path, swift_aio: Any) -> None:
    options = SwiftOptions.from_url(swift_aio.info()["store_url"], {"retry_attempts": 2, "retry_backoff": 0.01})
    swift_aio.kill("object")
    try:
        async with swift_env(tmp_path, options) as env:
            with pytest.raises(ObjectStoreError, match="gave up after 2 attempt"):
                await env.service.create_backup(env.volume(2 * CHUNK))
            record = (await env.service.list())[0]
    finally:
        await anyio.to_thread.run_sync(swift_aio.restart, "object")
    assert record.status is BackupStatus.ERROR
    assert record.fail_reason is not None and "503 Service Unavailable" in record.fail_reason


async def test_object_server_outage_is_retried_until_it_returns(tmp_path: Path, swift_aio: Any,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    options = SwiftOptions.from_url(swift_aio.info()["store_url"], {"retry_attempts": 30, "retry_backoff": 0.1})
    caplog.set_level(logging.WARNING, logger="backup.swift")
    swift_aio.kill("object")
    try:
        async with swift_env(tmp_path, options) as env:
            volume = env.volume(6 * CHUNK)
            records = []
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    async def create() -> None:
                        records.append(await env.service.create_backup(volume))

                    tg.start_soon(create)
                    while not any("attempt 3 of 30" in r.getMessage() for r in caplog.records):
                        await anyio.sleep(0.01)
                    await anyio.to_thread.run_sync(swift_aio.restart, "object")
            await env.service.restore_backup(records[0].id, tmp_path / "restored.img")
    finally:
        if swift_aio.procs["object"].poll() is not None:
            await anyio.to_thread.run_sync(swift_aio.restart, "object")
    assert records[0].status is BackupStatus.AVAILABLE
    assert sha256(tmp_path / "restored.img") == sha256(volume)
    assert any("503" in r.getMessage() for r in caplog.records)
