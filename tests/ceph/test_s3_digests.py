"""The S3 store hashes nothing itself: every PUT's SigV4 signature covers the body's sha256
(computed by obstore), and RGW refuses a body that does not match before storing it, as for
boto3's PUTs (issue 29, "one pass over every byte": the MD5 it computed for an ETag check
after the fact is gone)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup import BackupStatus
from notifykit.backup import _s3 as s3_module
from notifykit.backup.plugin import store_from_url

from ..backup.corrupting_proxy import CorruptingProxy
from ..backup.helpers import CHUNK
from .helpers import bucket_name, in_thread, s3_client, s3_env, s3_store

pytestmark = pytest.mark.asyncio


async def test_chunks_are_not_hashed_by_the_store(tmp_path: Path, ceph_aio: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[int] = []
    real = s3_module._md5

    def counting(data: bytes) -> str:
        hashed.append(len(data))
        return real(data)

    monkeypatch.setattr(s3_module, "_md5", counting)
    bucket = bucket_name("dg")
    store = s3_store(ceph_aio, bucket, create_bucket="true")
    assert s3_module.S3ObjectStore.object_digests == ()  # the driver computes nothing for the store
    async with s3_env(tmp_path, store, compression="zstd") as env:
        volume = env.volume(6 * CHUNK + 5)
        record = await env.service.create_backup(volume)
        hashed_by_store_on_put = list(hashed)
        key = f"{record.container}/{record.service_metadata}-00002"
        head = await in_thread(lambda: s3_client(ceph_aio).get_object(Bucket=bucket, Key=key))
        body = head["Body"].read()
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
    assert record.status is BackupStatus.AVAILABLE and restored.status is BackupStatus.AVAILABLE
    assert hashed_by_store_on_put == []
    assert len(hashed) == 7 + 2  # restore checks what it reads against the ETag: 7 chunks, block list, metadata
    assert head["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    assert (tmp_path / "restored.img").read_bytes() == volume.read_bytes()


async def test_a_body_damaged_in_transit_is_refused_by_rgw_and_sent_again(tmp_path: Path, ceph_aio: Any,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    bucket = bucket_name("dm")
    caplog.set_level(logging.WARNING, logger="backup.s3")
    async with CorruptingProxy(ceph_aio.info()["ports"]["rgw"], damage=2) as proxy:
        info = ceph_aio.info()
        url = f"s3+http://{info['access_key']}:{info['secret_key']}@127.0.0.1:{proxy.port}/{bucket}"
        store = store_from_url(url, {"create_bucket": "true", "retry_backoff": 0.01})
        assert isinstance(store, s3_module.S3ObjectStore)
        async with s3_env(tmp_path, store, compression="none") as env:
            volume = env.volume(4 * CHUNK)
            record = await env.service.create_backup(volume)
            restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
            stored = await in_thread(lambda: [s3_client(ceph_aio).get_object(
                Bucket=bucket, Key=f"{record.container}/{record.service_metadata}-{i:05d}")["Body"].read()
                for i in range(4)])
    assert len(proxy.damaged) == 2 and all(f"/{bucket}/" in line for line in proxy.damaged)
    assert proxy.puts == 1 + 4 + 2 + 2  # the bucket, 4 chunks, 2 of them again, the block list and metadata
    assert record.status is BackupStatus.AVAILABLE and restored.status is BackupStatus.AVAILABLE
    assert caplog.text.count("XAmzContentSHA256Mismatch") == 2
    assert b"".join(stored) == volume.read_bytes()  # RGW kept no damaged body
    assert (tmp_path / "restored.img").read_bytes() == volume.read_bytes()
