"""The backup service on Ceph through RGW's S3 API with the S3 store (tests/ceph/conftest.py
starts Ceph once per session, on loopback)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from notifykit.backup import BackupStatus, ObjectStoreError, ProgressPolicy
from notifykit.backup.cli import main

from ..backup.helpers import CHUNK, write_volume
from .helpers import bucket_name, in_thread, keys, s3_client, s3_env, s3_store

EVERY_OBJECT = ProgressPolicy(backup_object_number_per_notification=1, backup_enable_progress_timer=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.asyncio
async def test_round_trip_with_progress_restore_and_delete(tmp_path: Path, ceph_aio: Any) -> None:
    bucket = bucket_name("rt")
    store = s3_store(ceph_aio, bucket, create_bucket="true", prefix="cinder")
    async with s3_env(tmp_path, store, compression="zstd", policy=EVERY_OBJECT) as env:
        volume = env.volume(40 * CHUNK + 17)  # 41 chunks, block list, metadata: more than one listing page (25)
        record = await env.service.create_backup(volume, name="nightly")
        assert record.container is not None and record.service_metadata is not None
        prefix = f"cinder/{record.container}/"
        stored = await in_thread(keys, ceph_aio, bucket, prefix)
        head = await in_thread(lambda: s3_client(ceph_aio).get_object(
            Bucket=bucket, Key=f"{prefix}{record.service_metadata}-00003"))
        body = head["Body"].read()
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
        deleted = await env.service.delete_backup(record.id)
        after = await in_thread(keys, ceph_aio, bucket, "cinder/")
    assert record.status is BackupStatus.AVAILABLE and record.service == "backup.drivers.s3"
    assert record.object_count == 41
    assert stored == [f"{prefix}{record.service_metadata}-{i:05d}" for i in range(41)] + [
        f"{prefix}{record.service_metadata}_metadata", f"{prefix}{record.service_metadata}_sha256file"]
    # each chunk: its MD5 is the ETag RGW computed (and the store checked against what it sent)
    assert head["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    progress = [n.payload for n in env.memory.messages if n.event_type == "backup.createprogress"]
    assert len(progress) == 41 and progress[-1]["percentage"] == 100.0
    assert [p["objects_done"] for p in progress] == list(range(1, 42))
    assert sha256(tmp_path / "restored.img") == sha256(volume) and restored.status is BackupStatus.AVAILABLE
    assert deleted.status is BackupStatus.DELETED and after == []
    assert env.event_types[-2:] == ["backup.delete.start", "backup.delete.end"]


def test_cli_create_restore_delete_with_an_s3_http_store_url(tmp_path: Path, ceph_aio: Any,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's reproduction, now working: --store s3+http://KEY:SECRET@127.0.0.1:PORT/bucket."""
    bucket = bucket_name("cli")
    s3_client(ceph_aio).create_bucket(Bucket=bucket)
    volume = write_volume(tmp_path / "vol.img", 70_000)
    log = tmp_path / "notifications.jsonl"
    common = ["--store", f"{ceph_aio.info()['s3_url']}/{bucket}", "--catalog", str(tmp_path / "catalog.sqlite3"),
              "--chunk-size", "16KiB", "--notifier", f"log://{log}", "--host", "cli-host"]
    assert main(["create", str(volume), *common]) == 0
    backup_id = capsys.readouterr().out.strip()
    assert main(["show", backup_id, "--json", *common]) == 0
    shown = json.loads(capsys.readouterr().out)
    stored = keys(ceph_aio, bucket)
    assert main(["restore", backup_id, str(tmp_path / "out.img"), *common]) == 0
    assert main(["delete", backup_id, *common]) == 0
    out, err = capsys.readouterr()
    assert shown["status"] == "available" and shown["service"] == "backup.drivers.s3"
    assert len(stored) == 7 and all(k.startswith(f"backup_{backup_id}/") for k in stored)
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()
    assert keys(ceph_aio, bucket) == []
    secret = ceph_aio.info()["secret_key"]
    assert secret not in log.read_text() and secret not in out + err
    assert not any("s3+http:" in p.name for p in Path.cwd().iterdir())


@pytest.mark.asyncio
async def test_missing_bucket_is_a_clear_permanent_error(tmp_path: Path, ceph_aio: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backup.s3")
    store = s3_store(ceph_aio, bucket_name("missing"))
    async with s3_env(tmp_path, store) as env:
        with pytest.raises(ObjectStoreError, match="does not exist"):
            await env.service.create_backup(env.volume(2 * CHUNK))
        record = (await env.service.list())[0]
    assert record.status is BackupStatus.ERROR and record.fail_reason is not None
    assert "does not exist" in record.fail_reason and "create_bucket=true" in record.fail_reason
    assert not [r for r in caplog.records if "attempt" in r.getMessage()]  # not retried


@pytest.mark.asyncio
async def test_wrong_keys_fail_with_a_reason_that_does_not_leak_them(tmp_path: Path, ceph_aio: Any,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bucket = bucket_name("keys")
    s3_client(ceph_aio).create_bucket(Bucket=bucket)
    wrong = "not-the-secret-key-4711"
    store = s3_store(ceph_aio, bucket, secret_key=wrong)
    async with s3_env(tmp_path, store) as env:
        with pytest.raises(ObjectStoreError, match="access denied"):
            await env.service.create_backup(env.volume(2 * CHUNK))
        record = (await env.service.list())[0]
    assert record.status is BackupStatus.ERROR and record.fail_reason is not None
    assert "403" in record.fail_reason and "SignatureDoesNotMatch" in record.fail_reason
    texts = [record.fail_reason, repr(store), repr(store.options), *(r.getMessage() for r in caplog.records),
             *(json.dumps(n.payload) for n in env.memory.messages)]
    assert not [t for t in texts if wrong in t or ceph_aio.info()["secret_key"] in t]


@pytest.mark.asyncio
async def test_rgw_outage_mid_backup_is_retried_until_it_returns(tmp_path: Path, ceph_aio: Any,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backup.s3")
    bucket = bucket_name("outage")
    store = s3_store(ceph_aio, bucket, create_bucket="true", retry_attempts="40", retry_backoff="0.1", timeout="10")
    stopped: list[int] = []

    def stop_rgw_at_object_3(done: int, total: int) -> None:
        if done >= 3 * CHUNK and not stopped:
            stopped.append(done)
            ceph_aio.stop_rgw(kill=True)

    try:
        async with s3_env(tmp_path, store) as env:
            volume = env.volume(12 * CHUNK)
            records = []
            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    async def create() -> None:
                        records.append(await env.service.create_backup(volume, on_progress=stop_rgw_at_object_3))

                    tg.start_soon(create)
                    while not any("attempt 3 of 40" in r.getMessage() for r in caplog.records):
                        await anyio.sleep(0.01)
                    await in_thread(ceph_aio.start_rgw)
            await env.service.restore_backup(records[0].id, tmp_path / "restored.img")
    finally:
        if not ceph_aio.rgw_running():
            await in_thread(ceph_aio.start_rgw)
    assert stopped and records[0].status is BackupStatus.AVAILABLE
    assert sha256(tmp_path / "restored.img") == sha256(volume)
    assert any("connection failed" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
@pytest.mark.slow
async def test_rgw_down_gives_up_with_the_reason_in_fail_reason(tmp_path: Path, ceph_aio: Any) -> None:
    bucket = bucket_name("down")
    s3_client(ceph_aio).create_bucket(Bucket=bucket)
    store = s3_store(ceph_aio, bucket, retry_attempts="2", retry_backoff="0.01")
    ceph_aio.stop_rgw(kill=True)
    try:
        async with s3_env(tmp_path, store) as env:
            with pytest.raises(ObjectStoreError, match=r"gave up after 2 attempt\(s\)"):
                await env.service.create_backup(env.volume(2 * CHUNK))
            record = (await env.service.list())[0]
    finally:
        await in_thread(ceph_aio.start_rgw)
    assert record.status is BackupStatus.ERROR and record.fail_reason is not None
    assert record.fail_reason.startswith("s3: cannot store object") and "connection failed" in record.fail_reason
